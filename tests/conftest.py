"""Shared fixtures: settings builders, in-process clients, tiny checkpoints, a real server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

FAKE_MODELS: list[dict[str, Any]] = [
    {"id": "fake-embed", "kind": "embedding", "engine": "fake", "options": {"dimensions": 64}},
    {"id": "fake-rerank", "kind": "rerank", "engine": "fake"},
]


def fake_settings(**overrides: Any) -> Settings:
    models = overrides.get("models", FAKE_MODELS)
    base: dict[str, Any] = {
        "models": FAKE_MODELS,
        "aliases": (
            {"text-embedding-3-small": "fake-embed"}
            if any(m["id"] == "fake-embed" for m in models)
            else {}
        ),
        "load_in_background": False,
        "log_json": False,
        "data_dir": tempfile.mkdtemp(prefix="rwkv-rag-test-"),
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="session", autouse=True)
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Apps built without an explicit data_dir keep their KB in a temporary directory."""
    old = os.environ.get("RWKV_RAG_DATA_DIR")
    os.environ["RWKV_RAG_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    yield
    if old is None:
        os.environ.pop("RWKV_RAG_DATA_DIR", None)
    else:
        os.environ["RWKV_RAG_DATA_DIR"] = old


@contextlib.asynccontextmanager
async def asgi_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """httpx over ASGITransport with the app's lifespan running: truly concurrent requests.

    The lifespan runs in its own task, so this works from fixtures whose setup and
    teardown happen in different tasks.
    """
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def run_lifespan() -> None:
        try:
            async with app.lifespan():
                started.set_result(None)
                await done.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    task = asyncio.create_task(run_lifespan())
    await started
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as c:
            yield c
    finally:
        done.set()
        await task


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(fake_settings())) as c:
        yield c


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engines.tiny import make_tiny_models

    out = tmp_path_factory.mktemp("tiny")
    make_tiny_models(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    def __init__(self, proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
        self.proc = proc
        self.base_url = base_url
        self.log = log


def start_server(config: dict[str, Any], tmp: Path, timeout: float = 120.0) -> RunningServer:
    """Start `rwkv-rag serve` as a real subprocess and wait (bounded) until /health is 200."""
    port = free_port()
    cfg = tmp / "config.yaml"
    # Its own data directory unless the config names one (never the checkout's default).
    config = {"data_dir": str(tmp / "data"), **config}
    cfg.write_text(yaml.safe_dump({**config, "port": port, "host": "127.0.0.1"}))
    log = tmp / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RWKV_RAG_CONFIG", None)
    env.pop("RWKV_RAG_DATA_DIR", None)
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {config['api_keys'][0]}"} if config.get("api_keys") else {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2, headers=headers).status_code == 200:
                return RunningServer(proc, base, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server not healthy in {timeout}s:\n{log.read_text()[-4000:]}")


def stop_server(server: RunningServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("fake-server")
    server = start_server(
        {"models": FAKE_MODELS, "aliases": {"text-embedding-3-small": "fake-embed"}}, tmp
    )
    yield server
    stop_server(server)


async def startup_error(app: Litestar) -> str:
    """Enter and leave the app's lifespan; the text of the error startup raised."""
    try:
        async with app.lifespan():
            pass
    except BaseException as exc:  # noqa: BLE001 - Litestar may wrap it in an ExceptionGroup
        parts = [exc, *getattr(exc, "exceptions", [])]
        return " | ".join(f"{type(e).__name__}: {e}" for e in parts)
    raise AssertionError("startup did not fail")
