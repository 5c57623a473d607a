"""Render every error as ``{"error": {message, type, param, code}}`` in one place."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from core.errors import APIError, InsufficientStorageError, is_disk_full

__all__ = ["exception_handlers", "render_error"]

log = logging.getLogger("gateway.errors")

_STATUS_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_value"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("server_error", "service_unavailable"),
}
_DICT_KEY = re.compile(r"\[\.\.\.\].*$")
# The one case the decoder reports only in words: a missing field is named in the message
# (the structured key points at the object that lacks it).
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")


def render_error(
    status: int, message: str, type_: str, param: str | None, code: str | None
) -> Response[Any]:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Response(content=body, status_code=status, media_type="application/json")


def _api_error(_: Request[Any, Any, Any], exc: APIError) -> Response[Any]:
    if exc.status_code >= 500:
        log.warning("request failed: %s", exc.message, extra={"code": exc.code})
    response = render_error(exc.status_code, exc.message, exc.type, exc.param, exc.code)
    response.headers.update(exc.headers)
    return response


def _param(key: object) -> str | None:
    """The decoder's field path as OpenAI's ``param``: ``messages[0].role`` stays, a dict
    entry (``attributes[...]``) names its dict."""
    if not isinstance(key, str) or not key or key in ("body", "data"):
        return None
    return _DICT_KEY.sub("", key) or None


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    message = str(exc.detail)
    param: str | None = None
    extra = exc.extra
    if isinstance(extra, list) and extra and isinstance(extra[0], dict):
        first = extra[0]
        param = _param(first.get("key"))
        message = str(first.get("message") or message)
        missing = _MISSING.match(message)
        if missing:
            param = f"{param}.{missing.group(1)}" if param else missing.group(1)
            message = f"missing required field `{missing.group(1)}`"
        if param and " - at " not in message:
            message = f"{message} - at `{param}`"
    elif "JSON" in message or "decode" in message.lower():
        message = "the request body is not valid JSON"
    return render_error(400, message, "invalid_request_error", param, "invalid_value")


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    type_, code = _STATUS_TYPES.get(
        status, ("invalid_request_error" if status < 500 else "server_error", None)
    )
    if status >= 500:
        log.error("server error: %s", exc.detail)
        return render_error(status, "internal server error", type_, None, code)
    return render_error(status, str(exc.detail), type_, None, code)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if is_disk_full(exc):
        log.error("disk full: %s", exc)
        return _api_error(
            request,
            InsufficientStorageError(
                "the server's storage is full; nothing was stored (what was stored is kept)"
            ),
        )
    log.exception("unhandled error", exc_info=exc)
    return render_error(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "the server had an error while processing your request",
        "server_error",
        None,
        "internal_error",
    )


exception_handlers: ExceptionHandlersMap = {
    APIError: _api_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
