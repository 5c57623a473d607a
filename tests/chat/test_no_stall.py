"""No request stalls another: schemas whose shortest valid output is enormous (a string
of fifty million characters, a 3000 x 3000 array) are refused from arithmetic alone,
through every surface that takes a schema, while another key's stream keeps flowing and
/v1/models answers."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chat.conftest import chat_models
from tests.conftest import RunningServer, start_server, stop_server

ALICE, BOB = "sk-alice-0000000000", "sk-bob-00000000000000"
HUGE_STRING = {"type": "string", "minLength": 50_000_000}
HUGER_STRING = {"type": "string", "minLength": 100_000_000}
GRID = {"type": "array", "minItems": 3000, "items": {"type": "array", "minItems": 3000}}
HUGE_ARGS = {"type": "object", "properties": {"q": HUGE_STRING}, "required": ["q"]}


def _format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def _chat_tool(choice: str) -> dict[str, Any]:
    tool = {"type": "function", "function": {"name": "find", "parameters": HUGE_ARGS}}
    return {"tools": [tool], "tool_choice": choice}


MESSAGES = [{"role": "user", "content": "Go."}]
STALLERS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"messages": MESSAGES, "response_format": _format(HUGE_STRING)}),
    ("/v1/chat/completions", {"messages": MESSAGES, "response_format": _format(HUGER_STRING)}),
    ("/v1/chat/completions", {"messages": MESSAGES, "response_format": _format(GRID)}),
    ("/v1/chat/completions", {"messages": MESSAGES, **_chat_tool("auto")}),
    ("/v1/chat/completions", {"messages": MESSAGES, **_chat_tool("required")}),
    (
        "/v1/responses",
        {"input": "Go.", "text": {"format": {"type": "json_schema", "name": "x", "schema": GRID}}},
    ),
    (
        "/v1/responses",
        {
            "input": "Go.",
            "tools": [{"type": "function", "name": "find", "parameters": HUGE_ARGS}],
            "tool_choice": "required",
        },
    ),
]


@pytest.fixture(scope="module")
def server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real server process: its own event loop, streams that arrive as they are sent."""
    config = {"models": chat_models(tiny_dir), "api_keys": [ALICE, BOB], "log_json": False}
    running = start_server(config, tmp_path_factory.mktemp("no-stall"))
    yield running
    stop_server(running)


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        yield client


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_stall_schemas_are_fast_400s_while_another_stream_flows(
    http: httpx.AsyncClient,
) -> None:
    stamps: list[float] = []
    done = asyncio.Event()

    async def bobs_stream() -> None:
        body = {
            "model": "rwkv7-tiny",
            "prompt": "Once upon a time",
            "max_tokens": 4000,
            "stream": True,
            "seed": 1,
        }
        while not done.is_set():  # one stream after another, for as long as Alice sends
            async with http.stream("POST", "/v1/completions", json=body, headers=_auth(BOB)) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        stamps.append(time.monotonic())
                    if done.is_set():
                        return

    reader = asyncio.create_task(bobs_stream())
    deadline = time.monotonic() + 60
    while len(stamps) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(stamps) >= 5, "the other key's stream never started"
    begin = time.monotonic()
    for path, body in STALLERS:
        started = time.monotonic()
        r = await http.post(path, json={"model": "rwkv7-tiny", **body}, headers=_auth(ALICE))
        took = time.monotonic() - started
        if body.get("tool_choice") == "auto":
            # Under auto a call that cannot fit is never offered: the answer is text.
            assert r.status_code == 400 or r.json()["choices"][0]["message"]["tool_calls"] is None
        else:
            assert r.status_code == 400, (path, r.text)
            assert r.json()["error"]["code"] in ("schema_too_large", "max_tokens_too_small")
        assert took < 1.0, (path, took)
        started = time.monotonic()
        models = await http.get("/v1/models", headers=_auth(BOB))
        assert models.status_code == 200
        assert time.monotonic() - started < 0.25
    # Watch the stream a little past the last request, so the window holds events.
    end = max(time.monotonic(), begin + 1.0)
    while time.monotonic() < end:
        await asyncio.sleep(0.01)
    done.set()
    await reader
    window = [t for t in stamps if begin <= t <= end]
    gaps = [b - a for a, b in itertools.pairwise(window)]
    assert len(window) >= 2, "the other key's stream stopped"
    assert max(gaps) < 0.25, max(gaps)


async def test_a_schema_that_fits_the_cap_but_not_max_tokens_names_max_tokens(
    http: httpx.AsyncClient,
) -> None:
    schema = {"type": "string", "minLength": 2000}
    r = await http.post(
        "/v1/chat/completions",
        json={
            "model": "rwkv7-tiny",
            "messages": MESSAGES,
            "response_format": _format(schema),
            "max_tokens": 4,
        },
        headers=_auth(ALICE),
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "max_tokens" and err["code"] == "max_tokens_too_small"
    # The same schema with room enough is served, and its output is valid.
    r = await http.post(
        "/v1/chat/completions",
        json={
            "model": "rwkv7-tiny",
            "messages": MESSAGES,
            "response_format": _format(schema),
            "max_tokens": 400,
        },
        headers=_auth(ALICE),
    )
    assert r.status_code == 200, r.text
    text = json.loads(r.json()["choices"][0]["message"]["content"])
    assert isinstance(text, str) and len(text) >= 2000
