"""Server-sent events for chat and text completions: typed chunks in one envelope, one
error event if anything fails after the stream began, then the end marker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from core.errors import APIError, EngineError
from engines.generation import ChatEngine, FinishEvent, TokenEvent
from gateway.schemas.chat import (
    ChatCompletionChunk,
    ChunkChoice,
    ChunkDelta,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionUsage,
)

__all__ = [
    "ChatEnvelope",
    "CompletionEnvelope",
    "chat_logprob",
    "chat_stream",
    "completion_stream",
    "guard",
    "sse",
]

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
DONE = b"data: [DONE]\n\n"


def sse(payload: object) -> bytes:
    return b"data: " + _encoder.encode(payload) + b"\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
    return CompletionUsage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


@dataclass(frozen=True)
class ChatEnvelope:
    """What every chunk of one streamed chat completion repeats."""

    id: str
    created: int
    model: str
    system_fingerprint: str
    include_usage: bool
    prompt_tokens: int

    def chunk(
        self, choices: list[ChunkChoice], citations: list[dict[str, Any]] | None = None
    ) -> bytes:
        return sse(
            ChatCompletionChunk(
                id=self.id,
                created=self.created,
                model=self.model,
                choices=choices,
                system_fingerprint=self.system_fingerprint,
                usage=None if self.include_usage else msgspec.UNSET,
                citations=citations if citations is not None else msgspec.UNSET,
            )
        )

    def tail(self, completion_tokens: int) -> Iterator[bytes]:
        """The usage chunk (when asked for), then the end marker."""
        if self.include_usage:
            yield sse(
                ChatCompletionChunk(
                    id=self.id,
                    created=self.created,
                    model=self.model,
                    choices=[],
                    system_fingerprint=self.system_fingerprint,
                    usage=usage(self.prompt_tokens, completion_tokens),
                )
            )
        yield DONE


@dataclass(frozen=True)
class CompletionEnvelope:
    id: str
    created: int
    model: str
    system_fingerprint: str
    include_usage: bool
    prompt_tokens: int

    def chunk(self, index: int, text: str, finish_reason: str | None = None) -> bytes:
        return sse(
            CompletionChunk(
                id=self.id,
                created=self.created,
                model=self.model,
                choices=[CompletionChunkChoice(index, text, finish_reason)],
                system_fingerprint=self.system_fingerprint,
                usage=None if self.include_usage else msgspec.UNSET,
            )
        )

    def tail(self, completion_tokens: int) -> Iterator[bytes]:
        if self.include_usage:
            yield sse(
                CompletionChunk(
                    id=self.id,
                    created=self.created,
                    model=self.model,
                    choices=[],
                    system_fingerprint=self.system_fingerprint,
                    usage=usage(self.prompt_tokens, completion_tokens),
                )
            )
        yield DONE


async def guard(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A failure after the stream has started becomes one error event, then the end."""
    try:
        async for item in stream:
            yield item
    except APIError as exc:
        yield sse(exc.to_dict())
    except Exception:  # the client gets a generic error event; the log keeps the cause
        log.exception("stream failed")
        yield sse(EngineError("the server had an error while streaming").to_dict())


def chat_logprob(ev: TokenEvent) -> dict[str, Any]:
    return {
        "token": ev.token_text,
        "logprob": ev.logprob,
        "bytes": list(ev.token_bytes),
        "top_logprobs": [
            {"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in ev.top_logprobs
        ],
    }


async def chat_stream(
    engine: ChatEngine,
    handle: Any,
    n: int,
    envelope: ChatEnvelope,
    citations: list[dict[str, Any]] | None,
    logprobs: bool,
) -> AsyncIterator[bytes]:
    completion = 0
    cited = citations is None
    yield envelope.chunk(
        [ChunkChoice(i, ChunkDelta(role="assistant", content="", refusal=None)) for i in range(n)]
    )
    async for ev in engine.events(handle):
        if isinstance(ev, TokenEvent):
            if not ev.text and not logprobs:
                continue
            extra = None
            if not cited and ev.text:
                extra, cited = citations, True
            lp = {"content": [chat_logprob(ev)], "refusal": None} if logprobs else None
            yield envelope.chunk(
                [ChunkChoice(ev.index, ChunkDelta(content=ev.text), None, lp)], extra
            )
            continue
        if ev.reason == "error":
            raise ev.error or EngineError("generation failed")
        completion += ev.completion_tokens
        delta = ChunkDelta(content=ev.text) if ev.text else ChunkDelta()
        yield envelope.chunk([ChunkChoice(ev.index, delta, ev.reason)])
    for item in envelope.tail(completion):
        yield item


async def canned_chat_stream(
    answer: str, n: int, envelope: ChatEnvelope, citations: list[dict[str, Any]]
) -> AsyncIterator[bytes]:
    """The no-answer reply as a stream (the model did not run)."""
    for i in range(n):
        delta = ChunkDelta(role="assistant", content=answer)
        yield envelope.chunk([ChunkChoice(i, delta)], citations)
        yield envelope.chunk([ChunkChoice(i, ChunkDelta(), "stop")])
    for item in envelope.tail(0):
        yield item


def _echoes(echoes: list[str], n: int) -> Iterator[tuple[int, str]]:
    """(choice index, prompt text) of each choice whose prompt is echoed."""
    for p_i, echo in enumerate(echoes):
        if echo:
            for j in range(n):
                yield p_i * n + j, echo


async def completion_stream(
    engine: ChatEngine, handles: list[Any], n: int, envelope: CompletionEnvelope, echoes: list[str]
) -> AsyncIterator[bytes]:
    """Events of several prompts' requests, interleaved as they come."""
    queue: asyncio.Queue[tuple[int, TokenEvent | FinishEvent | None]] = asyncio.Queue()

    async def pump(p_i: int, handle: Any) -> None:
        try:
            async for ev in engine.events(handle):
                await queue.put((p_i, ev))
        finally:
            await queue.put((p_i, None))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    completion = 0
    try:
        for index, echo in _echoes(echoes, n):
            yield envelope.chunk(index, echo)
        open_pumps = len(tasks)
        while open_pumps:
            p_i, ev = await queue.get()
            if ev is None:
                open_pumps -= 1
                continue
            index = p_i * n + ev.index
            if isinstance(ev, TokenEvent):
                if ev.text:
                    yield envelope.chunk(index, ev.text)
                continue
            if ev.reason == "error":
                raise ev.error or EngineError("generation failed")
            completion += ev.completion_tokens
            yield envelope.chunk(index, ev.text, ev.reason)
        for item in envelope.tail(completion):
            yield item
    finally:
        for t in tasks:
            t.cancel()
