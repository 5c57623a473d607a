"""A conversation as the chat template takes it: (role, text) turns.

Assistant turns that called functions are written the way the model writes calls; a
tool's result becomes a turn of the template's result role. Every ``tool`` message must
answer a call made earlier in the conversation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidRequestError
from engines.chat_template import ChatTemplate

__all__ = ["Message", "ToolCall", "render_calls", "to_turns"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True, slots=True)
class Message:
    """One message of either wire form (chat messages, Responses items)."""

    role: str  # system | developer | user | assistant | tool
    text: str = ""
    calls: tuple[ToolCall, ...] = ()
    call_id: str | None = None  # a tool message: the call it answers
    param: str = "messages"  # where it came from, for errors


def _call_doc(call: ToolCall) -> dict[str, Any]:
    try:
        args: Any = json.loads(call.arguments) if call.arguments else {}
    except ValueError:
        args = call.arguments
    return {"name": call.name, "arguments": args}


def render_calls(calls: tuple[ToolCall, ...] | list[ToolCall]) -> str:
    """Calls in the compact form the model writes (one object, or an array)."""
    docs = [_call_doc(c) for c in calls]
    body: Any = docs[0] if len(docs) == 1 else docs
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def to_turns(messages: list[Message], tpl: ChatTemplate) -> list[tuple[str, str]]:
    """(role, text) turns for the template, or a 400 naming the message at fault."""
    open_calls: set[str] = set()
    out: list[tuple[str, str]] = []
    for m in messages:
        if m.role == "tool":
            if not m.call_id:
                raise InvalidRequestError(
                    "a tool message needs 'tool_call_id'", param=f"{m.param}.tool_call_id"
                )
            if m.call_id not in open_calls:
                raise InvalidRequestError(
                    f"tool_call_id {m.call_id!r} answers no earlier tool call",
                    param=f"{m.param}.tool_call_id",
                )
            out.append((tpl.tool_result_role, tpl.result_content(m.text)))
            continue
        if m.role == "assistant" and m.calls:
            open_calls.update(c.id for c in m.calls)
            calls = tpl.calls_content(render_calls(m.calls))
            out.append(("assistant", f"{m.text.strip()}\n{calls}" if m.text.strip() else calls))
            continue
        out.append((m.role, m.text))
    return out
