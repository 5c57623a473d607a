"""Random constrained-output requests and the check every answer must pass.

The strategies draw JSON Schemas inside the subset the gateway guarantees (nested
objects with optional properties, enums and consts, strings and arrays with length
bounds, integer ranges, ``anyOf`` of distinct JSON types, ``$ref`` into ``$defs``),
tool sets with their ``tool_choice`` and ``parallel_tool_calls``, response formats,
budgets of 1..200 tokens, seeds and ``n``. ``check_answer`` is the contract: a 200
answer's calls name offered functions and their arguments validate against the
function's parameters; without calls, the content validates against the response
format's schema, whether the model stopped or the budget cut it (``length``: the
closer's ending). Used by the property test and by ``bench/constrained.py --sweep``.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
from hypothesis import strategies as st

__all__ = ["check_answer", "requests", "schemas", "send"]

_NAMES = ["a", "b", "city", "n", "tags", "x_y", "q", "when", "ok", "id"]


@st.composite
def _string(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["plain", "bounded", "enum", "const"]))
    if kind == "enum":
        values = draw(st.lists(st.text("abcxyz -", min_size=0, max_size=6), min_size=1, max_size=4))
        return {"type": "string", "enum": sorted(set(values))}
    if kind == "const":
        return {"const": draw(st.text("abc", max_size=5))}
    out: dict[str, Any] = {"type": "string"}
    if kind == "bounded":
        lo = draw(st.integers(0, 12))
        out["minLength"] = lo
        if draw(st.booleans()):
            out["maxLength"] = lo + draw(st.integers(0, 10))
    return out


@st.composite
def _number(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"type": draw(st.sampled_from(["integer", "number"]))}
    if draw(st.booleans()):
        lo = draw(st.integers(-50, 50))
        out["minimum"] = lo
        if draw(st.booleans()):
            out["maximum"] = lo + draw(st.integers(0, 100))
    return out


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        _string(),
        _number(),
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.builds(
            lambda v: {"enum": sorted(set(v))},
            st.lists(st.integers(-9, 99), min_size=1, max_size=4),
        ),
    )


def _extend(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(_object(inner), _array(inner), _any_of())


@st.composite
def _object(draw: st.DrawFn, inner: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(_NAMES), min_size=0, max_size=4, unique=True))
    props = {n: draw(inner) for n in names}
    required = [n for n in names if draw(st.booleans())]
    out: dict[str, Any] = {"type": "object", "properties": props, "required": required}
    if draw(st.booleans()):
        out["additionalProperties"] = False
    return out


@st.composite
def _array(draw: st.DrawFn, inner: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "array", "items": draw(inner)}
    lo = draw(st.integers(0, 3))
    if lo:
        out["minItems"] = lo
    if draw(st.booleans()):
        out["maxItems"] = lo + draw(st.integers(0, 3))
    return out


@st.composite
def _any_of(draw: st.DrawFn) -> dict[str, Any]:
    """Alternatives of distinct JSON types (what the closer can tell apart)."""
    kinds = draw(
        st.lists(
            st.sampled_from(["string", "integer", "boolean", "null"]),
            min_size=2,
            max_size=3,
            unique=True,
        )
    )
    return {"anyOf": [{"type": k} for k in kinds]}


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    """A root object schema, sometimes with a definition it references."""
    body = st.recursive(_leaf(), _extend, max_leaves=6)
    root = draw(_object(body))
    if draw(st.booleans()):
        root["$defs"] = {"Thing": draw(_object(_leaf()))}
        root["properties"]["ref"] = {"$ref": "#/$defs/Thing"}
        if draw(st.booleans()):
            root["required"] = [*root["required"], "ref"]
    return root


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments of one ``chat.completions.create`` call (no model)."""
    tools = [
        {"type": "function", "function": {"name": f"fn_{i}", "parameters": draw(schemas())}}
        for i in range(draw(st.integers(0, 3)))
    ]
    req: dict[str, Any] = {
        "messages": [{"role": "user", "content": draw(st.sampled_from(["hi", "Weather?", "{"]))}],
        "max_tokens": draw(st.integers(1, 200)),
        "seed": draw(st.integers(0, 2**16)),
        "n": draw(st.integers(1, 3)),
        "temperature": draw(st.sampled_from([0.0, 1.0])),
    }
    if tools:
        req["tools"] = tools
        choice = draw(st.sampled_from(["unset", "auto", "none", "required", "named"]))
        if choice == "named":
            name = tools[draw(st.integers(0, len(tools) - 1))]["function"]["name"]
            req["tool_choice"] = {"type": "function", "function": {"name": name}}
        elif choice != "unset":
            req["tool_choice"] = choice
        parallel = draw(st.sampled_from([None, True, False]))
        if parallel is not None:
            req["parallel_tool_calls"] = parallel
    fmt = draw(st.sampled_from(["none", "json_object", "json_schema"]))
    if fmt == "json_object":
        req["response_format"] = {"type": "json_object"}
    elif fmt == "json_schema":
        schema = draw(schemas())
        req["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "Answer", "schema": schema},
        }
    return req


