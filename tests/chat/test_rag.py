"""Retrieval-augmented chat end to end: tiny real RWKV checkpoints, the real MiniLM, the
official SDK; Dify's /retrieval."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.chat.conftest import chat_models
from tests.conftest import MINILM, asgi_client

pytestmark = pytest.mark.usefixtures("kb_backend")

FACTS = {
    "pump.md": (
        "The water pump resets when you hold the red button for ten seconds.",
        {"team": "plant"},
    ),
    "billing.md": (
        "Refunds reach your bank account within five to seven business days.",
        {"team": "finance"},
    ),
    "museum.md": (
        "The city museum is closed on Mondays and opens at nine on other days.",
        {"team": "visitors"},
    ),
}


def rag_settings(tiny: Path, data: Path, **profile: Any) -> Settings:
    return Settings(
        models=[MINILM, *chat_models(tiny)],
        load_in_background=False,
        log_json=False,
        data_dir=data,
        api_keys=["sk-test"],
        profiles=[
            {
                "id": "manuals-bot",
                "model": "rwkv7-tiny",
                "vector_store_ids": ["manuals"],
                "top_k": 2,
                "score_threshold": 0.3,
                "description": "answers from the manuals",
                **profile,
            },
            {
                "id": "strict-bot",
                "model": "rwkv7-tiny",
                "vector_store_ids": ["manuals"],
                "score_threshold": 0.99,
                "no_answer": "say so",
            },
            {
                "id": "half-bot",
                "model": "rwkv7-tiny",
                "vector_store_ids": ["manuals"],
                "score_threshold": 0.5,
                "no_answer": "say so",
            },
            {
                "id": "loose-bot",
                "model": "rwkv6-tiny",
                "vector_store_ids": ["manuals"],
                "score_threshold": 0.99,
                "no_answer": "answer anyway",
            },
        ],
        rag={"debug": True},
    )


@pytest.fixture(scope="module")
async def stack(
    tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], str]]:
    app = create_app(rag_settings(tiny_dir, tmp_path_factory.mktemp("rag")))
    async with asgi_client(app) as http:
        http.headers["Authorization"] = "Bearer sk-test"
        vs = (await http.post("/v1/vector_stores", json={"name": "manuals"})).json()["id"]
        ids: dict[str, str] = {}
        for name, (text, attrs) in FACTS.items():
            fid = (
                await http.post(
                    "/v1/files",
                    files={"file": (name, text.encode())},
                    data={"purpose": "assistants"},
                )
            ).json()["id"]
            ids[name] = fid
            await http.post(
                f"/v1/vector_stores/{vs}/files", json={"file_id": fid, "attributes": attrs}
            )
        await app.state.ctx.kb.drain()
        yield http, ids, vs


def _sdk(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-test", base_url="http://testserver.local/v1", http_client=http
    )


async def test_profile_is_listed_and_answers_with_citations(stack: Any) -> None:
    http, ids, vs = stack
    sdk = _sdk(http)
    models = {m.id: m for m in (await sdk.models.list()).data}
    assert "manuals-bot" in models
    assert (models["manuals-bot"].model_extra or {})["details"]["vector_store_ids"] == ["manuals"]
    question = [{"role": "user", "content": "How do I reset the water pump?"}]
    out = await sdk.chat.completions.create(
        model="manuals-bot", messages=question, max_tokens=8, seed=1
    )  # type: ignore[arg-type]
    extra = out.model_extra or {}
    cites = extra["citations"]
    assert cites[0]["file_id"] == ids["pump.md"] and cites[0]["filename"] == "pump.md"
    assert cites[0]["index"] == 1 and cites[0]["vector_store_id"] == vs
    assert "red button" in cites[0]["text"] and cites[0]["chunk_id"] > 0
    # The retrieved chunk reached the model's prompt, numbered, right before the question.
    prompt = extra["rag_prompt"]
    assert "[1] pump.md\nThe water pump resets" in prompt
    assert prompt.index("[1] pump.md") < prompt.index("How do I reset the water pump?")
    plain = await sdk.chat.completions.create(
        model="rwkv7-tiny", messages=question, max_tokens=8, seed=1
    )  # type: ignore[arg-type]
    assert out.usage and plain.usage and out.usage.prompt_tokens > plain.usage.prompt_tokens + 10


async def test_streaming_sends_citations_in_the_first_content_chunk(stack: Any) -> None:
    http, ids, _ = stack
    stream = await _sdk(http).chat.completions.create(
        model="manuals-bot",
        messages=[{"role": "user", "content": "When are refunds paid?"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0,
    )
    with_citations = []
    seen_content = False
    async for chunk in stream:
        extra = chunk.model_extra or {}
        if chunk.choices and chunk.choices[0].delta.content and not seen_content:
            seen_content = True
            assert "citations" in extra
        if "citations" in extra:
            with_citations.append(extra["citations"])
    assert len(with_citations) == 1
    assert with_citations[0][0]["file_id"] == ids["billing.md"]


async def test_per_request_knowledge_and_filters(stack: Any) -> None:
    http, ids, vs = stack
    sdk = _sdk(http)
    out = await sdk.chat.completions.create(
        model="rwkv7-tiny",
        messages=[{"role": "user", "content": "When does the museum open?"}],
        max_tokens=4,
        extra_body={"knowledge": {"vector_store_ids": [vs], "top_k": 3, "debug": True}},
    )
    files = [c["file_id"] for c in (out.model_extra or {})["citations"]]
    assert files[0] == ids["museum.md"] and len(files) == 3
    narrowed = await sdk.chat.completions.create(
        model="rwkv7-tiny",
        messages=[{"role": "user", "content": "When does the museum open?"}],
        max_tokens=4,
        extra_body={
            "knowledge": {
                "vector_store_ids": ["manuals"],
                "top_k": 3,
                "filters": {"type": "eq", "key": "team", "value": "finance"},
            }
        },
    )
    assert [c["file_id"] for c in (narrowed.model_extra or {})["citations"]] == [ids["billing.md"]]


async def test_follow_up_question_retrieves_with_context(stack: Any) -> None:
    http, ids, _ = stack
    out = await _sdk(http).chat.completions.create(
        model="manuals-bot",
        messages=[
            {"role": "user", "content": "Tell me about the water pump."},
            {"role": "assistant", "content": "It moves water through the plant."},
            {"role": "user", "content": "How long do I hold it?"},
        ],
        max_tokens=4,
    )
    cites = (out.model_extra or {})["citations"]
    assert cites and cites[0]["file_id"] == ids["pump.md"]


async def test_no_answer_behaviours(stack: Any) -> None:
    http, _, _ = stack
    sdk = _sdk(http)
    q = [{"role": "user", "content": "What is the capital of Peru?"}]
    said = await sdk.chat.completions.create(model="strict-bot", messages=q, max_tokens=8)  # type: ignore[arg-type]
    assert (
        said.choices[0].message.content
        == "I could not find anything about that in the knowledge base."
    )
    assert (
        (said.model_extra or {})["citations"] == [] and said.usage and said.usage.total_tokens == 0
    )
    stream = await sdk.chat.completions.create(
        model="strict-bot", messages=q, max_tokens=8, stream=True
    )  # type: ignore[arg-type]
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "I could not find anything about that in the knowledge base."
    anyway = await sdk.chat.completions.create(model="loose-bot", messages=q, max_tokens=5)  # type: ignore[arg-type]
    assert (anyway.model_extra or {})["citations"] == []
    assert anyway.usage and anyway.usage.completion_tokens > 0


async def test_budget_never_overflows(tiny_dir: Path, tmp_path: Path) -> None:
    models: list[dict[str, Any]] = [MINILM, *chat_models(tiny_dir, context_length=400)]
    app = create_app(
        Settings(models=models, load_in_background=False, log_json=False, data_dir=tmp_path)
    )
    async with asgi_client(app) as http:
        vs = (
            await http.post(
                "/v1/vector_stores",
                json={
                    "name": "long",
                    "chunking_strategy": {
                        "type": "static",
                        "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0},
                    },
                },
            )
        ).json()["id"]
        for i in range(8):
            text = f"Section {i} about pumps. " + " ".join(
                f"The pump detail number {i}-{j} matters." for j in range(30)
            )
            fid = (
                await http.post(
                    "/v1/files",
                    files={"file": (f"long{i}.txt", text.encode())},
                    data={"purpose": "assistants"},
                )
            ).json()["id"]
            await http.post(f"/v1/vector_stores/{vs}/files", json={"file_id": fid})
        await app.state.ctx.kb.drain()
        engine = app.state.ctx.registry.resolve("rwkv7-tiny", "chat").engine
        for cap in (None, 100):
            knowledge: dict[str, Any] = {"vector_store_ids": [vs], "top_k": 8, "debug": True}
            if cap:
                knowledge["max_context_tokens"] = cap
            r = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "rwkv7-tiny",
                    "messages": [{"role": "user", "content": "pump details"}],
                    "max_tokens": 8,
                    "knowledge": knowledge,
                },
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["usage"]["prompt_tokens"] + 8 <= 400
            sources = [c["text"] for c in body["citations"]]
            assert 1 <= len(sources) < 8  # not everything fits
            if cap:
                assert sum(len(engine.encode(t)) for t in sources) <= cap


async def test_completions_with_a_profile_and_bad_ids(stack: Any) -> None:
    http, ids, _ = stack
    sdk = _sdk(http)
    out = await sdk.completions.create(model="manuals-bot", prompt="Refunds take", max_tokens=4)
    assert (out.model_extra or {})["citations"][0]["file_id"] == ids["billing.md"]
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(
            model="no-such-bot", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.NotFoundError) as err:
        await sdk.chat.completions.create(
            model="rwkv7-tiny",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"knowledge": {"vector_store_ids": ["vs_nope"]}},
        )
    assert "vs_nope" in str(err.value)


async def test_dify_retrieval(stack: Any) -> None:
    http, ids, vs = stack
    body = {
        "knowledge_id": "manuals",
        "query": "reset the pump",
        "retrieval_setting": {"top_k": 2, "score_threshold": 0.3},
    }
    r = await http.post("/retrieval", json=body)
    assert r.status_code == 200, r.text
    records = r.json()["records"]
    assert records[0]["title"] == "pump.md" and "red button" in records[0]["content"]
    assert (
        records[0]["metadata"]["team"] == "plant"
        and records[0]["metadata"]["file_id"] == ids["pump.md"]
    )
    assert all(rec["score"] >= 0.3 for rec in records)
    cond = {
        "logical_operator": "or",
        "conditions": [{"name": ["team"], "comparison_operator": "is", "value": "finance"}],
    }
    r = await http.post(
        "/retrieval",
        json={
            **body,
            "knowledge_id": vs,
            "retrieval_setting": {"top_k": 3, "score_threshold": 0.0},
            "metadata_condition": cond,
        },
    )
    assert [rec["title"] for rec in r.json()["records"]] == ["billing.md"]
    r = await http.post("/retrieval", json={**body, "knowledge_id": "nope"})
    assert r.status_code == 404 and r.json() == {
        "error_code": 2001,
        "error_msg": "The knowledge does not exist",
    }
    r = await http.post("/retrieval", json=body, headers={"Authorization": "Token abc"})
    assert r.status_code == 403 and r.json()["error_code"] == 1001
    r = await http.post("/retrieval", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and r.json()["error_code"] == 1002
    r = await http.post("/retrieval", json={"query": "x"})
    assert r.status_code == 400 and "error_code" in r.json()


async def test_every_threshold_reads_the_absolute_score(stack: Any) -> None:
    """Dify's usual 0.5, ranking_options and a profile's threshold keep an exact answer
    and drop the rest, whatever else the store holds."""
    http, ids, vs = stack
    q = "How do I reset the water pump?"
    body = {
        "knowledge_id": vs,
        "query": q,
        "retrieval_setting": {"top_k": 3, "score_threshold": 0.5},
    }
    records = (await http.post("/retrieval", json=body)).json()["records"]
    assert [r["title"] for r in records] == ["pump.md"] and records[0]["score"] >= 0.5
    one = (
        await http.post(f"/v1/vector_stores/{vs}/search", json={"query": q, "max_num_results": 1})
    ).json()
    many = (
        await http.post(f"/v1/vector_stores/{vs}/search", json={"query": q, "max_num_results": 20})
    ).json()
    assert one["data"][0]["score"] == many["data"][0]["score"] >= 0.5
    assert all(d["score"] < 0.2 for d in many["data"][1:])
    kept = (
        await http.post(
            f"/v1/vector_stores/{vs}/search",
            json={"query": q, "ranking_options": {"score_threshold": 0.5}},
        )
    ).json()["data"]
    assert [d["file_id"] for d in kept] == [ids["pump.md"]]
    sdk = _sdk(http)
    hit = await sdk.chat.completions.create(
        model="half-bot", messages=[{"role": "user", "content": q}], max_tokens=4
    )
    assert [c["file_id"] for c in (hit.model_extra or {})["citations"]] == [ids["pump.md"]]
    miss = await sdk.chat.completions.create(
        model="half-bot",
        messages=[{"role": "user", "content": "What is the capital of Peru?"}],
        max_tokens=4,
    )
    assert (miss.model_extra or {})["citations"] == []
    assert miss.choices[0].message.content == (
        "I could not find anything about that in the knowledge base."
    )


async def test_open_webui_shapes(stack: Any) -> None:
    """What Open WebUI reads: /v1/models data[].id, float embeddings, external rerank
    results[].index/relevance_score, SSE chunks with choices[].delta.content."""
    http, _, _ = stack
    models = (await http.get("/v1/models")).json()
    assert models["object"] == "list" and all("id" in m for m in models["data"])
    emb = (await http.post("/v1/embeddings", json={"model": "minilm", "input": ["a", "b"]})).json()
    assert (
        isinstance(emb["data"][0]["embedding"][0], float)
        and len(emb["data"][0]["embedding"]) == 384
    )
    rr = (
        await http.post(
            "/v1/rerank",
            json={
                "model": "minilm",
                "query": "pump",
                "documents": ["pump reset", "museum"],
                "top_n": 2,
            },
        )
    ).json()
    assert {"index", "relevance_score"} <= set(rr["results"][0]) and rr["results"][0]["index"] == 0
    async with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "manuals-bot",
            "stream": True,
            "max_tokens": 3,
            "messages": [{"role": "user", "content": "pump?"}],
        },
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in resp.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    await asyncio.sleep(0)


def test_search_queries_join_the_previous_turn_only_for_follow_ups() -> None:
    from rag.catalog import ProfileCatalog
    from rag.config import RagSettings
    from rag.service import RagService

    rag = RagService(None, ProfileCatalog([]), RagSettings())  # type: ignore[arg-type]
    pump = "Tell me about the water pump in the basement."
    assert rag.search_queries([pump, "How long do I hold it?"]) == [
        "How long do I hold it?",
        "Tell me about the water pump in the basement. How long do I hold it?",
    ]
    standalone = "When does the city museum open on public holidays in summer?"
    assert rag.search_queries([pump, standalone]) == [standalone]
    assert rag.search_queries(["那个怎么复位呢", "水泵"]) == [
        "水泵",
        "那个怎么复位呢 水泵",
    ]
