"""The Responses API: a request becomes a chat generation (``prepare``), its output is
written as items and events (``ResponseWriter``), and with ``store`` the response and the
conversation it ends are kept for ``previous_response_id`` and ``GET``. With
``conversation`` the conversation's items are the history, and the input and output are
appended to it.

Stored responses belong to the caller's project: another project's id is answered as
missing. Each project stores up to its quota, and a background sweep deletes what is
older than the retention.

A ``file_search`` tool runs before the model: the gateway searches its own vector stores,
the sources go into the prompt, and the output starts with the ``file_search_call`` item;
the answer's ``[n]`` markers carry ``file_citation`` annotations.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec

from chat.backend import Generation
from chat.command import Caller
from chat.core import ChatCore
from chat.events import Finish, Usage
from core.errors import APIError, EngineError, InvalidRequestError, NotFoundError
from core.tenancy import LOCAL_ADMIN, Principal
from gateway.schemas.responses import DeletedResponse, ResponseRequest
from gateway.services.responses.config import ResponsesSettings
from gateway.services.responses.conversations import (
    ConversationService,
    conversation_items,
    ensure_room,
)
from gateway.services.responses.inputs import Prepared, item_id, prepare
from gateway.services.responses.store import Expired, ResponseStore, StoredResponse, dumps
from gateway.services.responses.writer import ResponseWriter

__all__ = ["ResponsesService"]

log = logging.getLogger(__name__)
Json = dict[str, Any]
_encoder = msgspec.json.Encoder()


def _sse(event: Json) -> bytes:
    head = b"event: " + str(event["type"]).encode()
    return head + b"\ndata: " + _encoder.encode(event) + b"\n\n"


def _conversation_id(raw: Any) -> str | None:
    """``conversation`` as an id (a string or ``{"id": ...}``)."""
    if raw is None:
        return None
    found = raw.get("id") if isinstance(raw, dict) else raw
    if not isinstance(found, str) or not found:
        raise InvalidRequestError(
            "conversation is a conversation id or {'id': ...}", param="conversation"
        )
    return found


class ResponsesService:
    def __init__(
        self,
        core: ChatCore,
        store: ResponseStore,
        settings: ResponsesSettings | None = None,
    ) -> None:
        self.core = core
        self.store = store
        self.settings = settings or ResponsesSettings()
        self.conversations = ConversationService(core, store, self.settings)

    async def _stored(self, rid: str, param: str, who: Principal) -> StoredResponse:
        found = await self.store.get(rid, who.visible)
        if found is None:
            raise NotFoundError(f"no response with id {rid!r}", param=param)
        return found

    async def create(
        self, req: ResponseRequest, who: Principal = LOCAL_ADMIN
    ) -> Json | AsyncIterator[bytes]:
        history: list[Json] = []
        cid = _conversation_id(req.conversation)
        if cid is not None and req.previous_response_id:
            raise InvalidRequestError(
                "previous_response_id and conversation cannot be used together",
                param="conversation",
            )
        owner = who.project
        if req.previous_response_id:
            history = (
                await self._stored(req.previous_response_id, "previous_response_id", who)
            ).conversation
        elif cid is not None:
            owner, history = await self.conversations.history(cid, who)
        caller = Caller(owner=who.key_id, project=who.project, user=req.user, principal=who)
        prep = prepare(req, history, self.core.settings, caller)
        await self._ensure_room(req, prep, cid, owner, who)
        gen = await self.core.generate(prep.command)
        skeleton = self._skeleton(req, prep)
        if cid is not None:
            skeleton["conversation"] = {"id": cid}
        writer = ResponseWriter(skeleton, gen.citations)
        outcome: list[Any] = []
        events = self._events(
            req,
            prep,
            writer,
            self._generated(gen, writer, outcome),
            outcome,
            gen.states,
            _Keep(who, cid),
        )
        if req.stream:
            return self._sse(events, writer)
        async for _ in events:
            pass
        return writer.response

    async def _sse(
        self, events: AsyncIterator[Json], writer: ResponseWriter
    ) -> AsyncIterator[bytes]:
        try:
            async for ev in events:
                yield _sse(ev)
        except Exception as exc:  # after the stream began: an error event, then the failure
            if not isinstance(exc, APIError):
                log.exception("response stream failed")
                exc = EngineError("the server had an error while streaming")
            err = exc.to_dict()["error"]
            yield _sse(
                writer._ev("error", code=err["code"], message=err["message"], param=err["param"])
            )
            writer.response["error"] = {"code": err["code"], "message": err["message"]}
            for ev in writer.finish("failed", writer.response.get("usage") or {}, None):
                yield _sse(ev)

    async def _events(
        self,
        req: ResponseRequest,
        prep: Prepared,
        writer: ResponseWriter,
        generated: AsyncIterator[Json],
        outcome: list[Any],
        states: dict[str, Any] | None = None,
        keep: _Keep | None = None,
    ) -> AsyncIterator[Json]:
        for ev in writer.start():
            yield ev
        if prep.file_search is not None:
            asked = [m["content"] for m in prep.conversation if m["role"] == "user"]
            for ev in writer.searched(asked[-1:], prep.include_results):
                yield ev
        async for ev in generated:
            yield ev
        reason, usage = outcome
        incomplete = reason == "length"
        status = "incomplete" if incomplete else "completed"
        for ev in writer.finish(status, usage, "max_output_tokens" if incomplete else None):
            yield ev
        keep = keep or _Keep(LOCAL_ADMIN, None)
        if keep.conversation is not None:
            items = [*conversation_items(prep.items, "input"), *writer.output]
            await self.conversations.extend(keep.conversation, keep.who, items, states)
        if req.store:
            conversation = [*prep.conversation, _assistant_message(writer.output)]
            await self.store.put(
                StoredResponse(writer.response, prep.items, conversation, states, keep.who.project)
            )

    async def _ensure_room(
        self, req: ResponseRequest, prep: Prepared, cid: str | None, owner: str, who: Principal
    ) -> None:
        """Refuse before generating what the project could not store: the input counted
        as kept (the output is not known yet, so one response may pass the limit)."""
        size = len(dumps(prep.items).encode())
        if req.store:
            # The input is kept twice (input items, and the conversation it ends).
            history = len(dumps(prep.conversation).encode())
            await ensure_room(self.store, self.settings, who.project, size + history)
        if cid is not None:
            await ensure_room(self.store, self.settings, owner, size)

    @staticmethod
    async def _generated(
        gen: Generation, writer: ResponseWriter, outcome: list[Any]
    ) -> AsyncIterator[Json]:
        """The output's events (one choice); ``outcome`` gets (finish reason, usage)."""
        reason, total = "stop", Usage()
        async for ev in gen.events:
            for out in writer.feed(list(ev.parts)):
                yield out
            if isinstance(ev, Finish):
                reason, total = ev.reason, total.plus(ev)
        outcome.extend([reason, _usage(total, gen.prompt_tokens)])

    def _skeleton(self, req: ResponseRequest, prep: Prepared) -> Json:
        s = self.core.settings
        fmt = (req.text or {}).get("format") or {"type": "text"}
        skeleton: Json = {
            "id": item_id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "completed_at": None,
            "status": "in_progress",
            "background": False,
            "model": req.model,
            "output": [],
            "error": None,
            "incomplete_details": None,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "max_tool_calls": req.max_tool_calls,
            "metadata": req.metadata or {},
            "parallel_tool_calls": prep.spec.parallel,
            "presence_penalty": req.presence_penalty or 0.0,
            "frequency_penalty": req.frequency_penalty or 0.0,
            "previous_response_id": req.previous_response_id,
            "prompt_cache_key": req.prompt_cache_key,
            "safety_identifier": req.safety_identifier,
            "reasoning": {"effort": (req.reasoning or {}).get("effort"), "summary": None},
            "service_tier": "default",
            "store": req.store,
            "temperature": s.default_temperature if req.temperature is None else req.temperature,
            "top_p": s.default_top_p if req.top_p is None else req.top_p,
            "top_logprobs": req.top_logprobs or 0,
            "text": {"format": fmt},
            "tool_choice": req.tool_choice or ("auto" if prep.spec.tools else "none"),
            "tools": [_echoed_tool(t) for t in req.tools or []],
            "truncation": "disabled",
        }
        # Absent, not null, until known (the spec types them as an object and a string).
        if req.user is not None:
            skeleton["user"] = req.user
        return skeleton

    # -- stored responses ------------------------------------------------------------------

    async def get(self, rid: str, who: Principal = LOCAL_ADMIN) -> Json:
        return (await self._stored(rid, "response_id", who)).response

    async def delete(self, rid: str, who: Principal = LOCAL_ADMIN) -> DeletedResponse:
        found = await self.store.get(rid, who.visible)
        if found is None or not await self.store.delete(rid, who.visible):
            raise NotFoundError(f"no response with id {rid!r}", param="response_id")
        if found.states:
            # The engine queues the deletes behind its pending writes (it may block).
            await asyncio.to_thread(self.core.forget_states, found.states)
        return DeletedResponse(id=rid)

    async def input_items(
        self,
        rid: str,
        limit: int,
        order: str,
        after: str | None,
        who: Principal = LOCAL_ADMIN,
    ) -> Json:
        if order not in ("asc", "desc"):
            raise InvalidRequestError("order is 'asc' or 'desc'", param="order")
        items = list((await self._stored(rid, "response_id", who)).input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [it.get("id") for it in items]
            if after not in ids:
                raise InvalidRequestError(
                    f"no input item {after!r} in this response", param="after"
                )
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": len(items) > limit,
        }

    # -- retention -------------------------------------------------------------------------

    async def sweep(self, now: float | None = None) -> Expired:
        """Delete stored responses and conversations past ``responses.retention_days``
        (as of ``now``) and the disk states they kept."""
        days = self.settings.retention_days
        if not days:
            return Expired([], [], [])
        expired = await self.store.expire((now or time.time()) - days * 86400)
        for states in expired.states:
            await asyncio.to_thread(self.core.forget_states, states)
        if expired.responses or expired.conversations:
            log.info(
                "retention removed %d responses and %d conversations",
                len(expired.responses),
                len(expired.conversations),
            )
        return expired

    async def sweep_forever(self) -> None:
        """The lifespan's background task: a sweep now, then every ``sweep_interval_s``."""
        if not self.settings.retention_days:
            return
        while True:
            try:
                await self.sweep()
            except Exception:  # a failed sweep is retried at the next interval
                log.exception("retention sweep failed")
            await asyncio.sleep(self.settings.sweep_interval_s)


