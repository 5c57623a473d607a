"""A minimal OpenAI-shaped server that is not this project: plain ASGI, the response shapes
of vLLM (models with `max_model_len`, errors as `{"object": "error", ...}`) and of Text
Embeddings Inference (`POST /rerank`, `GET /health`). It records what it was sent.

Models: `echo` answers "echo: <last user text>"; `slow` waits before its first byte;
`bad` answers 400 in vLLM's error shape. `fail=True` makes every POST a 500."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvicorn

DIMS = 8


@dataclass
class Seen:
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    disconnected: int = 0
    cancelled: int = 0


def _vector(text: str) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    v = np.random.default_rng(seed).standard_normal(DIMS)
    return [float(x) for x in v / np.linalg.norm(v)]


class OpenAIShaped:
    def __init__(self, *, fail: bool = False, slow_s: float = 5.0, key: str | None = None) -> None:
        self.fail = fail
        self.slow_s = slow_s
        self.key = key
        self.seen = Seen()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        data = json.loads(body) if body else {}
        if method == "POST":
            self.seen.requests.append((path, data))
            self.seen.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        if self.key is not None and auth != f"Bearer {self.key}":
            return await _json(send, 401, {"error": {"message": "bad key", "type": "auth"}})
        try:
            await self._route(path, method, data, receive, send)
        except asyncio.CancelledError:
            self.seen.cancelled += 1
            raise

    async def _route(
        self, path: str, method: str, data: dict[str, Any], receive: Any, send: Any
    ) -> None:
        if method == "GET" and path == "/v1/models":
            models = [
                {"id": "echo", "object": "model", "owned_by": "vllm", "max_model_len": 2048},
                {"id": "slow", "object": "model", "owned_by": "vllm", "max_model_len": 2048},
                {"id": "bad", "object": "model", "owned_by": "vllm", "max_model_len": 2048},
                {"id": "embed", "object": "model", "owned_by": "tei"},
                {"id": "huge", "object": "model", "owned_by": "vllm"},
            ]
            return await _json(send, 200, {"object": "list", "data": models})
        if method == "GET" and path == "/health":
            return await _json(send, 200, {})
        if self.fail:
            return await _json(send, 500, {"error": "worker crashed", "error_type": "Internal"})
        model = data.get("model")
        if model == "bad":
            return await _json(
                send,
                400,
                {
                    "object": "error",
                    "message": "This model's maximum context length is 2048 tokens.",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
            )
        if model == "slow":
            waiter = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({waiter}, timeout=self.slow_s)
            if done and waiter.result()["type"] == "http.disconnect":
                self.seen.disconnected += 1
                return None
            waiter.cancel()
        if model == "huge":  # an answer far larger than it should be
            return await self._huge(bool(data.get("stream")), send)
        if path == "/v1/chat/completions":
            return await self._chat(data, send)
        if path == "/v1/completions":
            text = f"echo: {data.get('prompt')}"
            return await _json(send, 200, _completion(model, text, "text_completion"))
        if path == "/v1/embeddings":
            return await self._embeddings(data, send)
        if path == "/rerank":  # TEI's own shape
            q = set(str(data["query"]).lower().split())
            scores = [
                (i, len(q & set(t.lower().split())) / (len(q) or 1))
                for i, t in enumerate(data["texts"])
            ]
            scores.sort(key=lambda p: -p[1])
            return await _json(send, 200, [{"index": i, "score": s} for i, s in scores])
        return await _json(send, 404, {"detail": "Not Found"})

    async def _chat(self, data: dict[str, Any], send: Any) -> None:
        last = next(m for m in reversed(data["messages"]) if m["role"] == "user")
        text = f"echo: {last['content']}"
        if not data.get("stream"):
            return await _json(send, 200, _completion(data["model"], text, "chat.completion"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "model": data["model"]}
        words = text.split(" ")
        events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
        for i, w in enumerate(words):
            piece = w if i == 0 else " " + w
            events.append({**base, "choices": [{"index": 0, "delta": {"content": piece}}]})
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (data.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "choices": [], "usage": _usage(len(words))})
        for ev in events:  # CRLF separators, as some servers send them
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: {json.dumps(ev)}\r\n\r\n".encode(),
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\r\n\r\n"})
        return None

    async def _huge(self, stream: bool, send: Any) -> None:
        if not stream:
            text = "x" * 100_000
            return await _json(send, 200, _completion("huge", text, "chat.completion"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        first = {"id": "c", "object": "chat.completion.chunk", "model": "huge", "choices": []}
        await send(
            {
                "type": "http.response.body",
                "body": f"data: {json.dumps(first)}\n\n".encode(),
                "more_body": True,
            }
        )
        for _ in range(50):  # one event that never ends
            await send({"type": "http.response.body", "body": b"x" * 4096, "more_body": True})
        await send({"type": "http.response.body", "body": b"\n\n"})
        return None

    async def _embeddings(self, data: dict[str, Any], send: Any) -> None:
        texts = data["input"] if isinstance(data["input"], list) else [data["input"]]
        rows = []
        for i, t in enumerate(texts):
            v = _vector(t)  # `dimensions` is ignored, as some servers do
            emb: Any = v
            if data.get("encoding_format") == "base64":
                emb = base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
            rows.append({"object": "embedding", "index": i, "embedding": emb})
        n = sum(len(t.split()) for t in texts)
        body = {
            "object": "list",
            "data": rows,
            "model": data["model"],
            "usage": {"prompt_tokens": n, "total_tokens": n},
        }
        return await _json(send, 200, body)


def _usage(n: int) -> dict[str, int]:
    return {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}


def _completion(model: str, text: str, kind: str) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
    if kind == "chat.completion":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": "x-1",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": _usage(len(text.split())),
    }


async def _json(send: Any, status: int, body: Any) -> None:
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


class Running:
    """The app served by uvicorn on a loopback port, in a thread of its own."""

    def __init__(self, app: OpenAIShaped) -> None:
        self.app = app
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.sock = sock
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
