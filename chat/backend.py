"""The seam between the chat core and what generates: ``ChatBackend``, implemented by a
local engine (``chat.local``) and by remote upstreams (``chat.remote``).

A backend takes a command with its model already resolved (``Target``) and returns a
``Generation``: typed events to read, and what the surfaces show beside them. A remote
backend may instead pass a request through as the client sent it (``Relayed``), when
the surface speaks the upstream's own API and nothing needs rewriting but names and
citations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from chat.command import ChatCommand, CompletionCommand
from chat.events import Content, Delta, Finish, GenerationEvent
from engines.registry import ServedModel
from rag.service import Citation, Knowledge

__all__ = ["ChatBackend", "Generation", "Relayed", "Target", "canned"]


@dataclass(frozen=True, slots=True)
class Target:
    """A command's model, resolved once: the served model, the State a profile names,
    and the knowledge the request retrieves from."""

    served: ServedModel
    state: str | None
    knowledge: Knowledge | None

    @property
    def fingerprint(self) -> str:
        extra = self.served.info.extra
        strategy = str(extra.get("strategy", "")).replace(" ", "_")
        return f"fp_{extra.get('version', 'rwkv')}_{strategy}"


@dataclass
class Generation:
    """A generation under way: its events, and what every surface shows beside them."""

    events: AsyncIterator[GenerationEvent]
    prompt_tokens: int
    fingerprint: str
    citations: list[Citation] | None = None
    # The no-answer reply (the model did not run: its events are the canned text).
    no_answer: str | None = None
    # The prompt the model read, when the request asked to see it (knowledge.debug).
    rag_prompt: str | None = None
    # Raw prompt texts, for ``echo`` (completions).
    echoes: list[str] = field(default_factory=list)
    # Where the conversation's states were kept ({"model", "state", "keys"}), so deleting
    # it can forget them; None when the backend keeps none.
    states: dict[str, Any] | None = None


@dataclass
class Relayed:
    """A request passed through to an upstream: its JSON answer, or its SSE bytes."""

    body: dict[str, Any] | AsyncIterator[bytes]


class ChatBackend(Protocol):
    async def chat(self, cmd: ChatCommand, target: Target) -> Generation | Relayed: ...

    async def complete(self, cmd: CompletionCommand, target: Target) -> Generation | Relayed: ...


async def _canned_events(answer: str, n: int) -> AsyncIterator[GenerationEvent]:
    for i in range(n):
        yield Delta(i, answer, (Content(answer),))
        yield Finish(i, "stop")


def canned(answer: str, n: int, fingerprint: str, citations: list[Citation]) -> Generation:
    """The no-answer reply as a generation: the model does not run, no tokens are used."""
    return Generation(_canned_events(answer, n), 0, fingerprint, citations, no_answer=answer)