@dataclass(frozen=True)
class _Keep:
    """Where a finished response goes besides the client: its caller's project and the
    conversation it extends."""

    who: Principal
    conversation: str | None


def _usage(u: Usage, prompt_tokens: int) -> Json:
    return {
        "input_tokens": prompt_tokens,
        # Tokens written to a prompt cache are not counted separately here (the prefix
        # cache keeps states at turn ends, whatever their token count).
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": prompt_tokens + u.completion_tokens,
    }


def _echoed_tool(raw: Json) -> Json:
    """A request's tool as the response object echoes it: a function tool with every
    field its schema requires (``strict`` defaults to true, as in the Responses API)."""
    if raw.get("type") != "function":
        return raw
    strict = raw.get("strict")
    return {
        "type": "function",
        "name": raw.get("name"),
        "description": raw.get("description"),
        "parameters": raw.get("parameters"),
        "strict": strict if isinstance(strict, bool) else True,
    }


def _assistant_message(output: list[Json]) -> Json:
    """The response's output as the assistant turn a continuation reads back."""
    text = "".join(
        part.get("text", "")
        for item in output
        if item["type"] == "message"
        for part in item["content"]
    )
    calls = [
        {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        for item in output
        if item["type"] == "function_call"
    ]
    msg: Json = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = calls
    return msg
