"""Parameters the engine cannot honour are a 400 naming the parameter; nothing is ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.chat.conftest import chat_models

HELLO = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("extra", "status", "param", "code"),
    [
        ({"tools": [{"type": "retrieval"}]}, 400, "tools[0].type", None),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
            400,
            "tools[0].function.name",
            None,
        ),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            400,
            "tool_choice",
            None,
        ),
        ({"tool_choice": "required"}, 400, "tool_choice", None),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "often"},
            400,
            "tool_choice",
            None,
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {
                                "type": "object",
                                "properties": {"a": {"type": "string", "pattern": "^x+$"}},
                            },
                        },
                    }
                ]
            },
            400,
            "tools[0].function.parameters",
            "unsupported_schema",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]},
            400,
            "tools[0].function.parameters",
            "unsupported_schema",
        ),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f"}},
                    {"type": "function", "function": {"name": "f"}},
                ]
            },
            400,
            "tools",
            None,
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "object", "patternProperties": {"^a": {}}},
                    },
                }
            },
            400,
            "response_format.json_schema.schema",
            "unsupported_schema",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}},
                    },
                }
            },
            400,
            "response_format.json_schema.schema",
            "unsupported_schema",
        ),
        ({"response_format": {"type": "yaml"}}, 400, "response_format.type", None),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            400,
            "messages[0].tool_call_id",
            None,
        ),
        (
            {"messages": [{"role": "tool", "content": "x", "tool_call_id": "call_nope"}]},
            400,
            "messages[0].tool_call_id",
            None,
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{"id": "c1", "function": {}}]},
                ]
            },
            400,
            "messages[0].tool_calls[0]",
            None,
        ),
        (
            {"messages": [{"role": "function", "name": "f", "content": "1"}]},
            400,
            "messages[0].role",
            None,
        ),
        ({"reasoning_effort": "extreme"}, 400, "reasoning_effort", None),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                    }
                ]
            },
            400,
            "messages[0].content",
            "unsupported_content",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
                        ],
                    }
                ]
            },
            400,
            "messages[0].content",
            "unsupported_content",
        ),
        ({"messages": []}, 400, "messages", None),
        ({"n": 0}, 400, "n", None),
        ({"n": 99}, 400, "n", None),
        ({"temperature": 3}, 400, "temperature", None),
        ({"top_p": 0}, 400, "top_p", None),
        ({"max_tokens": 0}, 400, "max_tokens", None),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
        ({"logit_bias": {"42": 5}}, 400, "logit_bias", "unsupported_parameter"),
        ({"top_logprobs": 3}, 400, "top_logprobs", None),
        ({"state": "missing"}, 400, "state", "state_not_found"),
        ({"model": "nope"}, 404, "model", "model_not_found"),
        ({"messages": "hello"}, 400, "messages", None),
        ({"knowledge": {"vector_store_ids": ["vs_1"]}}, 404, "knowledge.vector_store_ids", None),
        ({"knowledge": {"top_k": 3}}, 400, "knowledge.vector_store_ids", None),
        ({"knowledge": {"vector_store_ids": ["vs_1"], "colour": 1}}, 400, "knowledge", None),
        ({"knowledge": {"vector_store_ids": ["vs_1"], "top_k": 99}}, 400, "knowledge.top_k", None),
        (
            {"knowledge": {"vector_store_ids": ["vs_1"], "score_threshold": 5}},
            400,
            "knowledge.score_threshold",
            None,
        ),
        (
            {"knowledge": {"vector_store_ids": ["vs_1"], "max_context_tokens": 0}},
            400,
            "knowledge.max_context_tokens",
            None,
        ),
        (
            {"knowledge": {"vector_store_ids": ["vs_1"], "no_answer": "shrug"}},
            400,
            "knowledge.no_answer",
            None,
        ),
        ({"knowledge": "stores"}, 400, "knowledge", None),
        ({"functions": [{"name": "f"}]}, 400, "functions", "unsupported_parameter"),
        ({"modalities": ["text", "audio"]}, 400, "modalities", "unsupported_parameter"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, 400, "audio", "unsupported_parameter"),
        (
            {"prediction": {"type": "content", "content": "x"}},
            400,
            "prediction",
            "unsupported_parameter",
        ),
        ({"logprobs": True, "top_logprobs": 21}, 400, "top_logprobs", None),
        ({"top_k": -1}, 400, "top_k", None),
        ({"presence_penalty": 3}, 400, "presence_penalty", None),
        ({"frequency_penalty": -3}, 400, "frequency_penalty", None),
        ({"model": ""}, 400, "model", None),
    ],
)
async def test_bad_chat_requests_are_4xx(
    http: httpx.AsyncClient, extra: dict[str, Any], status: int, param: str, code: str | None
) -> None:
    body = {"model": "rwkv7-tiny", "messages": HELLO, **extra}
    r = await http.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param
    if code:
        assert err["code"] == code


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"suffix": "x"}, "suffix"),
        ({"best_of": 3}, "best_of"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [70000]}, "prompt"),
        ({"prompt": [{"a": 1}]}, "prompt"),
        ({"logprobs": 9}, "logprobs"),
        ({"knowledge": {"vector_store_ids": []}}, "knowledge.vector_store_ids"),
        ({"prompt": ["a", "b", "c"], "n": 3}, "prompt"),
    ],
)
async def test_bad_completion_requests_are_400(
    http: httpx.AsyncClient, extra: dict[str, Any], param: str
) -> None:
    r = await http.post("/v1/completions", json={"model": "rwkv6-tiny", "prompt": "x", **extra})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_token_id_prompts_are_accepted(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/v1/completions", json={"model": "rwkv6-tiny", "prompt": [[510, 3658]], "max_tokens": 2}
    )
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens"] == 2


async def test_ids_the_vocabulary_leaves_unassigned_decode_to_nothing(
    http: httpx.AsyncClient, chat_registry: Any
) -> None:
    # The world vocabulary ends at 65529; the embedding has 65536 rows, so a random or
    # greedy model can pick 65530-65535. They must not fail the batch (nor an echo).
    r = await http.post(
        "/v1/completions",
        json={"model": "rwkv7-tiny", "prompt": [510, 65535, 3658], "echo": True, "max_tokens": 1},
    )
    assert r.status_code == 200, r.text
    engine = chat_registry.models["rwkv7-tiny"].engine
    assert engine.decode([65535, 65531]) == ""
    assert engine.decode([510, 65535]) == engine.decode([510])


async def test_prompt_over_the_context_limit_is_context_length_exceeded(tiny_dir: Path) -> None:
    from tests.conftest import asgi_client

    settings = Settings(models=chat_models(tiny_dir, context_length=32), load_in_background=False)
    async with asgi_client(create_app(settings)) as c:
        long = " ".join(["word"] * 100)
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "rwkv7-tiny", "messages": [{"role": "user", "content": long}]},
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "context_length_exceeded"
        ok = await c.post(
            "/v1/chat/completions",
            json={"model": "rwkv7-tiny", "messages": HELLO, "max_tokens": 1000},
        )
        assert ok.status_code == 200
        # max_tokens is capped by the room left in the context.
        assert ok.json()["usage"]["total_tokens"] <= 32


async def test_mismatched_state_file_fails_at_startup(tiny_dir: Path) -> None:
    models = [
        {
            "id": "bad",
            "kind": "chat",
            "engine": "rwkv",
            "path": str(tiny_dir / "rwkv7-tiny-random.pth"),
            "options": {"states": {"wrong": str(tiny_dir / "rwkv-tiny-mismatched-state.pth")}},
        }
    ]
    from tests.conftest import startup_error

    error = await startup_error(create_app(Settings(models=models, load_in_background=False)))
    assert "has shape (4, 64, 64), model needs (2, 64, 64)" in error


async def test_full_queue_answers_429(tiny_dir: Path) -> None:
    import asyncio

    from tests.conftest import asgi_client

    settings = Settings(
        models=chat_models(tiny_dir, max_batch_size=1, max_queued=1), load_in_background=False
    )
    async with asgi_client(create_app(settings)) as c:
        body = {"model": "rwkv7-tiny", "messages": HELLO, "max_tokens": 200, "temperature": 0}
        rs = await asyncio.gather(*(c.post("/v1/chat/completions", json=body) for _ in range(6)))
        codes = [r.status_code for r in rs]
        assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
        assert all(r.json()["error"]["code"] == "queue_full" for r in rs if r.status_code == 429)


async def test_a_failure_mid_stream_is_one_error_event_then_the_end() -> None:
    import json
    from collections.abc import AsyncIterator

    from core.errors import EngineError
    from gateway.services.chat.stream import guard as _guard
    from gateway.services.chat.stream import sse

    async def failing(exc: Exception) -> AsyncIterator[bytes]:
        yield sse({"choices": []})
        raise exc

    for exc, code, type_ in (
        (EngineError("model failed"), "engine_error", "server_error"),
        (RuntimeError("unexpected"), "engine_error", "server_error"),
    ):
        events = [e async for e in _guard(failing(exc))]
        assert len(events) == 2
        error = json.loads(events[1].removeprefix(b"data: "))["error"]
        assert error["code"] == code and error["type"] == type_
        assert "unexpected" not in error["message"]  # internals are not leaked


async def test_preparing_a_constrained_output_past_its_time_budget_is_a_400(
    chat_settings: Settings, chat_registry: Any
) -> None:
    """chat.prepare_timeout_s bounds the off-loop preparation (grammar, shortest output):
    past it the request is a 400 ``schema_too_complex``; within it the same one answers."""
    from tests.conftest import asgi_client

    schema = {
        "type": "object",
        "properties": {f"field_{i}": {"type": "string"} for i in range(3)},
        "required": [f"field_{i}" for i in range(3)],
    }
    body = {
        "model": "rwkv7-tiny",
        "messages": [{"role": "user", "content": "Fill it."}],
        "max_tokens": 2000,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    hurried = chat_settings.model_copy(
        update={"chat": chat_settings.chat.model_copy(update={"prepare_timeout_s": 1e-6})}
    )
    async with asgi_client(create_app(hurried, engines=chat_registry)) as http:
        r = await http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "schema_too_complex" and err["param"] == "response_format"
    async with asgi_client(create_app(chat_settings, engines=chat_registry)) as http:
        r = await http.post("/v1/chat/completions", json={**body, "max_tokens": 60})
    assert r.status_code == 200, r.text
