"""ASGI middleware: Bearer auth (constant time) and request metrics."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import Metrics

__all__ = ["AuthMiddleware", "MetricsMiddleware"]

_OPEN_PATHS = frozenset({"/health"})


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


async def _dify_denied(send: Send, header: bytes | None) -> None:
    """Dify's external-knowledge API has its own error shape and codes."""
    well_formed = header is not None and header.lower().startswith(b"bearer ") and header[7:]
    body = (
        {"error_code": 1002, "error_msg": "Authorization failed"}
        if well_formed
        else {
            "error_code": 1001,
            "error_msg": "Invalid Authorization header format. Expected 'Bearer <api-key>' format.",
        }
    )
    await _send_json(send, 403, body)


async def _send_json(
    send: Send, status: int, payload: dict[str, Any], extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload).encode()
    start: Any = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ],
    }
    await send(start)
    end: Any = {"type": "http.response.body", "body": body}
    await send(end)


class AuthMiddleware:
    """Every route but /health needs ``Authorization: Bearer <key>`` when keys are set."""

    def __init__(self, app: ASGIApp, api_keys: list[str]) -> None:
        self.app = app
        # Compare fixed-length digests so neither length nor content leaks through timing.
        self._digests = [_digest(k.encode()) for k in api_keys]

    def authorized(self, header: bytes | None) -> bool:
        if header is None:
            return False
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        candidate = _digest(token.strip())
        ok = False
        for digest in self._digests:
            ok |= hmac.compare_digest(candidate, digest)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self._digests:
            await self.app(scope, receive, send)
            return
        if scope["path"].rstrip("/") in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        if self.authorized(header):
            await self.app(scope, receive, send)
            return
        if scope["path"].rstrip("/") == "/retrieval":
            await _dify_denied(send, header)
            return
        message = (
            "you didn't provide an API key; send it as 'Authorization: Bearer <key>'"
            if header is None
            else "incorrect API key provided"
        )
        error = {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        await _send_json(send, 401, {"error": error}, [(b"www-authenticate", b"Bearer")])


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe_request(
                _route(scope), str(scope.get("method", "")), status, time.perf_counter() - started
            )


def _route(scope: Any) -> str:
    template = scope.get("path_template")
    if template:
        return str(template)
    path = str(scope.get("path", ""))
    if path.startswith("/mcp"):
        return "/mcp"
    return "unmatched"
