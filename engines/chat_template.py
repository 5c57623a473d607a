"""The RWKV World chat template: turns rendered as segments, tokenized segment by segment.

Tokenizing each turn on its own keeps token boundaries stable across requests, so the
state after "the conversation so far" is a reusable prefix for the prefix-state cache.

The defaults follow the RWKV-7 G1 templates: tools described in a System turn, a call as
a fenced JSON block after ``Assistant:``, a tool's result as ``User: Function output:``,
thinking opened with ``Assistant: <think``, "fake think" ``<think></think>`` to skip it,
and ``(think a bit)`` / ``(think a lot)`` after the question to set its length. Every
part is a setting (``options.chat_template``), so another format needs no code.
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
    # -- tools -------------------------------------------------------------------------
    # The System turn that lists the tools (one JSON object per line) and the ask.
    tools_system: str = "Tools:\n{tools}\n{instruction}"
    tools_instruction_required: str = "Return only a JSON function call."
    tools_instruction_auto: str = (
        "To use a tool, return only a JSON function call; otherwise answer in text."
    )
    # An assistant turn's calls ({calls}: one call object, or an array of several).
    tool_call: str = "```json\n{calls}\n```"
    # A tool's result, sent back as a turn of this role.
    tool_result: str = "Function output: {content}"
    tool_result_role: str = "user"
    # -- reasoning -----------------------------------------------------------------------
    reasoning: bool = False  # the model thinks (G1); others ignore reasoning_effort
    think_prompt: str = "Assistant: <think"
    fake_think_prompt: str = "Assistant: <think></think>"
    think_end: str = "</think>"
    # reasoning_effort -> (mode, suffix after the last user message); mode: think | fake
    efforts: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {
            "none": ("fake", ""),
            "minimal": ("fake", ""),
            "low": ("think", " (think a bit)"),
            "medium": ("think", ""),
            "high": ("think", " (think a lot)"),
        }
    )
    default_effort: str | None = None  # the mode when a request names none

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> ChatTemplate:
        if not options:
            return cls()
        known = {k: v for k, v in options.items() if k in cls.__dataclass_fields__}
        if "stop" in known:
            known["stop"] = tuple(known["stop"])
        if "efforts" in known:
            known["efforts"] = {str(k): (str(v[0]), str(v[1])) for k, v in known["efforts"].items()}
        return cls(**known)

    # -- derived parts -------------------------------------------------------------------

    @property
    def lead(self) -> str:
        """What an assistant turn puts between the generation prompt and its content."""
        head = self.assistant.split("{content}", 1)[0]
        return (
            head[len(self.generation_prompt) :] if head.startswith(self.generation_prompt) else ""
        )

    @property
    def call_fence(self) -> tuple[str, str]:
        """The text before and after the calls in an assistant turn's content."""
        head, _, tail = self.tool_call.partition("{calls}")
        return head, tail

    def thinking(self, effort: str | None) -> tuple[str | None, str]:
        """(generation prompt, suffix for the last user message) for a reasoning effort;
        (None, "") leaves the plain prompt (a model that does not think, or no effort)."""
        effort = effort or self.default_effort
        if not self.reasoning or effort is None or effort not in self.efforts:
            return None, ""
        mode, suffix = self.efforts[effort]
        return (self.think_prompt if mode == "think" else self.fake_think_prompt), suffix

    def tools_turn(self, tools: list[str], required: bool) -> str:
        ask = self.tools_instruction_required if required else self.tools_instruction_auto
        return self.tools_system.format(tools="\n".join(tools), instruction=ask)

    def calls_content(self, calls: str) -> str:
        return self.tool_call.format(calls=calls)

    def result_content(self, content: str) -> str:
        return self.tool_result.format(content=content)

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

    def prompt(
        self,
        turns: list[Turn],
        encode: Callable[[str], list[int]],
        generation_prompt: str | None = None,
    ) -> RenderedPrompt:
        """The prompt of rendered turns plus the generation prompt; a boundary after each
        turn (the prefix-state cache stores the state there)."""
        tokens: list[int] = []
        bounds: list[int] = []
        for t in turns:
            tokens.extend(t.tokens)
            bounds.append(len(tokens))
        gen = self.generation_prompt if generation_prompt is None else generation_prompt
        tokens.extend(encode(gen))
        text = "".join(t.text for t in turns) + gen
        return RenderedPrompt(tokens, bounds, text)

    def render(
        self, messages: list[tuple[str, str]], encode: Callable[[str], list[int]]
    ) -> RenderedPrompt:
        return self.prompt(self.turns(messages, encode), encode)
