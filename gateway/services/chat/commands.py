"""Wire requests as chat-core commands: chat completions and completions.

What only a local engine refuses (deprecated fields, content parts it cannot read,
features it lacks) travels with the command as ``refusals``; a remote model's upstream
judges those itself.
"""

from __future__ import annotations

from typing import Any

from chat.command import Caller, ChatCommand, CompletionCommand, Forward, Sampling
from chat.config import ChatSettings
from chat.tools import OutputSpec, chat_output_spec
from chat.turns import Message, ToolCall
from core.errors import APIError, InvalidRequestError
from gateway.schemas.chat import ChatCompletionRequest, CompletionRequest
from gateway.schemas.knowledge import KnowledgeField
from rag.config import NoAnswer
from rag.service import KnowledgeRequest

__all__ = [
    "EFFORTS",
    "chat_command",
    "completion_command",
    "include_usage",
    "knowledge_request",
    "text_content",
]

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def knowledge_request(f: KnowledgeField | None) -> KnowledgeRequest | None:
    """The request's ``knowledge`` as the RAG service takes it."""
    if f is None:
        return None
    return KnowledgeRequest(
        vector_store_ids=tuple(f.vector_store_ids) if f.vector_store_ids else None,
        top_k=f.top_k,
        filters=f.filters,
        rerank=f.rerank,
        score_threshold=f.score_threshold,
        max_context_tokens=f.max_context_tokens,
        no_answer=NoAnswer(f.no_answer) if f.no_answer else None,
        debug=f.debug,
    )


def _unsupported(name: str, what: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(
        what or f"'{name}' is not supported by this server",
        param=name,
        code="unsupported_parameter",
    )


def _stops(req: ChatCompletionRequest | CompletionRequest) -> tuple[str, ...]:
    return (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())


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


def _feature_refusals(req: ChatCompletionRequest) -> list[InvalidRequestError]:
    found: list[InvalidRequestError] = []
    if req.functions or req.function_call:
        found.append(
            _unsupported(
                "functions" if req.functions else "function_call",
                "'functions' and 'function_call' are deprecated; use 'tools' and 'tool_choice'",
            )
        )
    if req.modalities and set(req.modalities) - {"text"}:
        found.append(_unsupported("modalities", "only the 'text' modality is supported"))
    found.extend(_unsupported(name) for name in ("audio", "prediction") if getattr(req, name))
    if req.top_logprobs and not req.logprobs:
        found.append(
            InvalidRequestError("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        )
    if req.reasoning_effort is not None and req.reasoning_effort not in EFFORTS:
        found.append(
            InvalidRequestError(
                f"reasoning_effort is one of {', '.join(EFFORTS)}", param="reasoning_effort"
            )
        )
    return found


def _messages(req: ChatCompletionRequest) -> tuple[tuple[Message, ...], InvalidRequestError | None]:
    out: list[Message] = []
    for i, m in enumerate(req.messages):
        where = f"messages[{i}]"
        try:
            if m.role == "function":
                raise InvalidRequestError(
                    "the 'function' role is deprecated; send a 'tool' message with tool_call_id",
                    param=f"{where}.role",
                )
            calls = _tool_calls(m.tool_calls, where) if m.role == "assistant" else ()
            text = text_content(m.content, i)
        except InvalidRequestError as exc:
            return tuple(out), exc
        out.append(Message(m.role, text, calls, m.tool_call_id, param=where))
    return tuple(out), None


def chat_command(
    req: ChatCompletionRequest,
    settings: ChatSettings,
    caller: Caller,
    raw: dict[str, Any] | None = None,
) -> ChatCommand:
    """``raw``: the client's JSON body (a remote model passes it through)."""
    refusals = _feature_refusals(req)
    messages, bad = _messages(req)
    if bad is not None:
        refusals.append(bad)
    output = OutputSpec()
    try:
        output = chat_output_spec(
            req.tools, req.tool_choice, req.parallel_tool_calls, req.response_format, settings
        )
    except APIError as exc:
        if not isinstance(exc, InvalidRequestError):
            raise
        refusals.append(exc)
    forward = None
    if raw is not None:
        raw.pop("knowledge", None)
        forward = Forward("chat/completions", raw, req.stream)
    return ChatCommand(
        model=req.model,
        messages=messages,
        sampling=_sampling(
            req, req.max_completion_tokens or req.max_tokens, req.logprobs, req.top_logprobs
        ),
        output=output,
        n=req.n,
        reasoning_effort=req.reasoning_effort,
        knowledge=knowledge_request(req.knowledge),
        state=req.state,
        caller=caller,
        forward=forward,
        refusals=tuple(refusals),
    )


def completion_command(
    req: CompletionRequest, caller: Caller, raw: dict[str, Any] | None = None
) -> CompletionCommand:
    refusals = []
    if req.suffix:
        refusals.append(_unsupported("suffix"))
    if req.best_of is not None and req.best_of != req.n:
        refusals.append(_unsupported("best_of", "'best_of' must equal 'n' on this server"))
    forward = None
    if raw is not None:
        raw.pop("knowledge", None)
        forward = Forward("completions", raw, req.stream)
    return CompletionCommand(
        model=req.model,
        prompt=req.prompt,
        sampling=_sampling(req, req.max_tokens, req.logprobs is not None, req.logprobs),
        n=req.n,
        echo=req.echo,
        knowledge=knowledge_request(req.knowledge),
        caller=caller,
        forward=forward,
        refusals=tuple(refusals),
    )


def _sampling(
    req: ChatCompletionRequest | CompletionRequest,
    max_tokens: int | None,
    logprobs: bool,
    top_logprobs: int | None,
) -> Sampling:
    return Sampling(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        stop=_stops(req),
        seed=req.seed,
        logprobs=logprobs,
        top_logprobs=top_logprobs or 0,
        logit_bias=bool(req.logit_bias),
    )


def include_usage(req: ChatCompletionRequest | CompletionRequest) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)
