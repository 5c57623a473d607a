"""Real engines: the offline MiniLM, and tiny BGE-M3 / BERT reranker checkpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from litestar.testing import AsyncTestClient

from engines.registry import EngineRegistry
from gateway.app import create_app
from gateway.settings import Settings


def _cos(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


@pytest.fixture(scope="module")
def real_settings(tiny_dir: Path) -> Settings:
    return Settings(
        models=[
            {
                "id": "minilm",
                "kind": "embedding",
                "engine": "bge",
                "path": "builtin:all-minilm-l6-v2",
                "options": {"pooling": "mean"},
            },
            {
                "id": "tiny-m3",
                "kind": "embedding",
                "engine": "bge",
                "path": str(tiny_dir / "tiny-bge-m3"),
            },
            {
                "id": "tiny-reranker",
                "kind": "rerank",
                "engine": "flag-reranker",
                "path": str(tiny_dir / "tiny-bert-reranker"),
            },
        ],
        load_in_background=False,
        log_json=False,
    )


@pytest.fixture(scope="module")
def registry(real_settings: Settings) -> EngineRegistry:
    return EngineRegistry(real_settings.registry_config())


@pytest.fixture
async def sdk(
    real_settings: Settings, registry: EngineRegistry
) -> AsyncIterator[tuple[openai.AsyncOpenAI, AsyncTestClient[Any]]]:
    async with AsyncTestClient(create_app(real_settings, engines=registry)) as http:
        yield (
            openai.AsyncOpenAI(
                api_key="x", base_url="http://testserver.local/v1", http_client=http
            ),
            http,
        )


async def test_minilm_ranks_paraphrases_above_unrelated_pairs(sdk: Any) -> None:
    client, _ = sdk
    pairs = [
        ("A man is eating food.", "A man is eating a meal.", "The stock market fell sharply."),
        (
            "How do I reset my password?",
            "What are the steps to change my password?",
            "The weather in Lisbon is sunny.",
        ),
        (
            "The cat sleeps on the sofa.",
            "A kitten is napping on the couch.",
            "Quarterly revenue grew by ten percent.",
        ),
    ]
    flat = [t for triple in pairs for t in triple]
    out = await client.embeddings.create(model="minilm", input=flat)
    vecs = [d.embedding for d in out.data]
    assert len(vecs[0]) == 384
    for i in range(len(pairs)):
        a, para, other = vecs[3 * i : 3 * i + 3]
        assert _cos(a, para) > _cos(a, other) + 0.3


async def test_minilm_usage_counts_its_own_tokens(sdk: Any) -> None:
    client, _ = sdk
    out = await client.embeddings.create(model="minilm", input=["hello world"])
    assert out.usage.prompt_tokens == 4  # [CLS] hello world [SEP]


async def test_minilm_serves_cosine_rerank_when_no_reranker_is_configured() -> None:
    settings = Settings(
        models=[
            {
                "id": "minilm",
                "kind": "embedding",
                "engine": "bge",
                "path": "builtin:all-minilm-l6-v2",
                "options": {"pooling": "mean"},
            }
        ],
        load_in_background=False,
    )
    async with AsyncTestClient(create_app(settings)) as http:
        r = await http.post(
            "/v1/rerank",
            json={
                "model": "minilm",
                "query": "Where is the Eiffel Tower?",
                "documents": ["Bananas are yellow.", "The Eiffel Tower is in Paris."],
                "return_documents": True,
            },
        )
    assert r.status_code == 200
    assert r.json()["results"][0]["document"]["text"] == "The Eiffel Tower is in Paris."


async def test_tiny_bge_m3_and_reranker_load_through_flagembedding(sdk: Any) -> None:
    client, http = sdk
    out = await client.embeddings.create(model="tiny-m3", input=["你好 世界", "the cat"])
    assert len(out.data[0].embedding) == 32
    assert np.linalg.norm(out.data[0].embedding) == pytest.approx(1.0, abs=1e-4)
    listed = {m.id: m.model_extra for m in (await client.models.list()).data}
    assert listed["tiny-m3"]["engine"] == "bge-m3"  # type: ignore[index]
    r = await http.post(
        "/v1/rerank",
        json={"model": "tiny-reranker", "query": "cat", "documents": ["the cat", "a dog", "x"]},
    )
    assert r.status_code == 200
    scores = [x["relevance_score"] for x in r.json()["results"]]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)


def test_gateway_vectors_equal_flagembedding_encode(registry: EngineRegistry) -> None:
    # Our one-forward path gives what FlagEmbedding's own encode gives.
    for name in ("minilm", "tiny-m3"):
        engine = registry.models[name].engine
        texts = ["short", "a somewhat longer sentence about retrieval", "第三个句子"]
        np.testing.assert_allclose(engine.embed(texts), engine.flag_encode(texts), atol=1e-5)
    rr = registry.models["tiny-reranker"].engine
    pairs = [("cat", "the cat"), ("cat", "a dog sat")]
    np.testing.assert_allclose(rr.score(pairs), rr.flag_compute_score(pairs), atol=1e-5)
