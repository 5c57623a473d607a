"""The quota check at the door of every /v1 route, after authentication: counted by the
request's project (never its key), answered 429 in the OpenAI shape when over a limit,
and the ``x-ratelimit-*`` headers on every answer of a limited project."""

from __future__ import annotations

import json
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from core.tenancy import Principal
from gateway.quotas.service import QuotaService, Refusal

__all__ = ["QuotaMiddleware"]


def _content_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return max(0, int(value))
            except ValueError:
                return 0
    return 0


async def _refuse(send: Send, refusal: Refusal, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(
        {
            "error": {
                "message": refusal.message,
                "type": refusal.code,
                "param": None,
                "code": refusal.code,
            }
        }
    ).encode()
    extra = list(headers)
    if refusal.retry_after is not None:
        extra.append((b"retry-after", str(refusal.retry_after).encode()))
    else:
        # The OpenAI SDKs honour this: retrying cannot help until files are deleted.
        extra.append((b"x-should-retry", b"false"))
    start: Any = {
        "type": "http.response.start",
        "status": 429,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ],
    }
    await send(start)
    end: Any = {"type": "http.response.body", "body": body}
    await send(end)


class QuotaMiddleware:
    """Runs inside the auth middleware (it reads the principal) and the JSON guard (it
    reads the body's ``stream`` and ``store`` the guard noted)."""

    def __init__(self, app: ASGIApp, quotas: QuotaService | None) -> None:
        self.app = app
        self.quotas = quotas

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        quotas = self.quotas
        path = str(scope.get("path", ""))
        state = scope.get("state") or {}
        principal = state.get("principal")
        if (
            scope["type"] != ScopeType.HTTP
            or quotas is None
            or not quotas.enabled
            or not path.startswith("/v1/")
            or not isinstance(principal, Principal)
        ):
            await self.app(scope, receive, send)
            return
        admission = await quotas.admit(
            principal.project,
            path.rstrip("/"),
            method=str(scope.get("method", "")),
            stream=state.get("body_stream") is True,
            store=state.get("body_store") is not False,
            upload_bytes=_content_length(scope),
        )
        if admission.refusal is not None:
            await _refuse(send, admission.refusal, admission.headers)
            return
        headers = admission.headers

        async def send_wrapper(message: Message) -> None:
            if headers and message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            admission.release()
