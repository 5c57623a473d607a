"""The Responses API on a remote model: the prepared chat request goes upstream as a
streamed chat completion (retrieval, citations and the no-answer reply as for any remote
chat), and its chunks become the same output parts a local generation yields, so the
writer turns them into items and events alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from core.errors import UpstreamStatusError
from gateway.schemas.chat import ChatCompletionRequest, StreamOptions
from gateway.services.chat.output import CallArgs, CallStart, Content, Event, Reasoning
from gateway.services.chat.tools import OutputSpec

__all__ = ["ChunkReader", "chat_request"]

Json = dict[str, Any]
_decoder = msgspec.json.Decoder()


def chat_request(chat: ChatCompletionRequest, spec: OutputSpec) -> ChatCompletionRequest:
    """The prepared request in the chat API's own terms: tools, tool choice, the response
    format, and a stream that ends with its usage."""
    extra: dict[str, Any] = {"stream": True, "stream_options": StreamOptions(include_usage=True)}
    if spec.tools:
        extra["tools"] = [
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
        extra["parallel_tool_calls"] = spec.parallel
        extra["tool_choice"] = (
            {"type": "function", "function": {"name": spec.named}}
            if spec.choice == "named"
            else spec.choice
        )
    if spec.schema is not None:
        extra["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": spec.schema},
        }
    return msgspec.structs.replace(chat, **extra)


class ChunkReader:
    """Chat-completion SSE bytes -> output parts, the finish reason and the usage."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self.stream = stream
        self.reason = "stop"
        self.usage: Json = {}
        self.citations: list[Json] | None = None
        self._buf = b""
        self._calls: set[int] = set()

    async def chunks(self) -> AsyncIterator[Json]:
        async for data in self.stream:
            self._buf += data
            *events, self._buf = self._buf.split(b"\n\n")
            for raw in events:
                if not raw.startswith(b"data:"):
                    continue
                body = raw[5:].strip()
                if body == b"[DONE]":
                    return
                chunk = _decoder.decode(body)
                if isinstance(chunk, dict) and isinstance(chunk.get("error"), dict):
                    err = chunk["error"]
                    raise UpstreamStatusError(502, err)
                if isinstance(chunk, dict):
                    yield chunk

    def parts(self, chunk: Json) -> list[Event]:
        """One chunk's output parts (the first choice: the Responses API has one)."""
        if self.citations is None and isinstance(chunk.get("citations"), list):
            self.citations = chunk["citations"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        out: list[Event] = []
        for choice in chunk.get("choices") or []:
            if int(choice.get("index", 0)) != 0:
                continue
            if choice.get("finish_reason"):
                self.reason = str(choice["finish_reason"])
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                out.append(Reasoning(str(delta["reasoning_content"])))
            if delta.get("content"):
                out.append(Content(str(delta["content"])))
            for call in delta.get("tool_calls") or []:
                i = int(call.get("index", 0))
                fn = call.get("function") or {}
                if i not in self._calls:
                    self._calls.add(i)
                    out.append(
                        CallStart(i, str(call.get("id") or f"call_{i}"), str(fn.get("name")))
                    )
                if fn.get("arguments"):
                    out.append(CallArgs(i, str(fn["arguments"])))
        return out

    def responses_usage(self) -> Json:
        u = self.usage
        prompt, completion = int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))
        details = u.get("completion_tokens_details") or {}
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": int(cached or 0)},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": int(details.get("reasoning_tokens", 0))},
            "total_tokens": prompt + completion,
        }
