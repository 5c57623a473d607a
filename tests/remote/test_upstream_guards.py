"""Upstreams that would mislead the gateway: a url that leads back to the gateway itself
(a loop), a redirect to another host, and a stream request answered with something that
is not a stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import asgi_client, free_port, start_server, stop_server
from tests.remote.openai_shaped import OpenAIShaped, Running, _completion, _json

ASK = {"model": "m", "messages": [{"role": "user", "content": "x"}]}


class Redirecting(OpenAIShaped):
    """Lists its models like any upstream, and answers every POST with a redirect."""

    def __init__(self, to: str) -> None:
        super().__init__()
        self.to = to

    async def _route(
        self, path: str, method: str, data: dict[str, Any], receive: Any, send: Any
    ) -> None:
        if method != "POST":
            return await super()._route(path, method, data, receive, send)
        await send(
            {
                "type": "http.response.start",
                "status": 307,
                "headers": [(b"location", f"{self.to}{path}".encode()), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


class JsonForStreams(OpenAIShaped):
    """Answers a stream request with a whole JSON completion, as a server without
    streaming would; ``labelled`` sends it as ``text/event-stream`` all the same."""

    def __init__(self, *, labelled: bool = False) -> None:
        super().__init__()
        self.labelled = labelled

    async def _route(
        self, path: str, method: str, data: dict[str, Any], receive: Any, send: Any
    ) -> None:
        if method != "POST":
            return await super()._route(path, method, data, receive, send)
        answer = _completion(str(data.get("model")), "not a stream", "chat")
        if not (self.labelled and data.get("stream")):
            return await _json(send, 200, answer)
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


def _settings(tmp: Path, url: str) -> Settings:
    opts = {"upstreams": [url], "upstream_model": "echo", "retries": 0}
    models = [{"id": "m", "kind": "chat", "engine": "remote", "options": opts}]
    return Settings(models=models, load_in_background=False, log_json=False, data_dir=tmp)


@pytest.fixture(scope="module")
def other_host() -> Iterator[Running]:
    with Running(OpenAIShaped()) as running:
        yield running


async def test_a_redirect_to_another_host_is_a_502_and_never_followed(
    other_host: Running, tmp_path: Path
) -> None:
    with Running(Redirecting(other_host.url)) as redirecting:
        async with asgi_client(create_app(_settings(tmp_path, redirecting.url))) as gw:
            for stream in (False, True):
                r = await gw.post("/v1/chat/completions", json={**ASK, "stream": stream})
                assert r.status_code == 502
                err = r.json()["error"]
                assert err["code"] == "upstream_redirect" and err["type"] == "server_error"
                assert "307" in err["message"] and "127.0.0.1" in err["message"]
        assert [p for p, _ in redirecting.app.seen.requests] == ["/v1/chat/completions"] * 2
    assert other_host.app.seen.requests == []


async def test_a_stream_request_answered_with_json_is_a_502_before_any_byte(
    tmp_path: Path,
) -> None:
    with Running(JsonForStreams()) as upstream:
        async with asgi_client(create_app(_settings(tmp_path, upstream.url))) as gw:
            r = await gw.post("/v1/chat/completions", json={**ASK, "stream": True})
            assert r.status_code == 502
            assert r.headers["content-type"].startswith("application/json")
            err = r.json()["error"]
            assert err["code"] == "upstream_bad_stream" and "application/json" in err["message"]
            # The same upstream still serves requests that are not streams.
            plain = await gw.post("/v1/chat/completions", json=ASK)
            assert plain.status_code == 200
            assert "not a stream" in plain.text


async def test_a_stream_labelled_sse_whose_first_bytes_are_not_an_event_is_a_502(
    tmp_path: Path,
) -> None:
    with Running(JsonForStreams(labelled=True)) as upstream:
        async with asgi_client(create_app(_settings(tmp_path, upstream.url))) as gw:
            r = await gw.post("/v1/chat/completions", json={**ASK, "stream": True})
            assert r.status_code == 502
            err = r.json()["error"]
            assert err["code"] == "upstream_bad_stream" and "not a stream" not in r.text


async def test_a_loop_through_too_many_gateways_is_refused_before_forwarding(
    other_host: Running, tmp_path: Path
) -> None:
    async with asgi_client(create_app(_settings(tmp_path, other_host.url))) as gw:
        before = len(other_host.app.seen.requests)
        chain = ",".join(f"gw{i}" for i in range(9))
        r = await gw.post("/v1/chat/completions", json=ASK, headers={"X-RWKV-RAG-Hops": chain})
        assert r.status_code == 508
        assert r.json()["error"]["code"] == "loop_detected"
        assert "max_hops" in r.json()["error"]["message"]
        assert len(other_host.app.seen.requests) == before
        ok = await gw.post("/v1/chat/completions", json=ASK, headers={"X-RWKV-RAG-Hops": "a,b"})
        assert ok.status_code == 200
        sent = other_host.app.seen.headers[-1]["x-rwkv-rag-hops"].split(",")
        assert sent[:2] == ["a", "b"] and len(sent) == 3 and sent[2] not in ("a", "b")


def test_a_gateway_whose_upstream_is_itself_answers_508_at_once(tmp_path: Path) -> None:
    port = free_port()
    self_url = f"http://127.0.0.1:{port}/v1"
    opts = {"upstreams": [self_url], "upstream_model": "loop", "health_interval_s": 1}
    config = {
        "models": [{"id": "loop", "kind": "chat", "engine": "remote", "options": opts}],
        "log_json": False,
    }
    server = start_server(config, tmp_path, port=port)
    try:
        started = time.monotonic()
        for stream in (False, True):
            r = httpx.post(
                f"{server.base_url}/v1/chat/completions",
                json={**ASK, "model": "loop", "stream": stream},
                timeout=30,
            )
            assert r.status_code == 508, r.text
            assert r.json()["error"]["code"] == "loop_detected"
        assert time.monotonic() - started < 30
    finally:
        stop_server(server)
    served = server.log.read_text().count("POST /v1/chat/completions")
    assert served == 4  # each ask: the client's request and the one that came back
