"""A Responses request as the chat service takes it: the conversation (a previous
response's, then ``instructions`` and the input items) as chat messages, the function
tools and text format as an ``OutputSpec``, and a ``file_search`` tool as retrieval."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from chat.command import Caller, ChatCommand, Sampling
from chat.config import ChatSettings
from chat.tools import (
    OutputSpec,
    Tool,
    check_tools,
    choice_of,
    function_tool,
    response_schema,
)
from chat.turns import Message, ToolCall
from core.errors import InvalidRequestError
from gateway.schemas.knowledge import KnowledgeField
from gateway.schemas.responses import ResponseRequest
from gateway.services.chat.commands import EFFORTS, knowledge_request

__all__ = ["Prepared", "item_id", "prepare", "to_messages"]

_INCLUDES = {"file_search_call.results", "reasoning.encrypted_content"}
_TEXT_PARTS = {"input_text", "output_text", "text", "summary_text", "refusal"}


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class FileSearch:
    vector_store_ids: list[str]
    max_num_results: int | None
    filters: dict[str, Any] | None
    score_threshold: float | None
    rerank: bool | None


@dataclass(frozen=True)
class Prepared:
    command: ChatCommand
    spec: OutputSpec
    items: list[dict[str, Any]]  # this request's input items, with ids
    conversation: list[dict[str, Any]]  # chat messages before the output
    file_search: FileSearch | None
    include_results: bool


def _unsupported(param: str, what: str) -> InvalidRequestError:
    return InvalidRequestError(what, param=param, code="unsupported_parameter")


def _text(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequestError("content is a string or a list of parts", param=param)
    out = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise InvalidRequestError(
                f"content part type {kind!r} is not supported (text parts only)",
                param=f"{param}[{j}]",
                code="unsupported_content",
            )
        out.append(part["text"])
    return "".join(out)


def _message_item(role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    part: dict[str, Any] = {"type": kind, "text": text}
    if kind == "output_text":
        part["annotations"] = []
    return {
        "id": item_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": [part],
    }


def _items(req: ResponseRequest) -> list[dict[str, Any]]:
    """The input as items (a string is one user message)."""
    if isinstance(req.input, str):
        return [_message_item("user", req.input)] if req.input else []
    return [dict(x) for x in req.input]


def to_messages(items: list[dict[str, Any]], param: str = "input") -> list[dict[str, Any]]:
    """Input items as chat messages (consecutive calls join one assistant message)."""
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"{param}[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidRequestError(f"role {role!r} is not supported", param=f"{where}.role")
            out.append({"role": role, "content": _text(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
                raise InvalidRequestError(
                    "a function_call item needs call_id and name", param=where
                )
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": str(item.get("arguments", ""))},
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and "tool_call_id" not in last:
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text(output, f"{where}.output")
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        elif kind in ("reasoning", "file_search_call"):
            continue  # the model's own thoughts and searches are not read back
        else:
            raise _unsupported(f"{where}.type", f"input items of type {kind!r} are not supported")
    return out


def _tools(
    req: ResponseRequest, settings: ChatSettings
) -> tuple[tuple[Tool, ...], FileSearch | None]:
    tools: list[Tool] = []
    search = None
    for i, raw in enumerate(req.tools or []):
        kind = raw.get("type")
        where = f"tools[{i}]"
        if kind == "function":
            tools.append(
                function_tool(
                    raw.get("name"), raw.get("description"), raw.get("parameters"), settings, where
                )
            )
        elif kind == "file_search":
            search = _file_search(raw, where)
        else:
            raise _unsupported(f"{where}.type", f"tools of type {kind!r} are not supported")
    check_tools(tools, settings, "tools")
    return tuple(tools), search


def _file_search(raw: dict[str, Any], where: str) -> FileSearch:
    ids = raw.get("vector_store_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(x, str) for x in ids):
        raise InvalidRequestError(
            "file_search needs vector_store_ids", param=f"{where}.vector_store_ids"
        )
    top = raw.get("max_num_results")
    if top is not None and (not isinstance(top, int) or not 1 <= top <= 50):
        raise InvalidRequestError(
            "max_num_results is between 1 and 50", param=f"{where}.max_num_results"
        )
    ranking = raw.get("ranking_options") or {}
    ranker = ranking.get("ranker")
    threshold = ranking.get("score_threshold")
    if threshold is not None and (
        not isinstance(threshold, int | float) or not 0 <= threshold <= 1
    ):
        raise InvalidRequestError(
            "score_threshold is between 0 and 1",
            param=f"{where}.ranking_options.score_threshold",
        )
    return FileSearch(
        vector_store_ids=ids,
        max_num_results=top,
        filters=raw.get("filters"),
        score_threshold=threshold,
        rerank=None if ranker in (None, "auto", "default-2024-11-15") else ranker != "none",
    )


def _choice(
    raw: str | dict[str, Any] | None, tools: tuple[Tool, ...], search: FileSearch | None
) -> tuple[str, str | None]:
    if isinstance(raw, dict):
        kind = raw.get("type")
        if kind == "file_search" and search is not None:
            return choice_of(None, tools, None, "tool_choice")  # the gateway searches anyway
        name = raw.get("name")
        if kind != "function" or not isinstance(name, str):
            raise InvalidRequestError(
                "a named tool_choice is {'type': 'function', 'name': ...}", param="tool_choice"
            )
        return choice_of(raw, tools, name, "tool_choice")
    if raw is not None and not tools and search is not None:
        return "none", None
    return choice_of(raw, tools, None, "tool_choice")


def _check(req: ResponseRequest) -> None:
    for name in ("background", "prompt"):
        if getattr(req, name):
            raise _unsupported(name, f"'{name}' is not supported by this server")
    if req.truncation not in (None, "disabled"):
        raise _unsupported("truncation", "only truncation 'disabled' is supported")
    if req.top_logprobs:
        raise _unsupported("top_logprobs", "'top_logprobs' is not supported on /v1/responses")
    for value in req.include or []:
        if value not in _INCLUDES:
            raise _unsupported("include", f"include value {value!r} is not supported")
    effort = (req.reasoning or {}).get("effort")
    if effort is not None and not isinstance(effort, str):
        raise InvalidRequestError("reasoning.effort is a string", param="reasoning.effort")


def _command_messages(messages: list[dict[str, Any]]) -> tuple[Message, ...]:
    """Chat messages (the stored form) as the chat core's messages."""
    out = []
    for i, m in enumerate(messages):
        calls = tuple(
            ToolCall(c["id"], c["function"]["name"], str(c["function"].get("arguments", "")))
            for c in m.get("tool_calls") or []
        )
        content = m.get("content")
        out.append(
            Message(
                m["role"],
                content if isinstance(content, str) else "",
                calls,
                m.get("tool_call_id"),
                param=f"messages[{i}]",
            )
        )
    return tuple(out)


