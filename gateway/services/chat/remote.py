"""Chat and text completions on a remote model: the whole request goes to an upstream.

The gateway keeps what only it can do: the knowledge base (sources go in as a system
message right before the last user turn, citations come back on the answer), knowledge
profiles and their States, the no-answer reply, and routing (the conversation's affinity
key). Templates, tools, response formats and sampling happen at the upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from core.errors import InvalidRequestError
from engines.remote.client import bad_gateway
from engines.remote.config import RemoteOptions
from engines.remote.engine import RemoteChat
from gateway.services.chat.output import url_annotations
from gateway.services.chat.stream import guard, sse
from rag.config import NoAnswer
from rag.service import Augmentation, Knowledge, RagService

__all__ = [
    "Forwarded",
    "affinity_key",
    "augment_messages",
    "augment_prompt",
    "finish",
    "forward_body",
    "prompt_key",
    "rag_prompt_text",
    "relay",
    "text_of",
]

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


def forward_body(req: msgspec.Struct, raw: bytes | None) -> Json:
    """What goes upstream: the client's own JSON when there is one (so fields this server
    does not know, such as a vLLM sampling option, still reach the upstream)."""
    body: Any = None
    if raw:
        try:
            body = _decoder.decode(raw)
        except msgspec.DecodeError:
            body = None
    if not isinstance(body, dict):
        body = {k: v for k, v in msgspec.to_builtins(req).items() if v is not None}
    body.pop("knowledge", None)
    out: Json = body
    return out


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


def prompt_key(options: RemoteOptions, session: str | None, prompt: Any) -> str | None:
    if options.affinity == "off":
        return None
    if session:
        return f"session:{session}"
    if options.affinity == "prefix" and isinstance(prompt, str):
        return f"prompt:{prompt[:1024]}"
    return None


@dataclass
class Forwarded:
    """What the gateway adds to the upstream's answer."""

    model: str  # the name the client asked for
    citations: list[dict[str, Any]] | None = None
    rag_prompt: str | None = None


async def augment_messages(
    rag: RagService,
    knowledge: Knowledge,
    engine: RemoteChat,
    body: Json,
    reserve_wanted: int | None,
) -> tuple[Augmentation, list[Any]]:
    """Sources for the conversation, as a system message right before the last user turn
    (the token counts are the remote engine's estimate, which errs on the long side)."""
    messages = list(body.get("messages") or [])
    users = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    queries = rag.search_queries(users)
    count = _counter(engine)
    ctx = engine.context_length
    reserve = min(reserve_wanted or rag.settings.reserve_tokens, ctx // 2)
    used = sum(count(text_of(m.get("content"))) + 4 for m in messages)

    def budget(head: str) -> int:
        return ctx - reserve - used - count(head) - 4

    aug = await rag.augment(knowledge, queries, budget, count)
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if aug.instruction is not None and last_user is not None:
        messages.insert(last_user, {"role": "system", "content": aug.instruction})
    return aug, messages


async def augment_prompt(
    rag: RagService, knowledge: Knowledge, engine: RemoteChat, prompt: Any, max_tokens: int
) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(prompt, str):
        raise InvalidRequestError("retrieval needs a single text prompt", param="prompt")
    count = _counter(engine)
    reserve = min(max_tokens, engine.context_length // 2)

    def budget(head: str) -> int:
        return engine.context_length - reserve - count(head + "\n\n" + prompt)

    quiet = replace(knowledge, no_answer=NoAnswer.ANSWER_ANYWAY)
    aug = await rag.augment(quiet, [prompt], budget, count)
    if aug.instruction is None:
        return prompt, []
    return f"{aug.instruction}\n\n{prompt}", [c.to_dict() for c in aug.citations]


def _counter(engine: RemoteChat) -> Callable[[str], int]:
    tok = engine.tokenizer
    return lambda text: tok.count([text])[0]


def finish(answer: Json, extra: Forwarded) -> Json:
    """A non-streamed answer with the client's model name and the gateway's citations."""
    answer["model"] = extra.model
    if extra.citations is not None:
        answer["citations"] = extra.citations
        if extra.citations:
            for choice in answer.get("choices") or []:
                msg = choice.get("message")
                if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                    msg["annotations"] = url_annotations(msg["content"], extra.citations)
    if extra.rag_prompt is not None:
        answer["rag_prompt"] = extra.rag_prompt
    return answer


def relay(
    chunks: AsyncIterator[bytes], upstream_model: str, extra: Forwarded, max_event_bytes: int
) -> AsyncIterator[bytes]:
    """The upstream's SSE events, whole (a failure mid-stream never leaves half an event),
    renamed and with citations added when needed; a failure becomes one error event."""
    rewrite = extra.citations is not None or upstream_model != extra.model
    return guard(_events(chunks, extra if rewrite else None, max_event_bytes))


async def _events(
    chunks: AsyncIterator[bytes], extra: Forwarded | None, max_event_bytes: int
) -> AsyncIterator[bytes]:
    buf = b""
    state = _Rewriter(extra) if extra is not None else None
    try:
        async for chunk in chunks:
            buf += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
            if b"\n\n" not in buf:
                _check_event(buf, max_event_bytes)
                continue
            *events, buf = buf.split(b"\n\n")
            for e in events:
                _check_event(e, max_event_bytes)
            _check_event(buf, max_event_bytes)
            if state is None:
                yield b"".join(e + b"\n\n" for e in events if e)
            else:
                for e in events:
                    if e:
                        yield state.event(e)
        if buf.strip():
            yield buf + b"\n\n" if state is None else state.event(buf)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def _check_event(event: bytes, limit: int) -> None:
    if len(event) > limit:
        raise bad_gateway(
            f"the upstream sent a stream event over {limit} bytes (max_event_bytes)",
            "upstream_event_too_large",
        )


class _Rewriter:
    def __init__(self, extra: Forwarded) -> None:
        self.extra = extra
        self.cited = extra.citations is None
        self.content: dict[int, str] = {}

    def event(self, raw: bytes) -> bytes:
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
        chunk["model"] = self.extra.model
        cites = self.extra.citations
        if not self.cited and chunk.get("choices"):
            chunk["citations"], self.cited = cites, True
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta")
            i = int(choice.get("index", 0))
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                self.content[i] = self.content.get(i, "") + delta["content"]
            if cites and choice.get("finish_reason") and isinstance(delta, dict):
                delta["annotations"] = url_annotations(self.content.get(i, ""), cites)
        return sse(chunk)


def rag_prompt_text(messages: list[Any]) -> str:
    return "\n\n".join(f"{m.get('role')}: {text_of(m.get('content'))}" for m in messages)
