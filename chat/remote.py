"""The remote backend: a model served by upstream servers (`engine: remote`).

The gateway keeps what only it can do: the knowledge base (sources go in as a system
message right before the last user turn, citations come back on the answer), knowledge
profiles and their States, the no-answer reply, and routing (the conversation's affinity
key). Templates, tools, response formats and sampling happen at the upstream.

Chat completions and completions pass through as the client sent them (``Relayed``: the
upstream's JSON or SSE, renamed and cited). Other surfaces (Responses, MCP ``ask``) get
a typed ``Generation``: the command goes upstream as a streamed chat completion and its
chunks are read into the same events a local engine yields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from chat.backend import Generation, Relayed, Target, canned
from chat.citations import citation_dicts, url_annotations
from chat.command import ChatCommand, CompletionCommand, Forward
from chat.config import ChatSettings
from chat.events import CallArgs, CallStart, Content, Delta, Finish, GenerationEvent, Part
from chat.events import Reasoning as ReasoningPart
from chat.limits import check_limits
from chat.sse import events, sse
from chat.tools import OutputSpec
from chat.turns import Message
from core.errors import InvalidRequestError, UpstreamStatusError
from engines.remote.config import RemoteOptions
from engines.remote.engine import RemoteChat
from rag.service import Augmentation, Citation, RagService, Room

__all__ = ["RemoteBackend", "affinity_key", "text_of"]

_decoder = msgspec.json.Decoder()
Json = dict[str, Any]


def text_of(content: Any) -> str:
    """A message's text, whatever form its content takes."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def affinity_key(
    options: RemoteOptions, session: str | None, user: str | None, messages: list[Any]
) -> str | None:
    """Which conversation a request continues: X-Session-Id; else (``prefix``) the system
    prompt when long enough to be shared, else it and the first user turn, which every
    later turn of the conversation repeats; (``user``) the request's ``user``."""
    if options.affinity == "off":
        return None
    if session:
        return f"session:{session}"
    if options.affinity == "user":
        return f"user:{user}" if user else None
    system = ""
    first_user = None
    for m in messages:
        role = m.get("role") if isinstance(m, dict) else None
        if role in ("system", "developer") and not system and first_user is None:
            system = text_of(m.get("content"))
        elif role == "user":
            first_user = text_of(m.get("content"))
            break
    if len(system) >= options.affinity_system_chars:
        return f"system:{system}"
    if first_user is None and not system:
        return f"user:{user}" if user else None
    return f"prefix:{system}\0{first_user or ''}"


def _prompt_key(options: RemoteOptions, session: str | None, prompt: Any) -> str | None:
    if options.affinity == "off":
        return None
    if session:
        return f"session:{session}"
    if options.affinity == "prefix" and isinstance(prompt, str):
        return f"prompt:{prompt[:1024]}"
    return None


def _rag_prompt_text(messages: list[Any]) -> str:
    return "\n\n".join(f"{m.get('role')}: {text_of(m.get('content'))}" for m in messages)


def _wire_messages(messages: tuple[Message, ...]) -> list[Json]:
    out: list[Json] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.call_id, "content": m.text})
        elif m.calls:
            calls = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in m.calls
            ]
            out.append({"role": m.role, "content": m.text or None, "tool_calls": calls})
        else:
            out.append({"role": m.role, "content": m.text})
    return out


def _output_fields(spec: OutputSpec) -> Json:
    """Tools, tool choice and response format in the chat API's own terms."""
    out: Json = {}
    if spec.tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in spec.tools
        ]
        out["parallel_tool_calls"] = spec.parallel
        out["tool_choice"] = (
            {"type": "function", "function": {"name": spec.named}}
            if spec.choice == "named"
            else spec.choice
        )
    if spec.schema is not None:
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": spec.schema},
        }
    return out


