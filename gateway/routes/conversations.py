"""The Conversations API: /v1/conversations and /v1/conversations/{id}/items."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from gateway.schemas.common import ErrorResponse
from gateway.schemas.conversations import ConversationCreate, ConversationUpdate, ItemsCreate
from gateway.services.responses.conversations import ConversationService
from gateway.state import ctx_of, principal_of

Req = Request[Any, Any, Any]
Json = dict[str, Any]
_QUOTA = {429: ResponseSpec(ErrorResponse, description="The project's storage quota is used up")}


def _service(state: State) -> ConversationService:
    return ctx_of(state).responses.conversations


def _include(request: Req) -> list[str]:
    """``include`` as repeated keys (``include=a&include=b``) or brackets (``include[]=``,
    what the OpenAI SDKs send)."""
    q = request.query_params
    return [*q.getall("include", []), *q.getall("include[]", [])]


@post("/v1/conversations", status_code=200, responses=_QUOTA)
async def create_conversation(
    request: Req, state: State, data: JSONBody[ConversationCreate]
) -> Json:
    return await _service(state).create(data, principal_of(request))


@get("/v1/conversations/{conversation_id:str}")
async def get_conversation(request: Req, state: State, conversation_id: FromPath[str]) -> Json:
    return await _service(state).get(conversation_id, principal_of(request))


@post("/v1/conversations/{conversation_id:str}", status_code=200)
async def update_conversation(
    request: Req,
    state: State,
    conversation_id: FromPath[str],
    data: JSONBody[ConversationUpdate],
) -> Json:
    return await _service(state).update(conversation_id, data.metadata, principal_of(request))


@delete("/v1/conversations/{conversation_id:str}", status_code=200)
async def delete_conversation(request: Req, state: State, conversation_id: FromPath[str]) -> Json:
    return await _service(state).delete(conversation_id, principal_of(request))


@get("/v1/conversations/{conversation_id:str}/items")
async def list_items(
    request: Req,
    state: State,
    conversation_id: FromPath[str],
    limit: Annotated[FromQuery[int], Parameter(ge=1, le=100)] = 20,
    order: FromQuery[str] = "desc",
    after: FromQuery[str | None] = None,
) -> Json:
    return await _service(state).list_items(
        conversation_id,
        principal_of(request),
        after=after,
        limit=limit,
        order=order,
        include=_include(request),
    )


@post("/v1/conversations/{conversation_id:str}/items", status_code=200, responses=_QUOTA)
async def create_items(
    request: Req, state: State, conversation_id: FromPath[str], data: JSONBody[ItemsCreate]
) -> Json:
    return await _service(state).add_items(
        conversation_id, data.items, principal_of(request), _include(request)
    )


@get("/v1/conversations/{conversation_id:str}/items/{item_id:str}")
async def get_item(
    request: Req, state: State, conversation_id: FromPath[str], item_id: FromPath[str]
) -> Json:
    return await _service(state).get_item(
        conversation_id, item_id, principal_of(request), _include(request)
    )


@delete("/v1/conversations/{conversation_id:str}/items/{item_id:str}", status_code=200)
async def delete_item(
    request: Req, state: State, conversation_id: FromPath[str], item_id: FromPath[str]
) -> Json:
    return await _service(state).delete_item(conversation_id, item_id, principal_of(request))


routes = [
    create_conversation,
    get_conversation,
    update_conversation,
    delete_conversation,
    list_items,
    create_items,
    get_item,
    delete_item,
]
