"""Bad input gets a clear 4xx in the OpenAI error shape; engine failures never hang."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from tests.conftest import asgi_client, fake_settings, startup_error


def assert_error(r: Any, status: int, code: str | None = None, param: str | None = None) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": "nope", "input": "x"}, 404, "model_not_found", "model"),
        ({"input": "x"}, 400, None, "model"),
        ({"model": "fake-embed"}, 400, None, "input"),
        ({"model": "fake-embed", "input": [1, 2, 3]}, 400, "unsupported_input", "input"),
        ({"model": "fake-embed", "input": [[1, 2], [3]]}, 400, "unsupported_input", "input"),
        ({"model": "fake-embed", "input": []}, 400, None, "input"),
        ({"model": "fake-embed", "input": ""}, 400, None, "input"),
        ({"model": "fake-embed", "input": ["ok", 3]}, 400, None, "input"),
        ({"model": "fake-embed", "input": "x", "dimensions": 65}, 400, None, "dimensions"),
        ({"model": "fake-embed", "input": "x", "dimensions": 0}, 400, None, "dimensions"),
        (
            {"model": "fake-embed", "input": "x", "encoding_format": "int8"},
            400,
            None,
            "encoding_format",
        ),
        ({"model": "fake-rerank", "input": "x"}, 400, "model_not_supported", "model"),
    ],
)
async def test_bad_embedding_requests_are_4xx(
    client: AsyncTestClient[Any], body: dict[str, Any], status: int, code: str, param: str
) -> None:
    assert_error(await client.post("/v1/embeddings", json=body), status, code, param)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "fake-rerank", "query": "q", "documents": []}, "documents"),
        ({"model": "fake-rerank", "query": "", "documents": ["d"]}, "query"),
        ({"model": "fake-rerank", "query": "q", "documents": ["d"], "top_n": 0}, "top_n"),
        ({"model": "fake-rerank", "query": "q", "documents": [{"txt": "d"}]}, None),
        ({"model": "fake-rerank", "documents": ["d"]}, "query"),
    ],
)
async def test_bad_rerank_requests_are_400(
    client: AsyncTestClient[Any], body: dict[str, Any], param: str | None
) -> None:
    assert_error(await client.post("/v1/rerank", json=body), 400, param=param)


async def test_malformed_json_is_400(client: AsyncTestClient[Any]) -> None:
    r = await client.post(
        "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(r, 400)


async def test_unknown_route_and_method_are_openai_shaped(client: AsyncTestClient[Any]) -> None:
    assert_error(await client.get("/v1/nothing-here"), 404)
    assert_error(await client.get("/v1/embeddings"), 405)
    assert_error(await client.get("/v1/models/missing-model"), 404, "model_not_found")


async def test_body_over_the_limit_is_413() -> None:
    settings = fake_settings(limits={"max_body_bytes": 4096})
    async with AsyncTestClient(create_app(settings)) as c:
        r = await c.post("/v1/embeddings", json={"model": "fake-embed", "input": "x " * 5000})
        assert_error(r, 413, "request_too_large")


async def test_too_many_inputs_is_400() -> None:
    settings = fake_settings(limits={"max_inputs_per_request": 3})
    async with AsyncTestClient(create_app(settings)) as c:
        r = await c.post("/v1/embeddings", json={"model": "fake-embed", "input": ["a"] * 4})
        assert_error(r, 400, "too_many_inputs", "input")
        r = await c.post(
            "/v1/rerank", json={"model": "fake-rerank", "query": "q", "documents": ["a"] * 4}
        )
        assert_error(r, 400, "too_many_inputs", "documents")


async def test_long_inputs_are_truncated_by_default_and_refused_when_configured() -> None:
    long_text = " ".join(f"w{i}" for i in range(50))
    async with AsyncTestClient(create_app(fake_settings(limits={"max_tokens_per_input": 10}))) as c:
        r = await c.post("/v1/embeddings", json={"model": "fake-embed", "input": long_text})
        assert r.status_code == 200
        assert r.json()["usage"]["prompt_tokens"] == 10
        head = " ".join(f"w{i}" for i in range(10))
        r2 = await c.post("/v1/embeddings", json={"model": "fake-embed", "input": head})
        assert r.json()["data"][0]["embedding"] == r2.json()["data"][0]["embedding"]
    async with AsyncTestClient(
        create_app(fake_settings(limits={"max_tokens_per_input": 10, "truncate_inputs": False}))
    ) as c:
        r = await c.post(
            "/v1/embeddings", json={"model": "fake-embed", "input": ["short", long_text]}
        )
        assert_error(r, 400, "context_length_exceeded", "input")
        r = await c.post(
            "/v1/rerank",
            json={"model": "fake-rerank", "query": "q", "documents": ["short", long_text]},
        )
        assert_error(r, 400, "context_length_exceeded", "documents")


async def test_full_queue_answers_429_and_others_complete() -> None:
    models = [
        {
            "id": "slow",
            "kind": "embedding",
            "engine": "fake",
            "options": {"delay_ms": 300},
            "batching": {"max_batch_size": 1, "max_wait_ms": 0, "max_queue": 2},
        },
    ]
    async with asgi_client(create_app(fake_settings(models=models))) as c:
        rs = await asyncio.gather(
            *(c.post("/v1/embeddings", json={"model": "slow", "input": f"t{i}"}) for i in range(6))
        )
        codes = sorted(r.status_code for r in rs)
        assert 200 in codes and 429 in codes
        assert set(codes) <= {200, 429}
        for r in rs:
            if r.status_code == 429:
                assert_error(r, 429, "queue_full")


async def test_failed_batch_fails_its_requests_marks_unhealthy_and_recovers() -> None:
    models = [
        {"id": "flaky", "kind": "embedding", "engine": "fake", "options": {"fail_marker": "BOOM"}}
    ]
    async with AsyncTestClient(create_app(fake_settings(models=models))) as c:
        r = await asyncio.wait_for(
            c.post("/v1/embeddings", json={"model": "flaky", "input": ["ok", "BOOM"]}), 10
        )
        assert_error(r, 500, "engine_error")
        assert r.json()["error"]["type"] == "server_error"
        h = await c.get("/health")
        assert h.status_code == 503 and h.json()["status"] == "unhealthy"
        ok = await asyncio.wait_for(
            c.post("/v1/embeddings", json={"model": "flaky", "input": "fine"}), 10
        )
        assert ok.status_code == 200
        assert (await c.get("/health")).status_code == 200


async def test_model_that_fails_to_load_is_503_not_500() -> None:
    models = [
        {"id": "broken", "kind": "embedding", "engine": "bge", "path": "/no/such/model"},
        {"id": "fine", "kind": "embedding", "engine": "fake"},
    ]
    settings = fake_settings(models=models, strict_startup=False)
    async with AsyncTestClient(create_app(settings)) as c:
        h = await c.get("/health")
        assert h.status_code == 503
        assert h.json()["models"]["broken"]["status"] == "failed"
        r = await c.post("/v1/embeddings", json={"model": "broken", "input": "x"})
        assert_error(r, 503, "engine_unavailable")


async def test_strict_startup_refuses_to_start_with_a_broken_model() -> None:
    models = [{"id": "broken", "kind": "embedding", "engine": "bge", "path": "/no/such/model"}]
    error = await startup_error(create_app(fake_settings(models=models)))
    assert "broken" in error and "does not exist" in error
