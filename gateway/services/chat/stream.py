"""Chat and text completions on the wire, from a generation's typed events: one loop
per surface that streams chunks (SSE) or gathers the whole answer, one error event if
anything fails after the stream began, then the end marker."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from chat.backend import Generation
from chat.citations import citation_dicts, url_annotations
from chat.events import CallStart, Content, Delta, Finish, Part, Reasoning, TokenLogprob
from chat.events import Usage as TokenUsage
from chat.output import Collected
from chat.sse import DONE, sse
from core.errors import APIError, EngineError
from gateway.schemas.chat import (
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChunkChoice,
    ChunkDelta,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionUsage,
)

__all__ = [
    "ChatEnvelope",
    "ChatRender",
    "CompletionEnvelope",
    "CompletionRender",
    "guard",
    "usage",
]

log = logging.getLogger(__name__)


def usage(u: TokenUsage, details: bool = True) -> CompletionUsage:
    out = CompletionUsage(u.prompt_tokens, u.completion_tokens, u.total_tokens)
    if details:
        out.completion_tokens_details = {"reasoning_tokens": u.reasoning_tokens}
        out.prompt_tokens_details = {"cached_tokens": u.cached_tokens}
    return out


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


def chat_logprob(lp: TokenLogprob) -> dict[str, Any]:
    return {
        "token": lp.token,
        "logprob": lp.logprob,
        "bytes": lp.bytes,
        "top_logprobs": [
            {"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in lp.top
        ],
    }


@dataclass(frozen=True)
class ChatEnvelope:
    """What every chunk of one streamed chat completion repeats."""

    id: str
    created: int
    model: str
    system_fingerprint: str
    include_usage: bool

    def chunk(self, choices: list[ChunkChoice], citations: Any = msgspec.UNSET) -> bytes:
        return sse(
            ChatCompletionChunk(
                id=self.id,
                created=self.created,
                model=self.model,
                choices=choices,
                system_fingerprint=self.system_fingerprint,
                usage=None if self.include_usage else msgspec.UNSET,
                citations=citations,
            )
        )

    def tail(self, total: TokenUsage) -> Iterator[bytes]:
        """The usage chunk (when asked for), then the end marker."""
        if self.include_usage:
            yield sse(
                ChatCompletionChunk(
                    id=self.id,
                    created=self.created,
                    model=self.model,
                    choices=[],
                    system_fingerprint=self.system_fingerprint,
                    usage=usage(total),
                )
            )
        yield DONE


def _delta(part: Part) -> ChunkDelta:
    if isinstance(part, Content):
        return ChunkDelta(content=part.text)
    if isinstance(part, Reasoning):
        return ChunkDelta(reasoning_content=part.text)
    if isinstance(part, CallStart):
        call = {
            "index": part.index,
            "id": part.id,
            "type": "function",
            "function": {"name": part.name, "arguments": ""},
        }
        return ChunkDelta(tool_calls=[call])
    return ChunkDelta(tool_calls=[{"index": part.index, "function": {"arguments": part.text}}])


@dataclass
class ChoiceOutput:
    """One choice as it is read: its output so far, its logprobs, how it ended."""

    collected: Collected = field(default_factory=Collected)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"

    def message(self, gen: Generation) -> ChatCompletionMessage:
        c = self.collected
        msg = ChatCompletionMessage(content=c.content if c.content or not c.calls else None)
        if c.calls:
            msg.tool_calls = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for call in c.calls
            ]
        if c.reasoning:
            msg.reasoning_content = c.reasoning
        if gen.citations:
            msg.annotations = url_annotations(c.content, gen.citations)
        return msg


class ChatRender:
    """The chat surface's one loop over a generation's events: chunks when streaming
    (content, reasoning and tool-call deltas: the id and name first, then argument
    fragments; annotations with the finish), and each choice's whole output."""

    def __init__(self, gen: Generation, n: int, envelope: ChatEnvelope, logprobs: bool) -> None:
        self.gen = gen
        self.envelope = envelope
        self.logprobs = logprobs
        self.choices = [ChoiceOutput() for _ in range(n)]
        self.total = TokenUsage(gen.prompt_tokens)
        self._cited = gen.citations is None

    def _cite(self, part: Part) -> Any:
        if self._cited or not isinstance(part, Content):
            return msgspec.UNSET
        self._cited = True
        return citation_dicts(self.gen.citations)

    async def run(self, stream: bool) -> AsyncIterator[bytes]:
        env = self.envelope
        if stream:
            yield env.chunk(
                [
                    ChunkChoice(i, ChunkDelta(role="assistant", content="", refusal=None))
                    for i in range(len(self.choices))
                ]
            )
        async for ev in self.gen.events:
            c = self.choices[ev.index]
            c.collected.add(list(ev.parts))
            chunks = self._delta(c, ev) if isinstance(ev, Delta) else self._finish(c, ev)
            if stream:
                for chunk in chunks():
                    yield chunk
        if stream:
            for item in env.tail(self.total):
                yield item

    def _delta(self, c: ChoiceOutput, ev: Delta) -> Callable[[], Iterator[bytes]]:
        lp = None
        if self.logprobs and ev.logprob is not None:
            c.logprobs.append(chat_logprob(ev.logprob))
            lp = {"content": [c.logprobs[-1]], "refusal": None}

        def chunks() -> Iterator[bytes]:
            logprobs = lp
            if not ev.parts and logprobs is not None:
                yield self.envelope.chunk([ChunkChoice(ev.index, ChunkDelta(), None, logprobs)])
            for part in ev.parts:
                choice = ChunkChoice(ev.index, _delta(part), None, logprobs)
                yield self.envelope.chunk([choice], self._cite(part))
                logprobs = None

        return chunks

    def _finish(self, c: ChoiceOutput, ev: Finish) -> Callable[[], Iterator[bytes]]:
        self.total = self.total.plus(ev)
        c.finish_reason = ev.finish_reason

        def chunks() -> Iterator[bytes]:
            for part in ev.parts:
                yield self.envelope.chunk([ChunkChoice(ev.index, _delta(part))], self._cite(part))
            delta = ChunkDelta()
            if self.gen.citations:
                delta.annotations = url_annotations(c.collected.content, self.gen.citations)
            yield self.envelope.chunk([ChunkChoice(ev.index, delta, ev.finish_reason)])

        return chunks


