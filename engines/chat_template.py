"""The RWKV World chat template: turns rendered as segments, tokenized segment by segment.

Tokenizing each turn on its own keeps token boundaries stable across requests, so the
state after "the conversation so far" is a reusable prefix for the prefix-state cache.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChatTemplate", "RenderedPrompt", "Turn"]

_BLANK_LINES = re.compile(r"\n\s*\n+")


@dataclass(frozen=True)
class RenderedPrompt:
    tokens: list[int]
    boundaries: list[int]  # token offsets after each turn
    text: str


@dataclass(frozen=True)
class Turn:
    """One rendered message: its text and its tokens (tokenized on its own)."""

    text: str
    tokens: list[int]


@dataclass(frozen=True)
class ChatTemplate:
    system: str = "System: {content}"
    user: str = "User: {content}"
    assistant: str = "Assistant: {content}"
    separator: str = "\n\n"
    generation_prompt: str = "Assistant:"
    stop: tuple[str, ...] = ("\n\nUser:",)
    # A blank line ends a turn in this format, so blank lines inside a message collapse.
    collapse_blank_lines: bool = True
    roles: dict[str, str] = field(
        default_factory=lambda: {
            "system": "system",
            "developer": "system",
            "user": "user",
            "assistant": "assistant",
        }
    )

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> ChatTemplate:
        if not options:
            return cls()
        known = {k: v for k, v in options.items() if k in cls.__dataclass_fields__}
        if "stop" in known:
            known["stop"] = tuple(known["stop"])
        return cls(**known)

    def _clean(self, text: str) -> str:
        text = text.strip()
        return _BLANK_LINES.sub("\n", text) if self.collapse_blank_lines else text

    def format(self, role: str, content: str) -> str:
        fmt = {"system": self.system, "user": self.user, "assistant": self.assistant}[
            self.roles[role]
        ]
        return fmt.format(content=self._clean(content)) + self.separator

    def segments(self, messages: list[tuple[str, str]]) -> list[str]:
        return [*(self.format(role, content) for role, content in messages), self.generation_prompt]

    def turn(self, role: str, content: str, encode: Callable[[str], list[int]]) -> Turn:
        text = self.format(role, content)
        return Turn(text, encode(text))

    def turns(
        self, messages: list[tuple[str, str]], encode: Callable[[str], list[int]]
    ) -> list[Turn]:
        return [self.turn(role, content, encode) for role, content in messages]

    def prompt(self, turns: list[Turn], encode: Callable[[str], list[int]]) -> RenderedPrompt:
        """The prompt of rendered turns plus the generation prompt; a boundary after each
        turn (the prefix-state cache stores the state there)."""
        tokens: list[int] = []
        bounds: list[int] = []
        for t in turns:
            tokens.extend(t.tokens)
            bounds.append(len(tokens))
        tokens.extend(encode(self.generation_prompt))
        text = "".join(t.text for t in turns) + self.generation_prompt
        return RenderedPrompt(tokens, bounds, text)

    def render(
        self, messages: list[tuple[str, str]], encode: Callable[[str], list[int]]
    ) -> RenderedPrompt:
        return self.prompt(self.turns(messages, encode), encode)
