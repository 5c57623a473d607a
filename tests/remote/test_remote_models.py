"""Embeddings, rerank, models, greedy equality, affinity and the knowledge base through
remote models over two real engine workers."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from engines.registry import EngineRegistry
from gateway.app import create_app
from gateway.settings import Settings
from tests.chat.conftest import chat_models
from tests.conftest import RunningServer, asgi_client
from tests.engines.test_real_models import (  # noqa: F401 - collected here, remote
    test_minilm_ranks_paraphrases_above_unrelated_pairs,
    test_minilm_usage_counts_its_own_tokens,
)
from tests.remote.conftest import metric, sdk_over

HELLO = [{"role": "user", "content": "Hello, who are you?"}]


@pytest.fixture
async def sdk(
    remote_http: httpx.AsyncClient,
) -> AsyncIterator[tuple[openai.AsyncOpenAI, httpx.AsyncClient]]:
    yield sdk_over(remote_http), remote_http


@pytest.fixture
async def local(tiny_dir: Path, tmp_path: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    """The same chat models served in process: what the remote path must equal."""
    settings = Settings(
        models=chat_models(tiny_dir), load_in_background=False, data_dir=tmp_path / "local"
    )
    registry = EngineRegistry(settings.registry_config())
    try:
        async with asgi_client(create_app(settings, engines=registry)) as http:
            yield sdk_over(http)
    finally:
        await registry.close()


async def test_embeddings_pass_through_float_base64_and_dimensions(
    remote_http: httpx.AsyncClient, workers: list[RunningServer]
) -> None:
    client = sdk_over(remote_http)
    texts = ["the cat sat on the mat", "quarterly revenue grew"]
    # The SDK asks for base64 unless told otherwise.
    b64 = await client.embeddings.create(model="minilm", input=texts)
    flt = await client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    assert b64.model == "minilm" and len(b64.data[0].embedding) == 384
    np.testing.assert_allclose(b64.data[1].embedding, flt.data[1].embedding, atol=1e-6)
    async with httpx.AsyncClient(base_url=workers[0].base_url) as direct:
        own = (await direct.post("/v1/embeddings", json={"model": "minilm", "input": texts})).json()
    np.testing.assert_allclose(flt.data[0].embedding, own["data"][0]["embedding"], atol=1e-6)
    assert flt.usage.prompt_tokens == own["usage"]["prompt_tokens"]
    raw = await remote_http.post(
        "/v1/embeddings",
        json={"model": "minilm", "input": texts[0], "dimensions": 64, "encoding_format": "base64"},
    )
    vec = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    assert vec.shape == (64,) and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    too_big = await remote_http.post(
        "/v1/embeddings", json={"model": "minilm", "input": "x", "dimensions": 385}
    )
    assert too_big.status_code == 400 and too_big.json()["error"]["param"] == "dimensions"


async def test_rerank_through_the_remote_model_equals_the_worker(
    remote_http: httpx.AsyncClient, workers: list[RunningServer]
) -> None:
    body = {
        "model": "tiny-reranker",
        "query": "cat",
        "documents": ["the cat", "a dog", "x"],
        "top_n": 2,
        "return_documents": True,
    }
    got = await remote_http.post("/v1/rerank", json=body)
    async with httpx.AsyncClient(base_url=workers[1].base_url) as direct:
        own = (await direct.post("/v1/rerank", json=body)).json()
    assert got.status_code == 200
    out = got.json()
    assert [r["index"] for r in out["results"]] == [r["index"] for r in own["results"]]
    for a, b in zip(out["results"], own["results"], strict=True):
        assert a["relevance_score"] == pytest.approx(b["relevance_score"], abs=1e-6)
        assert a["document"]["text"] == body["documents"][a["index"]]
    assert len(out["results"]) == 2


async def test_models_list_upstreams_and_their_health(remote_http: httpx.AsyncClient) -> None:
    listed = (await remote_http.get("/v1/models")).json()
    chat = next(m for m in listed["data"] if m["id"] == "rwkv7-tiny")
    assert chat["engine"] == "remote" and chat["status"] == "ready"
    ups = chat["details"]["upstreams"]
    assert len(ups) == 2 and all(u["healthy"] and u["extras"] for u in ups)
    assert all(u["url"].startswith("http://127.0.0.1:") for u in ups)
    embed = next(m for m in listed["data"] if m["id"] == "minilm")
    assert embed["dimensions"] == 384  # learnt from the workers
    health = await remote_http.get("/health")
    assert health.status_code == 200


def test_engine_role_serves_the_model_apis_only(workers: list[RunningServer]) -> None:
    with httpx.Client(base_url=workers[0].base_url) as w:
        listed = w.get("/v1/models").json()
        assert listed["role"] == "engine" and listed["served_by"] == "rwkv-rag-gateway"
        for path in ("/v1/vector_stores", "/v1/files", "/v1/responses/x", "/ui/", "/mcp"):
            assert w.get(path).status_code == 404, path
        assert w.get("/health").status_code == 200 and w.get("/metrics").status_code == 200


async def test_greedy_outputs_equal_the_local_path(
    remote_http: httpx.AsyncClient, local: openai.AsyncOpenAI
) -> None:
    remote = sdk_over(remote_http)
    asks: list[dict[str, Any]] = [
        {"messages": HELLO, "max_tokens": 24},
        {"messages": [{"role": "system", "content": "Be brief."}, *HELLO], "max_tokens": 16},
        {"messages": HELLO, "max_tokens": 12, "extra_body": {"state": "tuned"}},
    ]
    for model in ("rwkv6-tiny", "rwkv7-tiny"):
        for ask in asks:
            kw = {"model": model, "temperature": 0, **ask}
            a = await local.chat.completions.create(**kw)
            b = await remote.chat.completions.create(**kw)
            assert b.choices[0].message.content == a.choices[0].message.content
            assert a.usage is not None and b.usage is not None
            # (cached_tokens differ: each side's prefix cache has its own history)
            assert (b.usage.prompt_tokens, b.usage.completion_tokens) == (
                a.usage.prompt_tokens,
                a.usage.completion_tokens,
            )
        c = await local.completions.create(
            model=model, prompt="One two", max_tokens=9, temperature=0
        )
        d = await remote.completions.create(
            model=model, prompt="One two", max_tokens=9, temperature=0
        )
        assert c.choices[0].text == d.choices[0].text


WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


async def test_the_responses_api_on_a_remote_model_equals_the_local_one(
    remote_http: httpx.AsyncClient, local: openai.AsyncOpenAI
) -> None:
    remote = sdk_over(remote_http)
    plain: dict[str, Any] = {
        "model": "rwkv7-tiny",
        "input": "Hello there",
        "max_output_tokens": 10,
        "temperature": 0,
    }
    a, b = await local.responses.create(**plain), await remote.responses.create(**plain)
    assert b.output_text == a.output_text and b.status == a.status
    assert b.usage is not None and a.usage is not None
    assert b.usage.output_tokens == a.usage.output_tokens
    # Tools: the worker decodes the call under its grammar; it comes back as an item.
    called: dict[str, Any] = {
        **plain,
        "max_output_tokens": 60,
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
    }
    a, b = await local.responses.create(**called), await remote.responses.create(**called)
    calls = [
        [(i.name, json.loads(i.arguments)) for i in r.output if i.type == "function_call"]
        for r in (a, b)
    ]
    assert calls[0] and calls[1] == calls[0]
    # A stream follows the same lifecycle.
    kinds = [ev.type async for ev in await remote.responses.create(**plain, stream=True)]
    # (10 tokens run out before the text ends: incomplete, as the local one is)
    plain_status = (await local.responses.create(**plain)).status
    assert kinds[0] == "response.created" and kinds[-1] == f"response.{plain_status}"
    assert "response.output_text.delta" in kinds


async def test_a_conversation_stays_on_one_worker_and_hits_its_prefix_cache(
    remote_http: httpx.AsyncClient, workers: list[RunningServer]
) -> None:
    async def counts() -> list[tuple[float, float]]:
        out = []
        for w in workers:
            async with httpx.AsyncClient(base_url=w.base_url) as c:
                text = (await c.get("/metrics")).text
            served = metric(
                text,
                'rwkv_rag_requests_total{method="POST",project="default",route="/v1/chat/completions",status="200"}',
            )
            hits = metric(text, 'rwkv_rag_prefix_cache_hits_total{model="rwkv7-tiny"}')
            out.append((served, hits))
        return out

    client = sdk_over(remote_http)
    before = await counts()
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a patient tutor of geography."}
    ]
    for turn in range(4):
        messages.append({"role": "user", "content": f"Question {turn}: name a river."})
        out = await client.chat.completions.create(
            model="rwkv7-tiny", messages=messages, max_tokens=6, temperature=0
        )
        messages.append({"role": "assistant", "content": out.choices[0].message.content or ""})
    after = await counts()
    served = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    hits = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
    assert sorted(served) == [0, 4]  # all four turns on one worker
    home = served.index(4)
    assert hits[home] >= 3  # turns 2-4 extend the cached prefix of the one before
    gw = (await remote_http.get("/metrics")).text
    assert metric(gw, 'rwkv_rag_remote_affinity_total{model="rwkv7-tiny",result="hit"}') >= 4
    assert metric(gw, 'rwkv_rag_remote_affinity_hit_rate{model="rwkv7-tiny"}') == 1.0
    assert 'rwkv_rag_upstream_requests_total{model="rwkv7-tiny",upstream=' in gw


async def test_session_header_routes_and_spreads_conversations(
    remote_http: httpx.AsyncClient,
) -> None:
    client = sdk_over(remote_http)

    async def where(session: str) -> str:
        await client.chat.completions.create(
            model="rwkv7-tiny",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
            extra_headers={"X-Session-Id": session},
        )
        listed = (await remote_http.get("/v1/models/rwkv7-tiny")).json()
        return str(listed["details"]["upstreams"])

    async def home(session: str) -> int:
        m = (await remote_http.get("/metrics")).text
        before = [
            metric(m, f'rwkv_rag_upstream_requests_total{{model="rwkv7-tiny",upstream="{u}"}}')
            for u in await _labels(remote_http)
        ]
        await where(session)
        m = (await remote_http.get("/metrics")).text
        after = [
            metric(m, f'rwkv_rag_upstream_requests_total{{model="rwkv7-tiny",upstream="{u}"}}')
            for u in await _labels(remote_http)
        ]
        return [a - b for a, b in zip(after, before, strict=True)].index(1)

    homes = {s: await home(s) for s in [f"session-{i}" for i in range(16)]}
    for s, h in homes.items():
        assert await home(s) == h  # the same session, the same worker
    assert len(set(homes.values())) == 2  # different sessions spread over both


async def _labels(http: httpx.AsyncClient) -> list[str]:
    listed = (await http.get("/v1/models/rwkv7-tiny")).json()
    return [u["url"] for u in listed["details"]["upstreams"]]


async def test_knowledge_base_embeds_through_the_remote_model_and_chat_cites_it(
    remote_http: httpx.AsyncClient,
) -> None:
    store = (
        await remote_http.post("/v1/vector_stores", json={"name": "remote", "model": "minilm"})
    ).json()
    doc = "The lighthouse keeper of Port Vell is named Amara Quist.\n"
    up = await remote_http.post(
        "/v1/files",
        files={"file": ("keeper.txt", doc.encode(), "text/plain")},
        data={"purpose": "assistants"},
    )
    fid = up.json()["id"]
    await remote_http.post(f"/v1/vector_stores/{store['id']}/files", json={"file_id": fid})
    for _ in range(100):
        f = (await remote_http.get(f"/v1/vector_stores/{store['id']}/files/{fid}")).json()
        if f["status"] != "in_progress":
            break
        await asyncio.sleep(0.1)
    assert f["status"] == "completed"
    found = await remote_http.post(
        f"/v1/vector_stores/{store['id']}/search", json={"query": "who keeps the lighthouse?"}
    )
    assert "Amara Quist" in found.json()["data"][0]["content"][0]["text"]
    out = await remote_http.post(
        "/v1/chat/completions",
        json={
            "model": "rwkv7-tiny",
            "messages": [{"role": "user", "content": "Who keeps the lighthouse of Port Vell?"}],
            "max_tokens": 8,
            "knowledge": {"vector_store_ids": [store["id"]], "debug": True},
        },
    )
    body = out.json()
    assert out.status_code == 200, body
    assert body["citations"] and body["citations"][0]["file_id"] == fid
    assert "Amara Quist" in body["rag_prompt"]
