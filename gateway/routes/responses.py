"""POST /v1/responses (JSON or SSE), GET/DELETE /v1/responses/{id}, and
GET /v1/responses/{id}/input_items."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from litestar.response import Stream

from core.errors import NotFoundError
from gateway.schemas.common import ErrorResponse
from gateway.schemas.responses import DeletedResponse, ResponseRequest
from gateway.state import ctx_of, principal_of

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@post(
    "/v1/responses",
    status_code=200,
    responses={
        400: ResponseSpec(ErrorResponse, description="Invalid request"),
        429: ResponseSpec(ErrorResponse, description="The project's storage quota is used up"),
    },
)
async def create_response(
    request: Request[Any, Any, Any], state: State, data: JSONBody[ResponseRequest]
) -> Response[Any]:
    result = await ctx_of(state).responses.create(data, who=principal_of(request))
    if isinstance(result, dict):
        return Response(result, status_code=200)
    return Stream(result, media_type="text/event-stream", headers=_SSE_HEADERS)


@post("/v1/responses/compact", status_code=200, include_in_schema=False)
async def compact_response() -> None:
    """Compaction is not offered: a 404 in the API's error shape (not a 405 from the
    ``/v1/responses/{id}`` route), so clients fall back to sending the whole input."""
    raise NotFoundError(
        "POST /v1/responses/compact is not supported by this server", code="unknown_url"
    )


@get("/v1/responses/{response_id:str}")
async def get_response(
    request: Request[Any, Any, Any], state: State, response_id: FromPath[str]
) -> dict[str, Any]:
    return await ctx_of(state).responses.get(response_id, principal_of(request))


@delete("/v1/responses/{response_id:str}", status_code=200)
async def delete_response(
    request: Request[Any, Any, Any], state: State, response_id: FromPath[str]
) -> DeletedResponse:
    return await ctx_of(state).responses.delete(response_id, principal_of(request))


@get("/v1/responses/{response_id:str}/input_items")
async def list_input_items(
    request: Request[Any, Any, Any],
    state: State,
    response_id: FromPath[str],
    limit: Annotated[FromQuery[int], Parameter(ge=1, le=100)] = 20,
    order: FromQuery[str] = "desc",
    after: FromQuery[str | None] = None,
) -> dict[str, Any]:
    return await ctx_of(state).responses.input_items(
        response_id, limit, order, after, principal_of(request)
    )


routes = [create_response, compact_response, get_response, delete_response, list_input_items]
