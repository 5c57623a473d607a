"""Remote engines on loopback: real `rwkv-rag serve --role engine` workers, a gateway whose
models are `engine: remote` over them, and a small OpenAI-shaped server that is not this
project."""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.chat.conftest import chat_models
from tests.conftest import MINILM, RunningServer, asgi_client, start_server, stop_server

ENGINE_ROLE = ("--role", "engine")


def worker_models(tiny: Path) -> list[dict[str, Any]]:
    return [
        *chat_models(tiny),
        MINILM,
        {
            "id": "tiny-reranker",
            "kind": "rerank",
            "engine": "flag-reranker",
            "path": str(tiny / "tiny-bert-reranker"),
        },
    ]


def start_workers(
    config: dict[str, Any], tmp: Path, n: int, ports: list[int] | None = None
) -> list[RunningServer]:
    """``n`` engine workers started side by side."""
    dirs = [tmp / f"worker-{i}" for i in range(n)]
    for d in dirs:
        d.mkdir(exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = [
            pool.submit(
                start_server,
                {"load_in_background": False, "torch_threads": 1, **config},
                d,
                args=ENGINE_ROLE,
                port=ports[i] if ports else None,
            )
            for i, d in enumerate(dirs)
        ]
        return [f.result() for f in futures]


def remote_models(
    ids_kinds: list[tuple[str, str]], urls: list[str], **options: Any
) -> list[dict[str, Any]]:
    fast = {"health_interval_s": 0.5, "eject_base_s": 1.0, "eject_max_s": 4.0, **options}
    return [
        {"id": i, "kind": k, "engine": "remote", "options": {"upstreams": urls, **fast}}
        for i, k in ids_kinds
    ]


WORKER_MODELS = [
    ("rwkv6-tiny", "chat"),
    ("rwkv7-tiny", "chat"),
    ("minilm", "embedding"),
    ("tiny-reranker", "rerank"),
]


@pytest.fixture(scope="session")
def workers(
    tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path
) -> Iterator[list[RunningServer]]:
    started = start_workers(
        {"models": worker_models(tiny_dir)}, tmp_path_factory.mktemp("workers"), 2
    )
    yield started
    for w in started:
        stop_server(w)


def urls(servers: list[RunningServer]) -> list[str]:
    return [f"{s.base_url}/v1" for s in servers]


def remote_settings(servers: list[RunningServer], tmp: Path, **extra: Any) -> Settings:
    return Settings(
        models=remote_models(WORKER_MODELS, urls(servers)),
        load_in_background=False,
        log_json=False,
        data_dir=tmp,
        **extra,
    )


@pytest.fixture
async def remote_http(
    workers: list[RunningServer], tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway, in process, with every model remote over the two workers."""
    async with asgi_client(create_app(remote_settings(workers, tmp_path / "gw"))) as c:
        yield c


def sdk_over(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="x", base_url="http://testserver.local/v1", http_client=http)


def metric(text: str, name: str) -> float:
    """A sample's value in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.split(" ", 1)[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