def _format_schema(req: dict[str, Any]) -> dict[str, Any] | None:
    fmt = req.get("response_format")
    if fmt is None:
        return None
    if fmt["type"] == "json_object":
        return {"type": "object"}
    return dict(fmt["json_schema"]["schema"])


def check_answer(
    req: dict[str, Any],
    finish_reason: str,
    content: str | None,
    calls: list[tuple[str, str]],
) -> None:
    """Raise AssertionError when one 200 choice breaks the contract of ``req``.
    ``calls``: (function name, arguments JSON) of the choice's tool calls."""
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in req.get("tools", [])}
    choice = req.get("tool_choice", "auto" if tools else "none")
    assert finish_reason in ("stop", "length", "tool_calls"), finish_reason
    if calls:
        assert choice != "none", calls
        assert not content, (content, calls)
        if req.get("parallel_tool_calls") is False:
            assert len(calls) == 1, calls
        for name, arguments in calls:
            assert name in tools, name
            if isinstance(choice, dict):
                assert name == choice["function"]["name"], name
            jsonschema.validate(json.loads(arguments), tools[name])
        return
    assert choice not in ("required",) and not isinstance(choice, dict), (finish_reason, content)
    schema = _format_schema(req)
    if schema is not None:
        assert content is not None, finish_reason
        jsonschema.validate(json.loads(content), schema)


def _plain(client: openai.OpenAI, req: dict[str, Any]) -> list[str]:
    out = client.chat.completions.create(model="rwkv6-tiny", **req)
    assert len(out.choices) == req["n"]
    for c in out.choices:
        calls = [(t.function.name, t.function.arguments) for t in c.message.tool_calls or []]
        check_answer(req, c.finish_reason, c.message.content, calls)
    return [c.finish_reason for c in out.choices]


def _streamed(client: openai.OpenAI, req: dict[str, Any]) -> list[str]:
    text: dict[int, str] = {}
    calls: dict[int, dict[int, list[str]]] = {}
    reasons: dict[int, str] = {}
    for chunk in client.chat.completions.create(model="rwkv7-tiny", stream=True, **req):
        for c in chunk.choices:
            if c.delta.content:
                text[c.index] = text.get(c.index, "") + c.delta.content
            for t in c.delta.tool_calls or []:
                slot = calls.setdefault(c.index, {}).setdefault(t.index, ["", ""])
                if t.function and t.function.name:
                    slot[0] += t.function.name
                if t.function and t.function.arguments:
                    slot[1] += t.function.arguments
            if c.finish_reason:
                reasons[c.index] = c.finish_reason
    assert sorted(reasons) == list(range(req["n"]))
    for i, reason in reasons.items():
        pairs = [(name, args) for _, (name, args) in sorted(calls.get(i, {}).items())]
        check_answer(req, reason, text.get(i), pairs)
    return list(reasons.values())


def send(client: openai.OpenAI, req: dict[str, Any], stream: bool) -> list[str]:
    """Send ``req`` (plain to rwkv6-tiny, streamed to rwkv7-tiny), check every choice;
    the choices' finish reasons. API errors propagate."""
    return (_streamed if stream else _plain)(client, req)
