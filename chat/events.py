"""What a generation yields, typed: output parts (content, reasoning, the start and the
arguments of a function call) grouped per token as ``Delta``s, and one ``Finish`` per
choice with its reason and token counts. Every surface reads these; none re-parses text
or SSE of its own."""

from __future__ import annotations

from dataclasses import dataclass

from engines.generation import TopLogprob

__all__ = [
    "CallArgs",
    "CallStart",
    "Content",
    "Delta",
    "Finish",
    "GenerationEvent",
    "Part",
    "Reasoning",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
    "finish_reason",
]


@dataclass(frozen=True, slots=True)
class Reasoning:
    text: str


@dataclass(frozen=True, slots=True)
class Content:
    text: str


@dataclass(frozen=True, slots=True)
class CallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class CallArgs:
    index: int
    text: str


Part = Reasoning | Content | CallStart | CallArgs


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The sampled token's log probability and the most likely alternatives."""

    token: str
    logprob: float | None
    bytes: list[int]
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Delta:
    """What one choice produced for one token: its raw text (completions read it as is)
    and the output parts the text made (chat and Responses read those)."""

    index: int
    text: str
    parts: tuple[Part, ...] = ()
    logprob: TokenLogprob | None = None


def finish_reason(reason: str, calls: int) -> str:
    """``tool_calls`` when a choice ended by calling functions (``length`` stays)."""
    return "tool_calls" if calls and reason == "stop" else reason


@dataclass(frozen=True, slots=True)
class Finish:
    """A choice's end: the parts held back until then, why it ended, its counts."""

    index: int
    reason: str  # stop | length (as the engine says; see ``finish_reason``)
    text: str = ""
    parts: tuple[Part, ...] = ()
    calls: int = 0  # function calls the choice made
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0

    @property
    def finish_reason(self) -> str:
        return finish_reason(self.reason, self.calls)


GenerationEvent = Delta | Finish


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def plus(self, f: Finish) -> Usage:
        return Usage(
            self.prompt_tokens,
            self.completion_tokens + f.completion_tokens,
            self.reasoning_tokens + f.reasoning_tokens,
            max(self.cached_tokens, f.cached_tokens),
        )
