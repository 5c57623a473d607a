"""/v1/rerank, /rerank, /v2/rerank in Cohere/Jina shape."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from tests.conftest import fake_settings

DOCS = ["dogs bark loudly", "the cat sat on the mat", {"text": "a cat and another cat"}, "paris"]


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank", "/v2/rerank"])
async def test_rerank_sorts_by_score_and_honours_top_n(
    client: AsyncTestClient[Any], path: str
) -> None:
    r = await client.post(
        path,
        json={
            "model": "fake-rerank",
            "query": "cat mat",
            "documents": DOCS,
            "top_n": 2,
            "return_documents": True,
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "fake-rerank"
    assert body["id"].startswith("rerank-")
    results = body["results"]
    assert [x["index"] for x in results] == [1, 2]
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert results[0]["document"] == {"text": "the cat sat on the mat"}
    assert results[1]["document"] == {"text": "a cat and another cat"}
    assert body["usage"]["total_tokens"] > 0


async def test_document_is_omitted_not_null_when_not_asked(client: AsyncTestClient[Any]) -> None:
    r = await client.post(
        "/v1/rerank", json={"model": "fake-rerank", "query": "cat", "documents": DOCS}
    )
    results = r.json()["results"]
    assert len(results) == len(DOCS)
    assert all("document" not in x for x in results)
    assert sorted(x["index"] for x in results) == [0, 1, 2, 3]
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)


async def test_rerank_without_model_uses_the_configured_reranker(
    client: AsyncTestClient[Any],
) -> None:
    r = await client.post("/v1/rerank", json={"query": "cat", "documents": ["cat", "dog"]})
    assert r.status_code == 200
    assert r.json()["model"] == "fake-rerank"
    assert r.json()["results"][0]["index"] == 0


async def test_embedding_model_serves_rerank_by_cosine_when_no_reranker() -> None:
    settings = fake_settings(models=[{"id": "emb", "kind": "embedding", "engine": "fake"}])
    async with AsyncTestClient(create_app(settings)) as c:
        listed = (await c.get("/v1/models")).json()["data"][0]
        assert listed["rerank"] == "cosine-similarity"
        assert "rerank" in listed["capabilities"]
        r = await c.post(
            "/v1/rerank",
            json={
                "model": "emb",
                "query": "red apple pie",
                "documents": ["blue ocean wave", "red apple pie recipe"],
                "top_n": 1,
            },
        )
        assert r.status_code == 200
        res = r.json()["results"]
        assert res[0]["index"] == 1 and 0.0 <= res[0]["relevance_score"] <= 1.0


async def test_rerank_fallback_off_refuses_embedding_model() -> None:
    settings = fake_settings(
        models=[{"id": "emb", "kind": "embedding", "engine": "fake"}], rerank_fallback=None
    )
    async with AsyncTestClient(create_app(settings)) as c:
        r = await c.post("/v1/rerank", json={"model": "emb", "query": "q", "documents": ["d"]})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "model_not_supported"
