"""/health, /metrics, batching visible in metrics, and the HTTP layer imports no torch."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from litestar.testing import AsyncTestClient

from gateway.app import create_app
from tests.conftest import ROOT, asgi_client, fake_settings


async def test_concurrent_requests_are_coalesced_into_batches() -> None:
    models = [
        {
            "id": "e",
            "kind": "embedding",
            "engine": "fake",
            "options": {"delay_ms": 20},
            "batching": {"max_batch_size": 16, "max_wait_ms": 20, "max_queue": 1000},
        }
    ]
    async with asgi_client(create_app(fake_settings(models=models))) as c:
        texts = [f"text number {i}" for i in range(32)]
        rs = await asyncio.gather(
            *(c.post("/v1/embeddings", json={"model": "e", "input": t}) for t in texts)
        )
        assert all(r.status_code == 200 for r in rs)
        # Each caller got its own vector: equal to embedding the text alone.
        solo = await c.post("/v1/embeddings", json={"model": "e", "input": texts[7]})
        assert rs[7].json()["data"][0]["embedding"] == solo.json()["data"][0]["embedding"]
        metrics = (await c.get("/metrics")).text
        count = _sample(metrics, 'rwkv_rag_batch_size_count{model="e"}')
        total = _sample(metrics, 'rwkv_rag_batch_size_sum{model="e"}')
        assert total == 33
        assert count < 33  # fewer forwards than requests


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} missing from metrics")


async def test_metrics_count_requests_by_route_and_status(client: AsyncTestClient[Any]) -> None:
    await client.post("/v1/embeddings", json={"model": "fake-embed", "input": "x"})
    await client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        _sample(
            text,
            'rwkv_rag_requests_total{method="POST",project="default",route="/v1/embeddings",status="200"}',
        )
        == 1
    )
    assert (
        _sample(
            text,
            'rwkv_rag_requests_total{method="POST",project="default",route="/v1/embeddings",status="404"}',
        )
        == 1
    )
    assert "rwkv_rag_request_duration_seconds_bucket" in text
    assert 'rwkv_rag_queue_depth{model="fake-embed"}' in text


async def test_health_is_503_while_models_load_in_background() -> None:
    models = [{"id": "e", "kind": "embedding", "engine": "fake"}]
    app = create_app(fake_settings(models=models, load_in_background=True))
    registry = app.state.ctx.registry
    gate = asyncio.Event()
    original = registry.load

    async def gated_load() -> None:
        await gate.wait()
        await original()

    registry.load = gated_load
    async with AsyncTestClient(app) as c:
        r = await c.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        e = await c.post("/v1/embeddings", json={"model": "e", "input": "x"})
        assert e.status_code == 503
        gate.set()
        for _ in range(200):
            if (await c.get("/health")).status_code == 200:
                break
            await asyncio.sleep(0.01)
        assert (await c.get("/health")).status_code == 200


def test_http_layer_with_fake_engines_imports_no_torch() -> None:
    code = """
import sys, json
from litestar.testing import TestClient
from gateway.app import create_app
from gateway.settings import Settings
s = Settings(models=[{"id": "e", "kind": "embedding", "engine": "fake"},
                     {"id": "r", "kind": "rerank", "engine": "fake"}], load_in_background=False)
with TestClient(create_app(s)) as c:
    assert c.post("/v1/embeddings", json={"model": "e", "input": "x"}).status_code == 200
    assert c.post("/v1/rerank", json={"model": "r", "query": "q", "documents": ["d"]}).status_code == 200
print(json.dumps(sorted(m for m in ("torch", "rwkv", "FlagEmbedding", "transformers") if m in sys.modules)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
