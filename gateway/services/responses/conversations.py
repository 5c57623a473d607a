"""The Conversations API: a conversation is a list of items (messages, function calls and
their outputs, reasoning) that a response given ``conversation`` reads as its history and
extends with its input and output.

Items are kept as the API returns them (``id``, ``type``, ``status`` filled in, a string
content made a text part). A response continuing a conversation renders the same history
its previous turn ended with, so the engines' states (kept by content) carry the turn on;
an item edited, deleted or added through the items API changes that history and the next
turn reads it again from the start.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from chat.core import ChatCore
from core.errors import InvalidRequestError, NotFoundError, QuotaExceededError
from core.tenancy import Principal
from gateway.schemas.conversations import ConversationCreate
from gateway.services.responses.config import ResponsesSettings
from gateway.services.responses.convstore import ConversationStore
from gateway.services.responses.inputs import item_id, to_messages
from gateway.services.responses.store import ResponseStore, dumps

__all__ = ["ConversationService", "conversation_items", "ensure_room"]

Json = dict[str, Any]

# OpenAI's includable values; only the first changes what this server returns.
INCLUDES = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    }
)
_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}
_WITH_STATUS = frozenset(_ID_PREFIX)


async def ensure_room(
    store: ResponseStore, settings: ResponsesSettings, project: str, incoming: int
) -> None:
    """Refuse (429 ``insufficient_quota``) what would take ``project`` past its allowance."""
    cap = settings.max_stored_bytes_per_project
    if not cap:
        return
    used = await store.used_bytes(project)
    if used + incoming > cap:
        raise QuotaExceededError(
            f"project {project!r} stores {used} bytes of responses and conversations; "
            f"{incoming} more would pass its limit of {cap} bytes "
            "(responses.max_stored_bytes_per_project). Delete stored responses or "
            "conversations to make room."
        )


def conversation_items(raw: list[Json], param: str) -> list[Json]:
    """Input items as stored conversation items (checked to be readable as history)."""
    out = []
    for given in raw:
        item = dict(given)
        kind = item.setdefault("type", "message")
        if kind == "message" and isinstance(item.get("content"), str):
            assistant = item.get("role") == "assistant"
            part: Json = {"type": "output_text" if assistant else "input_text"}
            part["text"] = item["content"]
            if assistant:
                part["annotations"] = []
            item["content"] = [part]
        if kind in _WITH_STATUS:
            item.setdefault("status", "completed")
        if not isinstance(item.get("id"), str) or not item["id"]:
            item["id"] = item_id(_ID_PREFIX.get(str(kind), "item"))
        out.append(item)
    to_messages(out, param)  # raises for what a history cannot hold
    return out


def _shown(item: Json, include: frozenset[str]) -> Json:
    if item.get("type") == "file_search_call" and "file_search_call.results" not in include:
        return {**item, "results": None}
    return item


def check_include(include: list[str]) -> frozenset[str]:
    for value in include:
        if value not in INCLUDES:
            raise InvalidRequestError(f"include value {value!r} is not supported", param="include")
    return frozenset(include)


class ConversationService:
    def __init__(self, core: ChatCore, store: ResponseStore, settings: ResponsesSettings) -> None:
        self.core = core
        self.store = store
        self.settings = settings
        self.rows = ConversationStore(store)

    def _missing(self, cid: str, param: str = "conversation_id") -> NotFoundError:
        return NotFoundError(f"no conversation with id {cid!r}", param=param)

    def _checked(self, raw: list[Json] | None, param: str) -> list[Json]:
        raw = raw or []
        cap = self.settings.max_items_per_request
        if len(raw) > cap:
            raise InvalidRequestError(
                f"at most {cap} items may be added at a time", param=param, code="too_many_items"
            )
        return conversation_items(raw, param)

    async def create(self, req: ConversationCreate, who: Principal) -> Json:
        items = self._checked(req.items, "items")
        await ensure_room(self.store, self.settings, who.project, len(dumps(items).encode()))
        cid = f"conv_{uuid.uuid4().hex}"
        return await self.store.run(self.rows.create, cid, who.project, req.metadata or {}, items)

    async def get(self, cid: str, who: Principal) -> Json:
        found = await self.store.run(self.rows.get, cid, who.visible)
        if found is None:
            raise self._missing(cid)
        return found.public()

    async def update(self, cid: str, metadata: dict[str, str] | None, who: Principal) -> Json:
        updated = await self.store.run(self.rows.update, cid, who.visible, metadata or {})
        if updated is None:
            raise self._missing(cid)
        return updated

    async def delete(self, cid: str, who: Principal) -> Json:
        found = await self.store.run(self.rows.delete, cid, who.visible)
        if found is None:
            raise self._missing(cid)
        await self._forget(found.states)
        return {"id": cid, "object": "conversation.deleted", "deleted": True}

    async def _forget(self, states: list[Json]) -> None:
        for s in states:
            # The engine queues the deletes behind its pending writes (it may block).
            await asyncio.to_thread(self.core.forget_states, s)

    async def list_items(
        self,
        cid: str,
        who: Principal,
        *,
        after: str | None,
        limit: int,
        order: str,
        include: list[str],
    ) -> Json:
        if order not in ("asc", "desc"):
            raise InvalidRequestError("order is 'asc' or 'desc'", param="order")
        shown = check_include(include)
        try:
            page = await self.store.run(self.rows.page, cid, who.visible, after, limit, order)
        except KeyError:
            raise InvalidRequestError(
                f"no item {after!r} in this conversation", param="after"
            ) from None
        if page is None:
            raise self._missing(cid)
        return _list([_shown(it, shown) for it in page.data], page.has_more)

    async def add_items(
        self, cid: str, raw: list[Json], who: Principal, include: list[str]
    ) -> Json:
        shown = check_include(include)
        items = self._checked(raw, "items")
        found = await self.store.run(self.rows.get, cid, who.visible)
        if found is None:
            raise self._missing(cid)
        await ensure_room(self.store, self.settings, found.project, len(dumps(items).encode()))
        added = await self.store.run(self.rows.append, cid, who.visible, items, None)
        if added is None:
            raise self._missing(cid)
        return _list([_shown(it, shown) for it in added], False)

    async def get_item(self, cid: str, item: str, who: Principal, include: list[str]) -> Json:
        shown = check_include(include)
        try:
            found = await self.store.run(self.rows.item, cid, who.visible, item)
        except LookupError:
            raise self._missing(cid) from None
        if found is None:
            raise NotFoundError(f"no item with id {item!r} in this conversation", param="item_id")
        return _shown(found, shown)

    async def delete_item(self, cid: str, item: str, who: Principal) -> Json:
        try:
            conversation = await self.store.run(self.rows.delete_item, cid, who.visible, item)
        except LookupError:
            raise self._missing(cid) from None
        if conversation is None:
            raise NotFoundError(f"no item with id {item!r} in this conversation", param="item_id")
        return conversation

    # -- for responses ---------------------------------------------------------------------

    async def history(self, cid: str, who: Principal) -> tuple[str, list[Json]]:
        """The owner of conversation ``cid`` and its items as chat messages."""
        found = await self.store.run(self.rows.get, cid, who.visible)
        items = await self.store.run(self.rows.items, cid, who.visible)
        if found is None or items is None:
            raise self._missing(cid, "conversation")
        return found.project, to_messages(items, "conversation.items")

    async def extend(self, cid: str, who: Principal, items: list[Json], state: Json | None) -> None:
        """Append a response's input and output (and the states it saved)."""
        added = await self.store.run(self.rows.append, cid, who.visible, items, state)
        if added is None:  # deleted while the response ran: its states have no owner
            if state:
                await self._forget([state])
            raise self._missing(cid, "conversation")


def _list(data: list[Json], has_more: bool) -> Json:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
