"""POST /v1/chat/completions and POST /v1/completions (JSON or SSE)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
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
from gateway.state import ctx_of, principal_of

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def session_id(request: Request[Any, Any, Any]) -> str | None:
    """The client's X-Session-Id: a remote chat model keeps the conversation on one worker."""
    found = request.headers.get("x-session-id")
    return found[:256] if found else None


async def unless_disconnected(request: Request[Any, Any, Any], work: Awaitable[Any]) -> Any:
    """``work``'s result, or its cancellation when the client goes away first (a remote
    model's upstream request is closed with it; a local generation frees its slot)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task not in done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        # Nobody reads this answer; 499 is what the access log shows for it.
        return Response({"error": {"message": "client closed request"}}, status_code=499)
    return task.result()


async def _disconnected(request: Request[Any, Any, Any]) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _respond(result: Any) -> Response[Any]:
    if isinstance(result, Response):
        return result
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
    chat = ctx_of(state).chat
    raw, session = await request.body(), session_id(request)
    work = chat.chat(data, who=principal_of(request), raw=raw, session=session)
    return _respond(await unless_disconnected(request, work))


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
    chat = ctx_of(state).chat
    raw, session = await request.body(), session_id(request)
    work = chat.complete(data, who=principal_of(request), raw=raw, session=session)
    return _respond(await unless_disconnected(request, work))


routes = [chat_completions, completions]
