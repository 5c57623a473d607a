"""Reading a generation back as the API shows it, incrementally: a thought
(``<think>...</think>``) becomes reasoning, function calls become tool calls (the id and
name first, then the arguments as they come), and the rest is content.

Calls are read in the compact form the grammar guarantees
(``{"name":"f","arguments":{...}}``, or an array of them).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from chat.events import CallArgs, CallStart, Content, Part, Reasoning, finish_reason
from chat.tools import OutputMode

__all__ = [
    "CallArgs",
    "CallStart",
    "Collected",
    "Content",
    "OutputParser",
    "Reasoning",
    "finish_reason",
    "new_call_id",
]

_HEADER = re.compile(r'^\{"name":("(?:[^"\\]|\\.)*"),"arguments":')
_THINK_OPEN = "<think>"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _held(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could begin ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


@dataclass
class _Value:
    """Where one JSON value (a call's arguments) ends, read character by character."""

    depth: int = 0
    in_string: bool = False
    escape: bool = False
    started: bool = False
    scalar: bool = False

    def ends_before(self, ch: str) -> bool:
        """True when ``ch`` is past the value (a scalar ends at the call's ``}``)."""
        return self.scalar and self.depth == 0 and ch in ",}]"

    def push(self, ch: str) -> bool:
        """Take ``ch``; True when the value is complete after it."""
        if self.in_string:
            if self.escape:
                self.escape = False
            elif ch == "\\":
                self.escape = True
            elif ch == '"':
                self.in_string = False
                return self.depth == 0
            return False
        if ch == '"':
            self.in_string = self.started = True
            return False
        if ch in "[{":
            self.depth += 1
        elif ch in "]}":
            self.depth -= 1
            return self.depth == 0
        elif not self.started:
            self.scalar = True
        self.started = True
        return False


@dataclass
class OutputParser:
    mode: OutputMode
    state: str = "start"
    buf: str = ""
    content_started: bool = False
    calls: int = 0  # calls started so far
    in_array: bool = False
    value: _Value = field(default_factory=_Value)

    def __post_init__(self) -> None:
        if self.mode.think_open:
            self.state = "think_lead"
        elif self.mode.calls == "bare":
            self.state = "calls"

    @property
    def in_reasoning(self) -> bool:
        return self.state in ("think_lead", "think")

    def feed(self, text: str) -> list[Part]:
        self.buf += text
        out: list[Part] = []
        while self.buf:
            before = (self.state, len(self.buf))
            getattr(self, f"_{self.state}")(out)
            if (self.state, len(self.buf)) == before:
                break  # waiting for more text
        return out

    def finish(self) -> list[Part]:
        """Whatever is held back, once the output has ended."""
        out: list[Part] = []
        rest, self.buf = self.buf, ""
        if self.state in ("think_lead", "think"):
            if rest.strip():
                out.append(Reasoning(rest))
        elif self.state in ("start", "body", "content", "header"):
            self._content(out, rest)  # "header": a fence that opened no call
        elif self.state == "args" and rest:
            out.append(CallArgs(self.calls - 1, rest))
        return out

    # -- states ----------------------------------------------------------------------------

    def _think_lead(self, out: list[Part]) -> None:
        if self.buf.startswith(">"):
            self.buf = self.buf[1:]
        self.buf = self.buf.lstrip()
        if self.buf:
            self.state = "think"

    def _think(self, out: list[Part]) -> None:
        end = self.mode.think_end
        cut = self.buf.find(end)
        if cut >= 0:
            if self.buf[:cut].rstrip():
                out.append(Reasoning(self.buf[:cut].rstrip()))
            self.buf = self.buf[cut + len(end) :]
            self.state = "calls" if self.mode.calls == "bare" else "body"
            return
        keep = _held(self.buf, end)
        ready = self.buf[: len(self.buf) - keep].rstrip()  # whitespace may end the thought
        if ready:
            out.append(Reasoning(ready))
            self.buf = self.buf[len(ready) :]

    def _start(self, out: list[Part]) -> None:
        head = self.buf.lstrip()
        if self.mode.reasoning and head and _THINK_OPEN.startswith(head):
            return  # could still open a thought
        if self.mode.reasoning and head.startswith(_THINK_OPEN):
            self.buf = head[len(_THINK_OPEN) :]
            self.state = "think"
            return
        self.state = "body"

    def _body(self, out: list[Part]) -> None:
        if self.mode.calls == "fenced":
            head = self.mode.fence[0]
            if head.startswith(self.buf) and self.buf != head:
                return  # could still open the calls
            if self.buf.startswith(head):
                self.buf = self.buf[len(head) :]
                self.state = "calls"
                return
        self.state = "content"

    def _content(self, out: list[Part], text: str | None = None) -> None:
        chunk = self.buf if text is None else text
        if text is None:
            self.buf = ""
        if not self.content_started:
            chunk = chunk.lstrip()
            self.content_started = bool(chunk)
        if chunk:
            out.append(Content(chunk))

    def _calls(self, out: list[Part]) -> None:
        if self.buf.startswith("["):
            self.in_array = True
            self.buf = self.buf[1:]
        self.state = "header"

    def _header(self, out: list[Part]) -> None:
        m = _HEADER.match(self.buf)
        if m is None:
            if len(self.buf) > 4096:  # not a call after all: keep it as text
                self.state = "content"
            return
        out.append(CallStart(self.calls, new_call_id(), json.loads(m.group(1))))
        self.calls += 1
        self.buf = self.buf[m.end() :]
        self.value = _Value()
        self.state = "args"

    def _args(self, out: list[Part]) -> None:
        taken = 0
        done = False
        for ch in self.buf:
            if self.value.ends_before(ch):
                done = True
                break
            taken += 1
            if self.value.push(ch):
                done = True
                break
        if taken:
            out.append(CallArgs(self.calls - 1, self.buf[:taken]))
            self.buf = self.buf[taken:]
        if done:
            self.state = "after_call"

    def _after_call(self, out: list[Part]) -> None:
        if self.buf.startswith("}"):
            self.buf = self.buf[1:]
        if not self.buf:
            return
        if self.in_array and self.buf.startswith(","):
            self.buf = self.buf[1:]
            self.state = "header"
            return
        self.state = "tail"

    def _tail(self, out: list[Part]) -> None:
        self.buf = ""  # the fence's end and the array's "]"


@dataclass
class Collected:
    """A whole output, gathered from the parser's events."""

    content: str = ""
    reasoning: str = ""
    calls: list[dict[str, str]] = field(default_factory=list)

    def add(self, events: list[Part]) -> None:
        for ev in events:
            if isinstance(ev, Content):
                self.content += ev.text
            elif isinstance(ev, Reasoning):
                self.reasoning += ev.text
            elif isinstance(ev, CallStart):
                self.calls.append({"id": ev.id, "name": ev.name, "arguments": ""})
            else:
                self.calls[ev.index]["arguments"] += ev.text
