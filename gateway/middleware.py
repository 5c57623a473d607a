"""ASGI middleware: request ids and the access log, Bearer auth (constant time), request
metrics, and a guard that refuses over-deep JSON bodies before any handler decodes them."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from core.context import HOPS_HEADER, hops
from core.tenancy import Principal, valid_project
from gateway.auth import PROJECT_HEADER, KeyTable
from gateway.jsonguard import json_depth
from gateway.logging import request_id
from gateway.metrics import Metrics

__all__ = ["AuthMiddleware", "JsonGuardMiddleware", "MetricsMiddleware", "RequestLogMiddleware"]

access_log = logging.getLogger("gateway.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_HOPS = HOPS_HEADER.encode()

_OPEN_PATHS = frozenset({"/health"})


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
    """Every route but /health needs ``Authorization: Bearer <key>`` when keys are set; each
    request then runs as the key's principal (``scope["state"]["principal"]``)."""

    def __init__(self, app: ASGIApp, keys: KeyTable) -> None:
        self.app = app
        self.keys = keys

    def authorized(self, header: bytes | None) -> Principal | None:
        if header is None:
            return None
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        return self.keys.resolve(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if not self.keys.enabled:
            await self._as(self.keys.keyless(), headers, scope, receive, send)
            return
        path = scope["path"]
        # The console's static page and assets load without a key (it then asks for one;
        # every API call it makes needs the key like any other client's).
        if (
            path.rstrip("/") in _OPEN_PATHS
            or path == "/"
            or path == "/ui"
            or path.startswith("/ui/")
        ):
            await self.app(scope, receive, send)
            return
        header = headers.get(b"authorization")
        principal = self.authorized(header)
        if principal is not None:
            await self._as(principal, headers, scope, receive, send)
            return
        if scope["path"].rstrip("/") == "/retrieval":
            await _dify_denied(send, header)
            return
        message = (
            "you didn't provide an API key; send it as 'Authorization: Bearer <key>'"
            if header is None
            else "incorrect API key provided"
        )
        await _send_json(
            send,
            401,
            _error(message, "invalid_api_key"),
            [(b"www-authenticate", b"Bearer")],
        )

    async def _as(
        self,
        principal: Principal,
        headers: dict[bytes, bytes],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        wanted = headers.get(PROJECT_HEADER)
        if wanted is not None and wanted.strip():
            name = wanted.decode("latin-1").strip()
            if principal.is_admin and valid_project(name):
                principal = principal.acting_as(name)
            elif name != principal.project:
                # The same answer for any other name: it never confirms a project exists.
                error = _error(
                    "the OpenAI-Project header does not match this API key's project",
                    "mismatched_project",
                )
                await _send_json(send, 401, error)
                return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        if principal.key_id:
            state["key_id"] = principal.key_id
        await self.app(scope, receive, send)


def _project(scope: Any) -> str | None:
    """The project the request ran as (the auth middleware, inside, put it in the shared
    scope state); None for a request refused before that or on an open route."""
    found = (scope.get("state") or {}).get("principal")
    return found.project if isinstance(found, Principal) else None


class MetricsMiddleware:
    """Requests by route, method, status and project. Projects come from the
    configuration (``projects``); any other name an admin narrows to counts as ``other``,
    so the label's values stay bounded."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, projects: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.projects = projects

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
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
            project = _project(scope)
            label = "" if project is None else project if project in self.projects else "other"
            self.metrics.observe_request(
                _route(scope),
                str(scope.get("method", "")),
                status,
                time.perf_counter() - started,
                label,
            )


def _route(scope: Any) -> str:
    template = scope.get("path_template")
    if template:
        return str(template)
    path = str(scope.get("path", ""))
    if path.startswith("/mcp"):
        return "/mcp"
    return "unmatched"


class _ModelOnly(msgspec.Struct):
    model: str | None = None
    # Read by the quota check: a streaming answer holds a stream slot, a stored one uses
    # storage. Any type: a wrong one is the handler's to report.
    stream: Any = None
    store: Any = None


def _error(message: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


class JsonGuardMiddleware:
    """Buffers a JSON body (up to the body limit), refuses one nested deeper than
    ``max_depth`` with a 400 naming the limit, and notes its ``model`` for the access log;
    then replays it to the app. Uploads (multipart, octet streams) pass untouched."""

    def __init__(self, app: ASGIApp, max_depth: int, max_bytes: int) -> None:
        self.app = app
        self.max_depth = max_depth
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        ctype = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                ctype = value.lower()
                break
        if ctype.startswith((b"multipart/", b"application/octet-stream")):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            more = bool(message.get("more_body"))
            if size > self.max_bytes:
                await _send_json(
                    send,
                    413,
                    _error(
                        f"the request body is larger than {self.max_bytes} bytes "
                        "(limits.max_body_bytes)",
                        "request_too_large",
                    ),
                )
                return
        body = b"".join(chunks)
        if body and json_depth(body) > self.max_depth:
            await _send_json(
                send,
                400,
                _error(
                    f"the JSON body nests deeper than {self.max_depth} levels "
                    "(limits.max_json_depth)",
                    "json_too_deep",
                ),
            )
            return
        if body[:1] == b"{":
            # A body that does not decode is the handler's to report, in full.
            with contextlib.suppress(msgspec.DecodeError, RecursionError):
                noted = msgspec.json.decode(body, type=_ModelOnly)
                state = scope.setdefault("state", {})
                state["access_model"] = noted.model
                state["body_stream"] = noted.stream
                state["body_store"] = noted.store
        await self.app(
            scope,
            _replay([{"type": "http.request", "body": body, "more_body": False}], receive),
            send,
        )


def _replay(messages: list[Any], then: Receive | None = None) -> Receive:
    queue = list(messages)

    async def receive() -> Any:
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


class RequestLogMiddleware:
    """A request id for every request (a client's ``X-Request-Id`` when well formed), sent
    back as ``X-Request-Id``, set in every log record of the request, and one structured
    access-log line: method, path, status, duration, model, project, request id. Never the
    body, the query string or the key."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        rid = None
        seen: tuple[str, ...] = ()
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _REQUEST_ID.match(candidate) else None
            elif name == _HOPS:
                seen = tuple(h for h in value.decode("latin-1").replace(" ", "").split(",") if h)
        rid = rid or uuid.uuid4().hex
        token = request_id.set(rid)
        # The remote engines refuse a loop before they forward (they know max_hops).
        hops_token = hops.set(seen)
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            state = scope.get("state") or {}
            access_log.info(
                "%s %s %s",
                scope.get("method"),
                scope.get("path"),
                status,
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "model": state.get("access_model"),
                    "project": _project(scope),
                    "request_id": rid,
                },
            )
            request_id.reset(token)
            hops.reset(hops_token)


class ConsoleHeadersMiddleware:
    """The console's pages and assets (under ``prefix``) go out with its security headers
    (a strict CSP, no framing, no content-type sniffing). Static files are answered
    below the router, so the headers are added here, on the way out."""

    def __init__(
        self, app: ASGIApp, prefix: str = "/ui", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.headers = headers or []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != ScopeType.HTTP or not (path == "/" or path.startswith(self.prefix)):
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_wrapper)
