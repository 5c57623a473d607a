"""Chat completions and completions: a wire request becomes a chat-core command, and the
generation's typed events become a JSON answer or SSE chunks. A remote model may pass
the request through as sent (the core answers ``Relayed``); its answer goes back as is."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from chat.backend import Relayed
from chat.citations import citation_dicts
from chat.command import Caller
from chat.config import ChatSettings
from chat.core import ChatCore
from core.tenancy import LOCAL_ADMIN, Principal
from gateway.schemas.chat import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
)
from gateway.services.chat.commands import chat_command, completion_command, include_usage
from gateway.services.chat.stream import (
    ChatEnvelope,
    ChatRender,
    CompletionEnvelope,
    CompletionRender,
    guard,
    usage,
)

__all__ = ["ChatService"]

ChatResult = ChatCompletion | dict[str, Any] | AsyncIterator[bytes]
CompletionResult = Completion | dict[str, Any] | AsyncIterator[bytes]
_decoder = msgspec.json.Decoder()


def _client_json(req: msgspec.Struct, raw: bytes | None) -> dict[str, Any]:
    """The client's own JSON (so fields this server does not know still reach an
    upstream), or the request re-encoded when there is none."""
    body: Any = None
    if raw:
        try:
            body = _decoder.decode(raw)
        except msgspec.DecodeError:
            body = None
    if not isinstance(body, dict):
        body = {k: v for k, v in msgspec.to_builtins(req).items() if v is not None}
    out: dict[str, Any] = body
    return out


def _relayed(out: Relayed) -> dict[str, Any] | AsyncIterator[bytes]:
    return out.body if isinstance(out.body, dict) else guard(out.body)


class ChatService:
    def __init__(self, core: ChatCore) -> None:
        self.core = core

    @property
    def settings(self) -> ChatSettings:
        return self.core.settings

    async def chat(
        self,
        req: ChatCompletionRequest,
        who: Principal = LOCAL_ADMIN,
        *,
        raw: bytes | None = None,
        session: str | None = None,
    ) -> ChatResult:
        """``raw``: the client's JSON body; ``session``: its X-Session-Id."""
        caller = Caller(
            owner=who.key_id, project=who.project, session=session, user=req.user, principal=who
        )
        cmd = chat_command(req, self.settings, caller, _client_json(req, raw))
        gen = await self.core.chat(cmd)
        if isinstance(gen, Relayed):
            return _relayed(gen)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        env = ChatEnvelope(rid, created, req.model, gen.fingerprint, include_usage(req))
        render = ChatRender(gen, req.n, env, req.logprobs)
        if req.stream:
            return guard(render.run(stream=True))
        async for _ in render.run(stream=False):
            pass
        out = ChatCompletion(
            id=rid,
            created=created,
            model=req.model,
            choices=[
                ChatCompletionChoice(
                    index=i,
                    message=o.message(gen),
                    finish_reason=o.finish_reason,
                    logprobs={"content": o.logprobs, "refusal": None} if req.logprobs else None,
                )
                for i, o in enumerate(render.choices)
            ],
            usage=usage(render.total),
            system_fingerprint=gen.fingerprint,
        )
        cited = citation_dicts(gen.citations)
        if cited is not None:
            out.citations = cited
        if gen.rag_prompt is not None:
            out.rag_prompt = gen.rag_prompt
        return out

    async def complete(
        self,
        req: CompletionRequest,
        who: Principal = LOCAL_ADMIN,
        *,
        raw: bytes | None = None,
        session: str | None = None,
    ) -> CompletionResult:
        caller = Caller(
            owner=who.key_id, project=who.project, session=session, user=req.user, principal=who
        )
        gen = await self.core.complete(completion_command(req, caller, _client_json(req, raw)))
        if isinstance(gen, Relayed):
            return _relayed(gen)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        env = CompletionEnvelope(rid, created, req.model, gen.fingerprint, include_usage(req))
        render = CompletionRender(gen, req.n, env)
        if req.stream:
            return guard(render.run(stream=True))
        async for _ in render.run(stream=False):
            pass
        want_lp = req.logprobs is not None
        out = Completion(
            id=rid,
            created=created,
            model=req.model,
            choices=[
                CompletionChoice(
                    i, text, render.reasons[i], render.completion_logprobs(i) if want_lp else None
                )
                for i, text in enumerate(render.texts)
            ],
            usage=usage(render.total, details=False),
            system_fingerprint=gen.fingerprint,
        )
        cited = citation_dicts(gen.citations)
        if cited is not None:
            out.citations = cited
        return out