@dataclass(frozen=True)
class CompletionEnvelope:
    id: str
    created: int
    model: str
    system_fingerprint: str
    include_usage: bool

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

    def tail(self, total: TokenUsage) -> Iterator[bytes]:
        if self.include_usage:
            yield sse(
                CompletionChunk(
                    id=self.id,
                    created=self.created,
                    model=self.model,
                    choices=[],
                    system_fingerprint=self.system_fingerprint,
                    usage=usage(total, details=False),
                )
            )
        yield DONE


class CompletionRender:
    """The completions surface's one loop: every prompt's choices interleaved as they
    come (echoed prompts first), or each choice's whole text and logprobs."""

    def __init__(self, gen: Generation, n: int, envelope: CompletionEnvelope) -> None:
        self.gen = gen
        self.n = n
        self.envelope = envelope
        count = n * max(1, len(gen.echoes))
        self.texts = [self.echo(i) for i in range(count)]
        self.reasons = ["stop"] * count
        self.logprobs: list[list[TokenLogprob]] = [[] for _ in range(count)]
        self.total = TokenUsage(gen.prompt_tokens)

    def echo(self, index: int) -> str:
        echoes = self.gen.echoes
        return echoes[index // self.n] if echoes else ""

    async def run(self, stream: bool) -> AsyncIterator[bytes]:
        env = self.envelope
        if stream:
            for i, text in enumerate(self.texts):
                if text:
                    yield env.chunk(i, text)
        async for ev in self.gen.events:
            self.texts[ev.index] += ev.text
            if isinstance(ev, Delta):
                if ev.logprob is not None:
                    self.logprobs[ev.index].append(ev.logprob)
                if stream and ev.text:
                    yield env.chunk(ev.index, ev.text)
                continue
            self.total = self.total.plus(ev)
            self.reasons[ev.index] = ev.reason
            if stream:
                yield env.chunk(ev.index, ev.text, ev.reason)
        if stream:
            for item in env.tail(self.total):
                yield item

    def completion_logprobs(self, index: int) -> dict[str, Any]:
        items = self.logprobs[index]
        offsets, pos = [], len(self.echo(index))
        for it in items:
            offsets.append(pos)
            pos += len(it.token)
        return {
            "tokens": [it.token for it in items],
            "token_logprobs": [it.logprob for it in items],
            "top_logprobs": [{t.token: t.logprob for t in it.top} for it in items],
            "text_offset": offsets,
        }