def _chat_body(cmd: ChatCommand) -> Json:
    """The command as a streamed chat completion that ends with its usage."""
    s = cmd.sampling
    body: Json = {
        "model": cmd.model,
        "messages": _wire_messages(cmd.messages),
        "stream": True,
        "stream_options": {"include_usage": True},
        "n": cmd.n,
    }
    optional = {
        "max_completion_tokens": s.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
        "seed": s.seed,
        "stop": list(s.stop) or None,
        "reasoning_effort": cmd.reasoning_effort,
        "user": cmd.caller.user,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    body.update(_output_fields(cmd.output))
    return body


class RemoteBackend:
    def __init__(self, engine: RemoteChat, settings: ChatSettings, rag: RagService | None) -> None:
        self.engine = engine
        self.settings = settings
        self.rag = rag

    def _count(self) -> Callable[[str], int]:
        tok = self.engine.tokenizer
        return lambda text: tok.count([text])[0]

    async def _augment(
        self, target: Target, messages: list[Any], wanted: int | None
    ) -> tuple[Augmentation | None, list[Any]]:
        """Sources for the conversation, as a system message right before the last user
        turn (the token counts are the remote engine's estimate, which errs long)."""
        if target.knowledge is None or self.rag is None:
            return None, messages
        messages = list(messages)
        count, ctx = self._count(), self.engine.context_length
        room = Room(
            ctx,
            sum(count(text_of(m.get("content"))) + 4 for m in messages),
            self.rag.reserve(wanted, ctx),
            lambda head: count(head) + 4,
            count,
        )
        users = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
        aug = await self.rag.for_conversation(target.knowledge, users, room)
        last_user = max(
            (i for i, m in enumerate(messages) if m.get("role") == "user"), default=None
        )
        if aug.instruction is not None and last_user is not None:
            messages.insert(last_user, {"role": "system", "content": aug.instruction})
        return aug, messages

    async def chat(self, cmd: ChatCommand, target: Target) -> Generation | Relayed:
        check_limits(cmd.n, cmd.sampling.stop, self.settings)  # the rest is the upstream's
        fwd = cmd.forward
        body = dict(fwd.body) if fwd is not None else _chat_body(cmd)
        state = cmd.state or target.state
        if state is not None:
            body["state"] = state
        wanted = cmd.sampling.max_tokens
        aug, messages = await self._augment(target, list(body.get("messages") or []), wanted)
        citations = aug.citations if aug is not None else None
        if aug is not None:
            if aug.no_answer is not None:
                return canned(aug.no_answer, cmd.n, target.fingerprint, citations or [])
            body["messages"] = messages
        debug = _rag_prompt_text(messages) if aug is not None and aug.debug else None
        opts = self.engine.options
        key = affinity_key(opts, cmd.caller.session, cmd.caller.user, messages)
        extras = state is not None
        if fwd is None:
            _, chunks = await self.engine.stream("chat/completions", body, key=key, extras=extras)
            gen = Generation(_nothing(), 0, target.fingerprint, citations, rag_prompt=debug)
            gen.events = _Reader(chunks, opts.max_event_bytes, gen).events()
            return gen
        return await self._relay(fwd, body, key, extras, _Extra(cmd.model, citations, debug))

    async def complete(self, cmd: CompletionCommand, target: Target) -> Relayed:
        check_limits(cmd.n, cmd.sampling.stop, self.settings)
        if cmd.forward is None:
            raise InvalidRequestError("completions on a remote model pass through only")
        body = dict(cmd.forward.body)
        citations = None
        if target.knowledge is not None and self.rag is not None:
            prompt = cmd.prompt
            if not isinstance(prompt, str):
                raise InvalidRequestError("retrieval needs a single text prompt", param="prompt")
            count, ctx = self._count(), self.engine.context_length
            wanted = 16 if cmd.sampling.max_tokens is None else cmd.sampling.max_tokens
            room = Room(
                ctx, 0, min(wanted, ctx // 2), lambda head: count(head + "\n\n" + prompt), count
            )
            body["prompt"], aug = await self.rag.for_prompt(target.knowledge, prompt, room)
            citations = aug.citations
        key = _prompt_key(self.engine.options, cmd.caller.session, body.get("prompt"))
        return await self._relay(cmd.forward, body, key, False, _Extra(cmd.model, citations))

    async def _relay(
        self, fwd: Forward, body: Json, key: str | None, extras: bool, extra: _Extra
    ) -> Relayed:
        if fwd.stream:
            named, chunks = await self.engine.stream(fwd.path, body, key=key, extras=extras)
            rewrite = extra.citations is not None or named != extra.model
            limit = self.engine.options.max_event_bytes
            return Relayed(_relayed(chunks, extra if rewrite else None, limit))
        answer = await self.engine.post(fwd.path, body, key=key, extras=extras)
        return Relayed(extra.finish(answer))


class _Extra:
    """What the gateway adds to an upstream's answer."""

    def __init__(
        self, model: str, citations: list[Citation] | None, rag_prompt: str | None = None
    ) -> None:
        self.model = model  # the name the client asked for
        self.citations = citations
        self.rag_prompt = rag_prompt
        self.cited = citations is None
        self.content: dict[int, str] = {}

    def finish(self, answer: Json) -> Json:
        """A non-streamed answer with the client's model name and the citations."""
        answer["model"] = self.model
        if self.citations is not None:
            answer["citations"] = citation_dicts(self.citations)
            if self.citations:
                for choice in answer.get("choices") or []:
                    msg = choice.get("message")
                    if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                        msg["annotations"] = url_annotations(msg["content"], self.citations)
        if self.rag_prompt is not None:
            answer["rag_prompt"] = self.rag_prompt
        return answer

    def event(self, raw: bytes) -> bytes:
        """One upstream event renamed, the first with choices cited, finishes annotated."""
        if not raw.startswith(b"data:"):
            return raw + b"\n\n"
        data = raw[5:].strip()
        if data == b"[DONE]":
            return raw + b"\n\n"
        try:
            chunk = _decoder.decode(data)
        except msgspec.DecodeError:
            return raw + b"\n\n"
        if not isinstance(chunk, dict) or "error" in chunk:
            return raw + b"\n\n"
        chunk["model"] = self.model
        cites = self.citations
        if not self.cited and chunk.get("choices"):
            chunk["citations"], self.cited = citation_dicts(cites), True
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta")
            i = int(choice.get("index", 0))
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                self.content[i] = self.content.get(i, "") + delta["content"]
            if cites and choice.get("finish_reason") and isinstance(delta, dict):
                delta["annotations"] = url_annotations(self.content.get(i, ""), cites)
        return sse(chunk)


async def _relayed(
    chunks: AsyncIterator[bytes], extra: _Extra | None, max_event_bytes: int
) -> AsyncIterator[bytes]:
    async for batch in events(chunks, max_event_bytes):
        if extra is None:
            yield b"".join(e + b"\n\n" for e in batch)
        else:
            for e in batch:
                yield extra.event(e)


async def _nothing() -> AsyncIterator[GenerationEvent]:
    return
    yield


class _Reader:
    """An upstream's chat-completion stream read as typed events (the Responses API and
    MCP ``ask`` on a remote model): parts as they come, the finishes once its usage is in."""

    def __init__(self, chunks: AsyncIterator[bytes], max_event_bytes: int, gen: Generation) -> None:
        self.chunks = chunks
        self.gen = gen
        self.max_event_bytes = max_event_bytes
        self.reasons: dict[int, str] = {}
        self.calls: dict[int, set[int]] = {}
        self.usage: Json = {}

    async def events(self) -> AsyncIterator[GenerationEvent]:
        async for batch in events(self.chunks, self.max_event_bytes):
            for raw in batch:
                if not raw.startswith(b"data:"):
                    continue
                data = raw[5:].strip()
                if data == b"[DONE]":
                    continue
                chunk = _decoder.decode(data)
                if not isinstance(chunk, dict):
                    continue
                if isinstance(chunk.get("error"), dict):
                    raise UpstreamStatusError(502, chunk["error"])
                if isinstance(chunk.get("usage"), dict):
                    self.usage = chunk["usage"]
                    self.gen.prompt_tokens = int(self.usage.get("prompt_tokens", 0))
                for delta in self._deltas(chunk):
                    yield delta
        for ev in self._finishes():
            yield ev

    def _deltas(self, chunk: Json) -> list[Delta]:
        out = []
        for choice in chunk.get("choices") or []:
            i = int(choice.get("index", 0))
            if choice.get("finish_reason"):
                self.reasons[i] = str(choice["finish_reason"])
            delta = choice.get("delta") or {}
            parts: list[Part] = []
            if delta.get("reasoning_content"):
                parts.append(ReasoningPart(str(delta["reasoning_content"])))
            if delta.get("content"):
                parts.append(Content(str(delta["content"])))
            started = self.calls.setdefault(i, set())
            for call in delta.get("tool_calls") or []:
                c = int(call.get("index", 0))
                fn = call.get("function") or {}
                if c not in started:
                    started.add(c)
                    parts.append(
                        CallStart(c, str(call.get("id") or f"call_{c}"), str(fn.get("name")))
                    )
                if fn.get("arguments"):
                    parts.append(CallArgs(c, str(fn["arguments"])))
            if parts:
                text = "".join(p.text for p in parts if isinstance(p, Content))
                out.append(Delta(i, text, tuple(parts)))
        return out

    def _finishes(self) -> list[Finish]:
        u = self.usage
        details = u.get("completion_tokens_details") or {}
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        out = []
        for i in sorted({0, *self.reasons}):
            reason = self.reasons.get(i, "stop")
            first = i == 0
            out.append(
                Finish(
                    i,
                    "stop" if reason == "tool_calls" else reason,
                    calls=len(self.calls.get(i, ())),
                    completion_tokens=int(u.get("completion_tokens", 0)) if first else 0,
                    reasoning_tokens=int(details.get("reasoning_tokens", 0)) if first else 0,
                    cached_tokens=int(cached or 0) if first else 0,
                )
            )
        return out