def prepare(
    req: ResponseRequest,
    history: list[dict[str, Any]],
    settings: ChatSettings,
    caller: Caller | None = None,
) -> Prepared:
    """The chat command behind ``req`` (``history``: the previous response's conversation)."""
    _check(req)
    items = _items(req)
    for item in items:
        item.setdefault("id", item_id("msg" if item.get("type", "message") == "message" else "fc"))
    tools, search = _tools(req, settings)
    choice, named = _choice(req.tool_choice, tools, search)
    fmt = (req.text or {}).get("format")
    schema = response_schema(fmt, settings, "text.format", flat=True)
    # One call allowed is no parallel calls (what a remote upstream is told); more bound
    # the grammar's array of calls.
    parallel = req.parallel_tool_calls is not False and req.max_tool_calls != 1
    spec = OutputSpec(tools, choice, named, parallel, schema, req.max_tool_calls)
    messages = [*history, *to_messages(items)]
    if not any(m["role"] in ("user", "tool") for m in messages):
        raise InvalidRequestError("the input has no user message", param="input")
    head = [{"role": "system", "content": req.instructions}] if req.instructions else []
    knowledge = req.knowledge
    if search is not None:
        knowledge = KnowledgeField(
            vector_store_ids=search.vector_store_ids,
            top_k=search.max_num_results,
            filters=search.filters,
            score_threshold=search.score_threshold,
            rerank=search.rerank,
        )
    effort = (req.reasoning or {}).get("effort")
    refusals = []
    if effort is not None and effort not in EFFORTS:
        refusals.append(
            InvalidRequestError(
                f"reasoning_effort is one of {', '.join(EFFORTS)}", param="reasoning_effort"
            )
        )
    command = ChatCommand(
        model=req.model,
        messages=_command_messages([*head, *messages]),
        sampling=Sampling(
            max_tokens=req.max_output_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            seed=req.seed,
        ),
        output=spec,
        reasoning_effort=effort,
        knowledge=knowledge_request(knowledge),
        state=req.state,
        persist_states=bool(req.store or req.conversation),
        caller=caller or Caller(user=req.user),
        refusals=tuple(refusals),
    )
    include_results = "file_search_call.results" in (req.include or [])
    return Prepared(command, spec, items, messages, search, include_results)
