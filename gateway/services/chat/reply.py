"""A whole (non-streamed) chat reply: each choice's events read back through the output
parser into content, reasoning and tool calls, with its finish reason and token counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import EngineError
from engines.generation import TokenEvent
from gateway.schemas.chat import ChatCompletionMessage, CompletionUsage
from gateway.services.chat.output import (
    Collected,
    OutputParser,
    finish_reason,
    url_annotations,
)
from gateway.services.chat.stream import chat_logprob

if TYPE_CHECKING:
    from gateway.services.chat.service import Begun

__all__ = ["ChoiceOutput", "collect_chat", "usage_of"]


@dataclass
class ChoiceOutput:
    collected: Collected = field(default_factory=Collected)
    reason: str = "stop"
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    logprobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finish_reason(self) -> str:
        return finish_reason(self.reason, len(self.collected.calls))

    def tool_calls(self) -> list[dict[str, Any]]:
        return [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in self.collected.calls
        ]

    def message(self, citations: list[dict[str, Any]] | None) -> ChatCompletionMessage:
        c = self.collected
        msg = ChatCompletionMessage(content=c.content if c.content or not c.calls else None)
        if c.calls:
            msg.tool_calls = self.tool_calls()
        if c.reasoning:
            msg.reasoning_content = c.reasoning
        if citations:
            msg.annotations = url_annotations(c.content, citations)
        return msg


async def collect_chat(run: Begun, n: int, logprobs: bool) -> list[ChoiceOutput]:
    outs = [ChoiceOutput() for _ in range(n)]
    parsers = [OutputParser(run.mode) for _ in range(n)]
    async for ev in run.engine.events(run.handle):
        o, parser = outs[ev.index], parsers[ev.index]
        if isinstance(ev, TokenEvent):
            if parser.in_reasoning:
                o.reasoning_tokens += 1
            o.collected.add(parser.feed(ev.text))
            if logprobs:
                o.logprobs.append(chat_logprob(ev))
            continue
        if ev.reason == "error":
            raise ev.error or EngineError("generation failed")
        o.collected.add(parser.feed(ev.text))
        o.collected.add(parser.finish())
        o.reason, o.completion_tokens = ev.reason, ev.completion_tokens
        o.cached_tokens = ev.cached_tokens
    return outs


def usage_of(prompt_tokens: int, outs: list[ChoiceOutput]) -> CompletionUsage:
    completion = sum(o.completion_tokens for o in outs)
    reasoning = sum(o.reasoning_tokens for o in outs)
    return CompletionUsage(
        prompt_tokens,
        completion,
        prompt_tokens + completion,
        completion_tokens_details={"reasoning_tokens": reasoning},
        prompt_tokens_details={"cached_tokens": max((o.cached_tokens for o in outs), default=0)},
    )
