"""POST /v1/chat/completions and POST /v1/completions (JSON or SSE)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody
from litestar.response import Stream

from gateway.schemas.chat import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
)
from gateway.schemas.common import ErrorResponse
from gateway.state import ctx_of

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def key_id(request: Request[Any, Any, Any]) -> str | None:
    """The caller's key digest (set by the auth middleware; None without keys)."""
    found = request.scope.get("state", {}).get("key_id")
    return str(found) if found else None


def _respond(result: Any) -> Response[Any]:
    if hasattr(result, "__aiter__"):
        return Stream(result, media_type="text/event-stream", headers=_SSE_HEADERS)
    return Response(result, status_code=200)


@post(
    "/v1/chat/completions",
    status_code=200,
    responses={
        200: ResponseSpec(ChatCompletion, description="A chat completion, or SSE chunks"),
        400: ResponseSpec(ErrorResponse, description="Invalid request"),
    },
)
async def chat_completions(
    request: Request[Any, Any, Any], state: State, data: JSONBody[ChatCompletionRequest]
) -> Response[Any]:
    return _respond(await ctx_of(state).chat.chat(data, owner=key_id(request)))


@post(
    "/v1/completions",
    status_code=200,
    responses={
        200: ResponseSpec(Completion, description="A text completion, or SSE chunks"),
        400: ResponseSpec(ErrorResponse, description="Invalid request"),
    },
)
async def completions(
    request: Request[Any, Any, Any], state: State, data: JSONBody[CompletionRequest]
) -> Response[Any]:
    return _respond(await ctx_of(state).chat.complete(data, owner=key_id(request)))


routes = [chat_completions, completions]
