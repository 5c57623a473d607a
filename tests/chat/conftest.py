from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from engines.registry import EngineRegistry
from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import RunningServer, asgi_client, start_server, stop_server


def chat_models(tiny: Path, **options: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": "rwkv6-tiny",
            "kind": "chat",
            "engine": "rwkv",
            "path": str(tiny / "rwkv6-tiny-random.pth"),
            "options": {"states": {"tuned": str(tiny / "rwkv-tiny-random-state.pth")}, **options},
        },
        {
            "id": "rwkv7-tiny",
            "kind": "chat",
            "engine": "rwkv",
            "path": str(tiny / "rwkv7-tiny-random.pth"),
            "options": {"states": {"tuned": str(tiny / "rwkv-tiny-random-state.pth")}, **options},
        },
    ]


@pytest.fixture(scope="session")
def chat_settings(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        models=chat_models(tiny_dir),
        load_in_background=False,
        log_json=False,
        data_dir=tmp_path_factory.mktemp("chat-data"),
    )


@pytest.fixture(scope="session")
def chat_registry(chat_settings: Settings) -> Iterator[EngineRegistry]:
    registry = EngineRegistry(chat_settings.registry_config())
    yield registry
    for m in registry.models.values():
        if m.engine is not None:
            m.engine.close()


@pytest.fixture
async def http(
    chat_settings: Settings, chat_registry: EngineRegistry
) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(chat_settings, engines=chat_registry)) as c:
        yield c


@pytest.fixture
def sdk(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="x", base_url="http://testserver.local/v1", http_client=http)


@pytest.fixture(scope="session")
def chat_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("chat-server")
    server = start_server(
        {
            "models": chat_models(tiny_dir),
            "chat": {"max_tokens_limit": 20000},
            "load_in_background": False,
            "torch_threads": 1,
        },
        tmp,
    )
    yield server
    stop_server(server)
