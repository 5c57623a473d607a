"""What a chat or completion request asks of the engine, checked before any work starts:
the features it uses, its messages, its settings-bound limits, its sampling parameters
and its room in the model's context."""

from __future__ import annotations

from typing import Any

from core.errors import ContextLengthError, InvalidRequestError
from engines.generation import SamplingParams
from gateway.schemas.chat import ChatCompletionRequest, CompletionRequest
from gateway.services.chat.turns import Message, ToolCall
from gateway.settings import ChatSettings

__all__ = [
    "EFFORTS",
    "check_chat",
    "check_common",
    "check_completion",
    "check_limits",
    "sampling",
    "stops",
    "text_content",
]


def _unsupported(name: str, what: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(
        what or f"'{name}' is not supported by this server",
        param=name,
        code="unsupported_parameter",
    )


def stops(req: ChatCompletionRequest | CompletionRequest) -> list[str]:
    return [req.stop] if isinstance(req.stop, str) else list(req.stop or [])


def check_common(req: ChatCompletionRequest | CompletionRequest, s: ChatSettings) -> None:
    """What both endpoints refuse for a local model: this server's limits, and
    ``logit_bias`` (the RWKV engine does not take it)."""
    check_limits(req, s)
    if req.logit_bias:
        raise _unsupported("logit_bias")


def check_limits(req: ChatCompletionRequest | CompletionRequest, s: ChatSettings) -> None:
    """The settings-bound limits every chat or completion request keeps, remote or not."""
    if req.n > s.max_n:
        raise InvalidRequestError(f"'n' must be between 1 and {s.max_n}", param="n")
    found = stops(req)
    if len(found) > s.max_stop_sequences or any(not x for x in found):
        raise InvalidRequestError(
            f"'stop' takes up to {s.max_stop_sequences} non-empty strings", param="stop"
        )


def check_chat(req: ChatCompletionRequest, s: ChatSettings) -> list[Message]:
    """The request's messages, or a 400 naming what cannot be served."""
    check_common(req, s)
    if req.functions or req.function_call:
        raise _unsupported(
            "functions" if req.functions else "function_call",
            "'functions' and 'function_call' are deprecated; use 'tools' and 'tool_choice'",
        )
    if req.modalities and set(req.modalities) - {"text"}:
        raise _unsupported("modalities", "only the 'text' modality is supported")
    for name in ("audio", "prediction"):
        if getattr(req, name):
            raise _unsupported(name)
    if req.top_logprobs and not req.logprobs:
        raise InvalidRequestError("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    if req.reasoning_effort is not None and req.reasoning_effort not in EFFORTS:
        raise InvalidRequestError(
            f"reasoning_effort is one of {', '.join(EFFORTS)}", param="reasoning_effort"
        )
    out: list[Message] = []
    for i, m in enumerate(req.messages):
        where = f"messages[{i}]"
        if m.role == "function":
            raise InvalidRequestError(
                "the 'function' role is deprecated; send a 'tool' message with tool_call_id",
                param=f"{where}.role",
            )
        calls = _tool_calls(m.tool_calls, where) if m.role == "assistant" else ()
        out.append(Message(m.role, text_content(m.content, i), calls, m.tool_call_id, param=where))
    return out


EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def _tool_calls(raw: list[dict[str, Any]] | None, where: str) -> tuple[ToolCall, ...]:
    calls = []
    for j, call in enumerate(raw or []):
        fn = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(fn, dict)
            or not isinstance(call.get("id"), str)
            or not isinstance(fn.get("name"), str)
        ):
            raise InvalidRequestError(
                "a tool call is {'id', 'type': 'function', 'function': {'name', 'arguments'}}",
                param=f"{where}.tool_calls[{j}]",
            )
        args = fn.get("arguments", "")
        calls.append(ToolCall(call["id"], fn["name"], args if isinstance(args, str) else ""))
    return tuple(calls)


def check_completion(req: CompletionRequest, s: ChatSettings) -> None:
    check_common(req, s)
    if req.suffix:
        raise _unsupported("suffix")
    if req.best_of is not None and req.best_of != req.n:
        raise _unsupported("best_of", "'best_of' must equal 'n' on this server")


def text_content(content: str | list[dict[str, Any]] | None, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind != "text" or not isinstance(part.get("text"), str):
            raise InvalidRequestError(
                f"messages[{i}].content[{j}] has type {kind!r}; only text parts are supported",
                param=f"messages[{i}].content",
                code="unsupported_content",
            )
        parts.append(part["text"])
    return "".join(parts)


def sampling(
    req: ChatCompletionRequest | CompletionRequest,
    s: ChatSettings,
    *,
    max_tokens: int | None,
    extra_stop: tuple[str, ...],
    prompt_len: int,
    context_length: int,
    logprobs: bool,
    top_logprobs: int,
) -> SamplingParams:
    """Sampling parameters once the prompt's length is known (ranges were checked by the
    wire type; the room left in the context caps ``max_tokens``)."""
    if prompt_len > context_length:
        raise ContextLengthError(
            f"the prompt has {prompt_len} tokens; this model's context limit is {context_length}",
            param="messages" if isinstance(req, ChatCompletionRequest) else "prompt",
        )
    room = context_length - prompt_len
    limit = min(max_tokens or s.default_max_tokens, s.max_tokens_limit, max(room, 1))
    return SamplingParams(
        max_tokens=limit,
        temperature=s.default_temperature if req.temperature is None else req.temperature,
        top_p=s.default_top_p if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        penalty_decay=s.penalty_decay,
        stop=tuple(dict.fromkeys([*stops(req), *extra_stop])),
        seed=req.seed,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )
