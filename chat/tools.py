"""What a request asks the output to be (text, JSON of a schema, function calls) and how
that becomes a prompt ending and a grammar.

The wire forms differ between chat completions and the Responses API; both come here as
``Tool`` and ``OutputSpec``. ``plan`` then picks the generation prompt (the template's
tool-call opening, a thinking opening, or the plain one), the tools' System turn, and the
constraint that makes the output valid: under ``required`` or a named function a call of
a declared function with schema-valid arguments, under ``auto`` either such a call or an
answer, under a JSON response format a schema-valid document.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from chat.config import ChatSettings
from core.errors import InvalidRequestError
from engines.chat_template import ChatTemplate
from engines.constraint import (
    Constraint,
    SchemaError,
    SchemaTooLarge,
    after_thought,
    calls_constraint,
    check_schema,
    json_constraint,
)

__all__ = [
    "OutputMode",
    "OutputSpec",
    "Plan",
    "Tool",
    "chat_output_spec",
    "check_tool_schema",
    "plan",
    "response_schema",
]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EMPTY_PARAMS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]

    def describe(self) -> str:
        """The tool as the model reads it (one compact JSON line)."""
        doc = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class OutputSpec:
    tools: tuple[Tool, ...] = ()
    choice: str = "auto"  # none | auto | required | named
    named: str | None = None
    parallel: bool = True
    schema: dict[str, Any] | None = None  # a JSON response format
    max_calls: int | None = None  # most calls in one turn (None: any; 1 without parallel)

    @property
    def call_limit(self) -> int | None:
        """The most calls one output may hold (None: any number)."""
        return 1 if not self.parallel else self.max_calls


@dataclass(frozen=True)
class OutputMode:
    """How to read the output back (see ``output.OutputParser``)."""

    think_open: bool = False  # the prompt opened a thought
    think_end: str = "</think>"
    calls: str = "none"  # none | bare (the output is the calls) | fenced (auto)
    fence: tuple[str, str] = ("", "")
    reasoning: bool = False  # the model may open a thought itself


@dataclass(frozen=True)
class Plan:
    generation_prompt: str
    constraint: Constraint | None
    mode: OutputMode
    tools_turn: str | None  # the System turn describing the tools
    suffix: str  # added to the last user message (think length)


def check_tool_schema(schema: Any, settings: ChatSettings, param: str) -> dict[str, Any]:
    """A JSON Schema this server can guarantee, or a 400 naming what it cannot."""
    size = len(json.dumps(schema, ensure_ascii=False)) if schema is not None else 0
    if size > settings.max_schema_bytes:
        raise InvalidRequestError(
            f"the schema is {size} bytes; the limit is {settings.max_schema_bytes}",
            param=param,
            code="schema_too_large",
        )
    widest = _widest_object(schema)
    if widest > settings.max_schema_properties:
        raise InvalidRequestError(
            f"an object of the schema has {widest} properties; "
            f"the limit is {settings.max_schema_properties}",
            param=param,
            code="schema_too_large",
        )
    try:
        return check_schema(schema, settings.max_constrained_output_bytes)
    except SchemaTooLarge as exc:
        raise InvalidRequestError(
            f"{exc} (chat.max_constrained_output_bytes)", param=param, code="schema_too_large"
        ) from exc
    except SchemaError as exc:
        raise InvalidRequestError(str(exc), param=param, code="unsupported_schema") from exc


def _widest_object(node: Any, depth: int = 0) -> int:
    """The most properties any one object of the schema declares."""
    if depth > 64:
        return 0
    if isinstance(node, list):
        return max((_widest_object(v, depth + 1) for v in node), default=0)
    if not isinstance(node, dict):
        return 0
    props = node.get("properties")
    own = len(props) if isinstance(props, dict) else 0
    return max([own, *(_widest_object(v, depth + 1) for v in node.values())])


def function_tool(
    name: Any, description: Any, parameters: Any, settings: ChatSettings, param: str
) -> Tool:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequestError(
            "a function name is 1-64 letters, digits, '_' or '-'", param=f"{param}.name"
        )
    if parameters is None:
        parameters = _EMPTY_PARAMS
    params = check_tool_schema(parameters, settings, f"{param}.parameters")
    return Tool(name, description if isinstance(description, str) else "", params)


def check_tools(tools: list[Tool], settings: ChatSettings, param: str) -> None:
    if len(tools) > settings.max_tools:
        raise InvalidRequestError(f"at most {settings.max_tools} tools", param=param)
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequestError("tool names must be unique", param=param)


def choice_of(
    choice: Any, tools: tuple[Tool, ...], named: str | None, param: str
) -> tuple[str, str | None]:
    """(choice, named function) after checking it against the tools."""
    if choice is None:
        return ("auto" if tools else "none"), None
    if not tools:
        raise InvalidRequestError("'tool_choice' needs 'tools'", param=param)
    if named is not None:
        if named not in {t.name for t in tools}:
            raise InvalidRequestError(
                f"tool_choice names {named!r}, which is not among the tools", param=param
            )
        return "named", named
    if choice not in ("none", "auto", "required"):
        raise InvalidRequestError(
            "tool_choice is 'none', 'auto', 'required' or a named function", param=param
        )
    return str(choice), None


def chat_output_spec(
    tools: list[Any] | None,
    tool_choice: Any,
    parallel: bool | None,
    response_format: dict[str, Any] | None,
    settings: ChatSettings,
) -> OutputSpec:
    """The chat completions wire form (``tools[].function``, ``response_format``)."""
    parsed: list[Tool] = []
    for i, raw in enumerate(tools or []):
        if not isinstance(raw, dict) or raw.get("type") != "function":
            raise InvalidRequestError(
                "only tools of type 'function' are supported", param=f"tools[{i}].type"
            )
        fn = raw.get("function")
        if not isinstance(fn, dict):
            raise InvalidRequestError("a function tool needs 'function'", param=f"tools[{i}]")
        parsed.append(
            function_tool(
                fn.get("name"),
                fn.get("description"),
                fn.get("parameters"),
                settings,
                f"tools[{i}].function",
            )
        )
    check_tools(parsed, settings, "tools")
    named = None
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        named = fn.get("name") if isinstance(fn, dict) else None
        if tool_choice.get("type") != "function" or not isinstance(named, str):
            raise InvalidRequestError(
                "a named tool_choice is {'type': 'function', 'function': {'name': ...}}",
                param="tool_choice",
            )
    choice, named = choice_of(tool_choice, tuple(parsed), named, "tool_choice")
    schema = response_schema(response_format, settings, "response_format")
    return OutputSpec(tuple(parsed), choice, named, parallel is not False, schema)


def response_schema(
    fmt: dict[str, Any] | None, settings: ChatSettings, param: str, *, flat: bool = False
) -> dict[str, Any] | None:
    """The JSON Schema a response format asks for (None: free text). ``flat``: the
    Responses API's ``text.format`` (``schema`` beside ``type``, not under
    ``json_schema``)."""
    if fmt is None:
        return None
    kind = fmt.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise InvalidRequestError(
            "the format type is 'text', 'json_object' or 'json_schema'", param=f"{param}.type"
        )
    body = fmt if flat else fmt.get("json_schema")
    where = param if flat else f"{param}.json_schema"
    if not isinstance(body, dict) or not isinstance(body.get("name", ""), str):
        raise InvalidRequestError("a json_schema format needs a name and a schema", param=where)
    schema = body.get("schema")
    if schema is None:
        schema = {"type": "object"}
    return check_tool_schema(schema, settings, f"{where}.schema")


def _call_plan(spec: OutputSpec, tpl: ChatTemplate) -> Plan:
    """``required`` or a named function: the prompt opens the call block, so the output
    is the calls alone (and the model does not think first)."""
    chosen = [t for t in spec.tools if spec.named in (None, t.name)]
    constraint = calls_constraint(
        [(t.name, t.parameters) for t in chosen],
        parallel=spec.parallel and spec.choice == "required",
        max_calls=spec.call_limit,
    )
    turn = tpl.tools_turn([t.describe() for t in chosen], required=True)
    gen = tpl.generation_prompt + tpl.lead + tpl.call_fence[0]
    return Plan(gen, constraint, OutputMode(calls="bare"), turn, "")


def plan(spec: OutputSpec, tpl: ChatTemplate, effort: str | None) -> Plan:
    """The prompt ending, grammar and output reading for ``spec`` under ``tpl``."""
    active = spec.tools if spec.choice != "none" else ()
    if active and spec.choice in ("required", "named"):
        return _call_plan(spec, tpl)
    think_prompt, suffix = tpl.thinking(effort)
    thinking = think_prompt is not None and think_prompt == tpl.think_prompt
    gen = think_prompt or tpl.generation_prompt
    lead = tpl.lead
    constraint: Constraint | None = None
    mode = OutputMode(think_open=thinking, think_end=tpl.think_end, reasoning=tpl.reasoning)
    turn: str | None = None
    if active:
        head, tail = tpl.call_fence
        constraint = calls_constraint(
            [(t.name, t.parameters) for t in active],
            parallel=spec.parallel,
            max_calls=spec.call_limit,
            fence=(lead + head, tail),
            text_start=lead,
            alt_schema=spec.schema,
        )
        turn = tpl.tools_turn([t.describe() for t in active], required=False)
        mode = OutputMode(thinking, tpl.think_end, "fenced", (lead + head, tail), tpl.reasoning)
    elif spec.schema is not None:
        constraint = json_constraint(spec.schema, prefix=lead)
    if constraint is not None and thinking:
        opened = ">" if gen.endswith("<think") else ""
        constraint = after_thought(constraint, tpl.think_end, opened)
    return Plan(gen, constraint, mode, turn, suffix)
