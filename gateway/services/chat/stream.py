"""Server-sent events for chat and text completions: typed chunks in one envelope, one
error event if anything fails after the stream began, then the end marker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from gateway.services.chat.output import (
    CallStart,
    Content,
    Event,
    OutputParser,
    Reasoning,
    finish_reason,
    url_annotations,
)

if TYPE_CHECKING:
    from gateway.services.chat.service import Begun

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

    def tail(
        self, completion_tokens: int, reasoning_tokens: int = 0, cached_tokens: int = 0
    ) -> Iterator[bytes]:
        """The usage chunk (when asked for), then the end marker."""
        if self.include_usage:
            total = usage(self.prompt_tokens, completion_tokens)
            total.completion_tokens_details = {"reasoning_tokens": reasoning_tokens}
            total.prompt_tokens_details = {"cached_tokens": cached_tokens}
            yield sse(
                ChatCompletionChunk(
                    id=self.id,
                    created=self.created,
                    model=self.model,
                    choices=[],
                    system_fingerprint=self.system_fingerprint,
                    usage=total,
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


def _delta(ev: Event) -> ChunkDelta:
    if isinstance(ev, Content):
        return ChunkDelta(content=ev.text)
    if isinstance(ev, Reasoning):
        return ChunkDelta(reasoning_content=ev.text)
    if isinstance(ev, CallStart):
        call = {
            "index": ev.index,
            "id": ev.id,
            "type": "function",
            "function": {"name": ev.name, "arguments": ""},
        }
        return ChunkDelta(tool_calls=[call])
    return ChunkDelta(tool_calls=[{"index": ev.index, "function": {"arguments": ev.text}}])


@dataclass
class _Choice:
    """One streamed choice: its parser and what its finish chunk needs."""

    parser: OutputParser
    content: str = ""
    calls: int = 0

    def take(self, parts: list[Event]) -> list[Event]:
        for part in parts:
            if isinstance(part, Content):
                self.content += part.text
            self.calls += isinstance(part, CallStart)
        return parts


async def chat_stream(
    run: Begun, n: int, envelope: ChatEnvelope, logprobs: bool
) -> AsyncIterator[bytes]:
    """Chunks of the parsed output: content, reasoning and tool-call deltas (the id and
    name first, then argument fragments), annotations with the finish."""
    completion = reasoning = cached = 0
    citations = run.citations
    cited = citations is None
    choices = [_Choice(OutputParser(run.mode)) for _ in range(n)]
    yield envelope.chunk(
        [ChunkChoice(i, ChunkDelta(role="assistant", content="", refusal=None)) for i in range(n)]
    )
    async for ev in run.engine.events(run.handle):
        c = choices[ev.index]
        if isinstance(ev, TokenEvent):
            reasoning += c.parser.in_reasoning
            parts = c.take(c.parser.feed(ev.text))
            lp = {"content": [chat_logprob(ev)], "refusal": None} if logprobs else None
            if not parts and lp is not None:
                yield envelope.chunk([ChunkChoice(ev.index, ChunkDelta(), None, lp)])
            for part in parts:
                extra = None
                if not cited and isinstance(part, Content):
                    extra, cited = citations, True
                yield envelope.chunk([ChunkChoice(ev.index, _delta(part), None, lp)], extra)
                lp = None
            continue
        if ev.reason == "error":
            raise ev.error or EngineError("generation failed")
        completion += ev.completion_tokens
        cached = max(cached, ev.cached_tokens)
        for part in c.take([*c.parser.feed(ev.text), *c.parser.finish()]):
            yield envelope.chunk([ChunkChoice(ev.index, _delta(part))])
        delta = ChunkDelta()
        if citations:
            delta.annotations = url_annotations(c.content, citations)
        yield envelope.chunk([ChunkChoice(ev.index, delta, finish_reason(ev.reason, c.calls))])
    for item in envelope.tail(completion, reasoning, cached):
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
