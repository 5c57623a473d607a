"""Domain types for text generation (no torch): parameters, requests, streamed events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from engines.base import ModelInfo
from engines.constraint import Constraint

__all__ = [
    "ChatEngine",
    "FinishEvent",
    "GenerationRequest",
    "SamplingParams",
    "TokenEvent",
    "TopLogprob",
]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_decay: float = 0.996
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(slots=True)
class GenerationRequest:
    prompt_tokens: list[int]
    params: SamplingParams
    n: int = 1
    state: str | None = None
    # Token offsets after which the prefix state is worth caching (message ends).
    boundaries: list[int] = field(default_factory=list)
    # Who asks (a hash of the API key): admission keeps one owner to its share of slots.
    owner: str | None = None
    # A grammar the output must follow (tool calls, response formats).
    constraint: Constraint | None = None
    # The constraint was checked by ``ChatEngine.prepare`` already (off the event loop).
    prepared: bool = False
    # Whether this prompt's states may outlive the process (the disk tier); false for a
    # conversation the client asked not to store.
    persist_states: bool = True
    # Filled by the engine: the prefix digests whose states it queued for the disk tier
    # (what deleting the conversation forgets).
    state_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: list[int]


@dataclass(frozen=True, slots=True)
class TokenEvent:
    index: int  # which of the n choices
    text: str  # decoded text to emit now (may be empty while a stop string is pending)
    token_id: int
    token_text: str
    token_bytes: bytes = b""
    logprob: float | None = None
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class FinishEvent:
    index: int
    reason: str  # stop | length | error
    completion_tokens: int
    text: str = ""  # any held-back text flushed at the end
    error: Exception | None = None
    cached_tokens: int = 0  # prompt tokens read from the prefix-state cache


@runtime_checkable
class ChatEngine(Protocol):
    """What the chat service needs of a generation engine."""

    info: ModelInfo
    context_length: int
    state_names: list[str]
    chat_template: dict[str, Any] | None  # the template's settings (None: the default)
    max_token_bytes: int  # the longest token's bytes (bounds what max_tokens can write)

    def encode(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...

    def forget_states(self, state: str, keys: list[str]) -> None:
        """Delete the kept states of a stored conversation (``GenerationRequest.state_keys``)."""
        ...

    def prepare(self, constraint: Constraint, max_tokens: int) -> None:
        """Check a constraint against the engine (its grammar, the budget its shortest
        output needs); raises a 400 when it cannot be served. May take time."""
        ...

    def submit(self, request: GenerationRequest) -> Any:
        """Queue a request; raises at once (400/429) when it cannot be taken."""
        ...

    def events(self, handle: Any) -> AsyncIterator[TokenEvent | FinishEvent]:
        """The submitted request's events; closing the iterator cancels it."""
        ...
