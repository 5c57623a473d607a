"""Pass-through to a server that is not this project, and the error paths: 4xx passed on,
5xx retried, a first-byte timeout, every upstream down, a client that goes away."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from mcp.client import Client

from gateway.app import create_app
from gateway.compose import mcp_server
from gateway.settings import Settings
from tests.conftest import FAKE_MODELS, asgi_client, free_port, start_server, stop_server
from tests.remote.conftest import sdk_over
from tests.remote.openai_shaped import DIMS, OpenAIShaped, Running


@pytest.fixture(scope="module")
def upstream() -> Iterator[Running]:
    with Running(OpenAIShaped(slow_s=5.0)) as running:
        yield running


def _remote(mid: str, kind: str, urls: list[Any], **options: Any) -> dict[str, Any]:
    opts = {"upstreams": urls, "health_interval_s": 0.5, "eject_base_s": 1.0, **options}
    return {"id": mid, "kind": kind, "engine": "remote", "options": opts}


def _settings(tmp: Path, models: list[dict[str, Any]], **extra: Any) -> Settings:
    return Settings(models=models, load_in_background=False, log_json=False, data_dir=tmp, **extra)


@pytest.fixture
async def gw(upstream: Running, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    tei = {"url": f"http://127.0.0.1:{upstream.port}", "api": "tei"}
    models = [
        _remote("vllm-chat", "chat", [upstream.url], upstream_model="echo"),
        _remote(
            "slow-chat", "chat", [upstream.url], upstream_model="slow", first_byte_timeout_s=0.5
        ),
        _remote("bad-chat", "chat", [upstream.url], upstream_model="bad"),
        _remote(
            "huge-chat",
            "chat",
            [upstream.url],
            upstream_model="huge",
            max_response_bytes=16384,
            max_event_bytes=8192,
        ),
        _remote("tei-embed", "embedding", [upstream.url], upstream_model="embed"),
        _remote("tei-rerank", "rerank", [tei]),
        *FAKE_MODELS,
    ]
    async with asgi_client(create_app(_settings(tmp_path, models))) as c:
        yield c


async def test_chat_and_completions_pass_through_with_extras_left_out(
    gw: httpx.AsyncClient, upstream: Running
) -> None:
    sdk = sdk_over(gw)
    out = await sdk.chat.completions.create(
        model="vllm-chat",
        messages=[{"role": "user", "content": "ping"}],
        extra_body={"top_k": 5, "min_p": 0.1},
    )
    assert out.choices[0].message.content == "echo: ping"
    assert out.model == "vllm-chat" and out.usage is not None and out.usage.total_tokens == 7
    path, sent = upstream.app.seen.requests[-1]
    assert path == "/v1/chat/completions" and sent["model"] == "echo"
    assert "top_k" not in sent and "knowledge" not in sent  # our extras stay here
    assert sent["min_p"] == 0.1  # a field this server does not know still reaches it
    stream = await sdk.chat.completions.create(
        model="vllm-chat",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert all(c.model == "vllm-chat" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three" and chunks[-1].usage is not None
    traced = await gw.post(
        "/v1/chat/completions",
        json={"model": "vllm-chat", "messages": [{"role": "user", "content": "t"}]},
        headers={"X-Request-Id": "trace-0042"},
    )
    assert traced.headers["x-request-id"] == "trace-0042"
    assert upstream.app.seen.headers[-1]["x-request-id"] == "trace-0042"  # one id, both logs
    done = await sdk.completions.create(model="vllm-chat", prompt="abc")
    assert done.choices[0].text == "echo: abc" and done.model == "vllm-chat"
    with pytest.raises(openai.BadRequestError) as err:  # a State needs this project's worker
        await sdk.chat.completions.create(
            model="vllm-chat",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"state": "s"},
        )
    assert err.value.code == "unsupported_parameter"
    # The Responses API too: it goes upstream as a streamed chat completion.
    answered = await sdk.responses.create(model="vllm-chat", input="hi there")
    assert answered.output_text == "echo: hi there" and answered.status == "completed"
    assert answered.usage is not None and answered.usage.total_tokens > 0
    _, sent = upstream.app.seen.requests[-1]
    assert sent["stream"] is True and sent["messages"][-1]["content"] == "hi there"
    listed = (await gw.get("/v1/models/vllm-chat")).json()
    assert listed["max_input_tokens"] == 2048  # the upstream's max_model_len
    assert listed["details"]["upstreams"][0]["extras"] is False


async def test_embeddings_and_tei_rerank_pass_through(gw: httpx.AsyncClient) -> None:
    sdk = sdk_over(gw)
    b64 = await sdk.embeddings.create(model="tei-embed", input=["alpha", "beta"])
    flt = await sdk.embeddings.create(model="tei-embed", input="alpha", encoding_format="float")
    assert len(flt.data[0].embedding) == DIMS and b64.model == "tei-embed"
    np.testing.assert_allclose(b64.data[0].embedding, flt.data[0].embedding, atol=1e-6)
    cut = await gw.post(
        "/v1/embeddings",
        json={"model": "tei-embed", "input": "alpha", "dimensions": 4, "encoding_format": "base64"},
    )
    vec = np.frombuffer(base64.b64decode(cut.json()["data"][0]["embedding"]), dtype="<f4")
    # The upstream ignored `dimensions`: the gateway cut and renormalised.
    assert vec.shape == (4,) and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    ranked = await gw.post(
        "/v1/rerank",
        json={
            "model": "tei-rerank",
            "query": "red apple",
            "documents": ["green pear", "a red apple", "red car"],
            "return_documents": True,
        },
    )
    assert ranked.status_code == 200
    results = ranked.json()["results"]
    assert [r["index"] for r in results] == [1, 2, 0]
    assert results[0]["relevance_score"] == pytest.approx(1.0)
    assert results[0]["document"]["text"] == "a red apple"


async def test_upstream_4xx_passes_through_and_first_byte_timeout_is_clear(
    gw: httpx.AsyncClient,
) -> None:
    bad = await gw.post(
        "/v1/chat/completions",
        json={"model": "bad-chat", "messages": [{"role": "user", "content": "x"}]},
    )
    assert bad.status_code == 400
    err = bad.json()["error"]
    assert err["message"] == "This model's maximum context length is 2048 tokens."
    assert err["type"] == "BadRequestError"
    started = time.monotonic()
    slow = await gw.post(
        "/v1/chat/completions",
        json={"model": "slow-chat", "messages": [{"role": "user", "content": "x"}]},
    )
    assert time.monotonic() - started < 3
    assert slow.status_code == 504
    err = slow.json()["error"]
    assert err["code"] == "upstream_timeout" and "first_byte_timeout_s" in err["message"]


async def test_an_oversized_answer_or_stream_event_is_refused_while_it_arrives(
    gw: httpx.AsyncClient,
) -> None:
    ask = {"model": "huge-chat", "messages": [{"role": "user", "content": "x"}]}
    big = await gw.post("/v1/chat/completions", json=ask)
    assert big.status_code == 502
    err = big.json()["error"]
    assert err["code"] == "upstream_response_too_large" and "max_response_bytes" in err["message"]
    async with gw.stream("POST", "/v1/chat/completions", json={**ask, "stream": True}) as r:
        lines = [line async for line in r.aiter_lines() if line]
    assert "upstream_event_too_large" in lines[-1] and "max_event_bytes" in lines[-1]
    assert sum(len(line) for line in lines) < 8192  # the oversized event never reached us


async def test_every_upstream_down_is_a_503_with_retry_after(tmp_path: Path) -> None:
    dead = [f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1"]
    models = [_remote("gone", "chat", dead), _remote("gone-embed", "embedding", dead, dimensions=8)]
    async with asgi_client(create_app(_settings(tmp_path, models))) as gw:
        r = await gw.post(
            "/v1/chat/completions",
            json={"model": "gone", "messages": [{"role": "user", "content": "x"}], "stream": True},
        )
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "upstreams_unavailable"
        e = await gw.post("/v1/embeddings", json={"model": "gone-embed", "input": "x"})
        assert e.status_code == 503 and "retry-after" in e.headers
        listed = (await gw.get("/v1/models/gone")).json()
        assert not any(u["healthy"] for u in listed["details"]["upstreams"])
        assert "last_error" in listed["details"]["upstreams"][0]
        assert (await gw.get("/health")).status_code == 503


async def test_a_5xx_before_the_first_byte_is_retried_and_the_upstream_ejected(
    upstream: Running, tmp_path: Path
) -> None:
    with Running(OpenAIShaped(fail=True)) as broken:
        models = [
            _remote(
                "pair",
                "chat",
                [broken.url, upstream.url],
                upstream_model="echo",
                affinity="off",
                eject_after=2,
                eject_base_s=30,
            )
        ]
        async with asgi_client(create_app(_settings(tmp_path, models))) as gw:
            sdk = sdk_over(gw)

            async def ask(i: int) -> None:
                out = await sdk.chat.completions.create(
                    model="pair", messages=[{"role": "user", "content": f"n{i}"}]
                )
                assert out.choices[0].message.content == f"echo: n{i}"  # retried elsewhere

            i = 0
            while len(broken.app.seen.requests) < 2 and i < 60:  # ties are broken at random
                await ask(i)
                i += 1
            tried = len(broken.app.seen.requests)
            assert tried == 2
            for k in range(10):  # ejected: nothing more reaches it
                await ask(100 + k)
            assert len(broken.app.seen.requests) == tried
            ups = (await gw.get("/v1/models/pair")).json()["details"]["upstreams"]
            assert [u["healthy"] for u in ups] == [False, True]
            assert ups[0]["ejected_for_s"] > 20
            m = (await gw.get("/metrics")).text
            assert (
                f'rwkv_rag_upstream_errors_total{{model="pair",upstream="{broken.url}"}} {float(tried)}'
                in m
            )


async def test_knowledge_profiles_and_rag_work_on_a_remote_model(
    upstream: Running, tmp_path: Path
) -> None:
    models = [_remote("vllm-chat", "chat", [upstream.url], upstream_model="echo"), *FAKE_MODELS]
    profile = {
        "id": "handbook-bot",
        "model": "vllm-chat",
        "vector_store_ids": ["handbook"],
        "score_threshold": 0,
    }
    app = create_app(_settings(tmp_path, models, profiles=[profile]))
    async with asgi_client(app) as gw:
        store = (await gw.post("/v1/vector_stores", json={"name": "handbook"})).json()
        f = await gw.post(
            "/v1/files",
            files={"file": ("h.txt", b"Vacation requests go to Ines Varga.\n", "text/plain")},
            data={"purpose": "assistants"},
        )
        await gw.post(f"/v1/vector_stores/{store['id']}/files", json={"file_id": f.json()["id"]})
        for _ in range(100):
            got = (await gw.get(f"/v1/vector_stores/{store['id']}/files/{f.json()['id']}")).json()
            if got["status"] != "in_progress":
                break
            time.sleep(0.05)
        out = await gw.post(
            "/v1/chat/completions",
            json={
                "model": "vllm-chat",
                "messages": [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": "Who takes vacation requests?"},
                ],
                "knowledge": {"vector_store_ids": [store["id"]], "score_threshold": 0},
            },
        )
        body = out.json()
        assert out.status_code == 200, body
        assert body["citations"][0]["file_id"] == f.json()["id"]
        _, sent = upstream.app.seen.requests[-1]
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["system", "system", "user"]  # sources right before the question
        assert "Ines Varga" in sent["messages"][1]["content"]
        assert "knowledge" not in sent
        # A knowledge profile over the remote model, through the SDK and through MCP `ask`.
        by_profile = await sdk_over(gw).chat.completions.create(
            model="handbook-bot",
            messages=[{"role": "user", "content": "Who takes vacation requests?"}],
        )
        assert by_profile.model == "handbook-bot"
        assert by_profile.model_extra and by_profile.model_extra["citations"]
        assert upstream.app.seen.requests[-1][1]["model"] == "echo"
        # file_search in the Responses API: the gateway searches, the upstream answers.
        searched = await sdk_over(gw).responses.create(
            model="vllm-chat",
            input="Who takes vacation requests?",
            tools=[{"type": "file_search", "vector_store_ids": [store["id"]]}],
            include=["file_search_call.results"],
        )
        kinds = [item.type for item in searched.output]
        assert kinds == ["file_search_call", "message"]
        assert "Ines Varga" in searched.output[0].results[0].text  # type: ignore[union-attr]
        assert "Ines Varga" in str(upstream.app.seen.requests[-1][1]["messages"])
        ctx = app.state.ctx
        async with Client(mcp_server(ctx)) as mcp:
            res = await mcp.call_tool("ask", {"question": "Who takes vacation requests?"})
        assert not res.is_error
        assert res.structured_content["answer"] == "echo: Who takes vacation requests?"
        assert res.structured_content["citations"][0]["filename"] == "h.txt"


def test_a_client_that_goes_away_cancels_the_upstream_request(
    upstream: Running, tmp_path: Path
) -> None:
    """A real gateway process: the client gives up on a slow non-streamed answer, and the
    upstream sees its request closed long before it would have answered."""
    config = {
        "models": [_remote("slow-chat", "chat", [upstream.url], upstream_model="slow")],
        "load_in_background": False,
    }
    server = start_server(config, tmp_path)
    try:
        before = upstream.app.seen.disconnected
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{server.base_url}/v1/chat/completions",
                json={"model": "slow-chat", "messages": [{"role": "user", "content": "x"}]},
                timeout=httpx.Timeout(5, read=0.5),
            )
        deadline = time.monotonic() + 3
        while upstream.app.seen.disconnected == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream.app.seen.disconnected == before + 1
        assert time.monotonic() < deadline  # well before the upstream's 5 s
        # The same for a stream given up before its first event.
        with (
            pytest.raises(httpx.ReadTimeout),
            httpx.stream(
                "POST",
                f"{server.base_url}/v1/chat/completions",
                json={
                    "model": "slow-chat",
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": True,
                },
                timeout=httpx.Timeout(5, read=0.5),
            ) as r,
        ):
            r.read()
        deadline = time.monotonic() + 3
        while upstream.app.seen.disconnected == before + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream.app.seen.disconnected == before + 2
    finally:
        stop_server(server)


async def test_upstream_keys_are_sent_and_a_refused_key_is_the_gateways_problem(
    tmp_path: Path,
) -> None:
    with Running(OpenAIShaped(key="sk-upstream")) as guarded:
        models = [
            _remote(
                "keyed",
                "chat",
                [{"url": guarded.url, "api_key": "sk-upstream"}],
                upstream_model="echo",
            ),
            _remote("unkeyed", "chat", [guarded.url], upstream_model="echo"),
        ]
        async with asgi_client(create_app(_settings(tmp_path, models))) as gw:
            ok = await gw.post(
                "/v1/chat/completions",
                json={"model": "keyed", "messages": [{"role": "user", "content": "k"}]},
            )
            assert (
                ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "echo: k"
            )
            listed = (await gw.get("/v1/models/unkeyed")).json()["details"]["upstreams"][0]
            assert listed["healthy"] is False and "401" in listed["last_error"]
            # The client's own key is not at fault: not a 401 for it, but the upstream down.
            refused = await gw.post(
                "/v1/chat/completions",
                json={"model": "unkeyed", "messages": [{"role": "user", "content": "k"}]},
            )
            assert refused.status_code == 503
            assert "sk-upstream" not in str((await gw.get("/v1/models")).json())
