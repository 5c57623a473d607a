"""Constrained output as the engines take it, and the JSON closer.

A ``Constraint`` is a grammar (llguidance's format: JSON, Lark with ``%json``) the output
must follow, plus, for JSON, the schema and the text around the JSON so the output can be
closed early: when ``max_tokens`` would cut it, ``JsonCloser`` gives the shortest text that
ends the JSON validly (strings ended, required keys filled with their shortest valid
values, arrays and objects closed), and the engine forces it within the budget.

Grammars are compiled with compact separators and the schema's property order (what the
closer expects). Schema features the closer cannot complete are refused up front
(``unsupported_features``), so a constrained answer always parses and validates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from engines.schema_size import shortest_json_bytes

__all__ = [
    "JSON_OPTIONS",
    "AfterThought",
    "Answer",
    "CallsCloser",
    "Closer",
    "Constraint",
    "Framed",
    "JsonCloser",
    "Schema",
    "SchemaError",
    "SchemaTooLarge",
    "after_thought",
    "call_schema",
    "calls_constraint",
    "check_schema",
    "json_constraint",
    "minimal_value",
    "unsupported_features",
]

# How every JSON grammar is compiled: compact, no free whitespace.
JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ",",
    "key_separator": ":",
}

_SUPPORTED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
        "$ref",
        "$defs",
        "definitions",
        "anyOf",
        "oneOf",
        "description",
        "title",
        "default",
        "examples",
        "$schema",
        "$id",
        "strict",
        "x-guidance",
    }
)


class SchemaError(ValueError):
    """A schema this server cannot guarantee (names the feature)."""


class Closer(Protocol):
    """The texts that end a constrained output validly, shortest first."""

    def endings(self, out: bytes) -> list[bytes] | None:
        """Candidate bytes to append to ``out``, shortest first (None: ``out`` is in a
        part with no closing due, such as the free-text branch of ``tool_choice: auto``).
        Several candidates stand where ``out`` is still a prefix of more than one branch;
        the engine takes the shortest one its grammar matcher accepts."""
        ...

    def complete(self, out: bytes) -> bytes | None:
        """The shortest candidate ending (see ``endings``)."""
        ...


class _Closer:
    """``complete`` from ``endings``."""

    def endings(self, out: bytes) -> list[bytes] | None:
        raise NotImplementedError

    def complete(self, out: bytes) -> bytes | None:
        found = self.endings(out)
        return found[0] if found else None


def _shortest_first(found: list[bytes]) -> list[bytes]:
    return sorted(dict.fromkeys(found), key=len)


@dataclass(frozen=True)
class Constraint:
    grammar: str  # llguidance grammar (already serialised)
    closer: Closer | None = None  # closes the output early when the budget runs out
    kind: str = "json"  # json | tool | answer (calls or a JSON answer) | auto (calls or text)
    description: str = field(default="", compare=False)


def _types(schema: dict[str, Any]) -> list[str]:
    t = schema.get("type")
    if isinstance(t, list):
        return [str(x) for x in t]
    if isinstance(t, str):
        return [t]
    if "properties" in schema:
        return ["object"]
    if "items" in schema:
        return ["array"]
    return []


def unsupported_features(
    schema: Any, root: dict[str, Any] | None = None, path: str = "$"
) -> list[str]:
    """Schema keywords the closer cannot honour, as JSON paths (empty: all supported)."""
    if not isinstance(schema, dict):
        return [] if isinstance(schema, bool) else [f"{path} (not a schema)"]
    root = root if root is not None else schema
    out = [f"{path}.{k}" for k in schema if k not in _SUPPORTED]
    for key in ("anyOf", "oneOf"):
        alts = schema.get(key)
        if isinstance(alts, list):
            seen: list[str] = []
            for i, alt in enumerate(alts):
                kinds = _types(_deref(alt, root)) if isinstance(alt, dict) else []
                if not kinds or any(k in seen for k in kinds):
                    out.append(f"{path}.{key} (alternatives of one JSON type)")
                    break
                seen.extend(kinds)
                out.extend(unsupported_features(alt, root, f"{path}.{key}[{i}]"))
    for name, sub in (schema.get("properties") or {}).items():
        out.extend(unsupported_features(sub, root, f"{path}.properties.{name}"))
    if isinstance(schema.get("items"), dict):
        out.extend(unsupported_features(schema["items"], root, f"{path}.items"))
    for defs in ("$defs", "definitions"):
        for name, sub in (schema.get(defs) or {}).items():
            out.extend(unsupported_features(sub, root, f"{path}.{defs}.{name}"))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        out.append(f"{path}.additionalProperties (as a schema)")
    return out


def _deref(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        ref = str(schema["$ref"])
        if not ref.startswith("#/"):
            raise SchemaError(f"{ref}: only local references are supported")
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise SchemaError(f"{ref} does not resolve")
        schema = node
        seen += 1
    return schema


def minimal_value(schema: Any, root: dict[str, Any], depth: int = 0) -> str:
    """The shortest valid JSON text for ``schema`` (compact)."""
    if depth > 32:
        raise SchemaError("the schema nests too deep to fill")
    if not isinstance(schema, dict) or not schema:
        return "null"  # any value (an empty schema), or none at all (False)
    schema = _deref(schema, root)
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False, separators=(",", ":"))
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        options = [json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in schema["enum"]]
        return min(options, key=len)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return min((minimal_value(a, root, depth + 1) for a in schema[key]), key=len)
    kinds = _types(schema) or ["object"]
    best = min(kinds, key=lambda k: {"null": 0, "boolean": 1, "integer": 2, "number": 2}.get(k, 3))
    if best == "null":
        return "null"
    if best == "boolean":
        return "false"
    if best in ("integer", "number"):
        return _minimal_number(schema, best)
    if best == "string":
        return json.dumps("a" * int(schema.get("minLength", 0)))
    if best == "array":
        n = int(schema.get("minItems", 0))
        item = minimal_value(schema.get("items", {}), root, depth + 1) if n else ""
        return "[" + ",".join([item] * n) + "]"
    return (
        "{"
        + ",".join(
            f"{json.dumps(name, ensure_ascii=False)}:{minimal_value(sub, root, depth + 1)}"
            for name, sub in _required_props(schema)
        )
        + "}"
    )


def _minimal_number(schema: dict[str, Any], kind: str) -> str:
    lo = schema.get("minimum")
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        lo = schema["exclusiveMinimum"] + 1
    hi = schema.get("maximum")
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        hi = schema["exclusiveMaximum"] - 1
    value: float = 0
    if lo is not None and lo > 0:
        value = lo
    if hi is not None and hi < 0:
        value = hi
    if kind == "integer" or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _required_props(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    return [(name, sub) for name, sub in props.items() if name in required]


@dataclass
class _Frame:
    kind: str  # object | array
    schema: dict[str, Any]
    state: str  # object: key|colon|value|after; array: first|value|after
    index: int = -1  # object: index of the current property in schema order
    count: int = 0  # array: items so far
    key: str = ""


class JsonCloser:
    """The shortest completion of a valid prefix of compact JSON for one schema."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.root = schema
        if unsupported := unsupported_features(schema):
            raise SchemaError("unsupported schema features: " + ", ".join(unsupported[:8]))

    def complete(self, data: bytes) -> bytes:
        """Bytes that make ``data`` + them the shortest valid document."""
        fix = _finish_utf8(data)
        text = (data + fix).decode("utf-8")
        return fix + self._complete(text).encode("utf-8")

    # -- the prefix's parse state ----------------------------------------------------------

    def _complete(self, text: str) -> str:  # noqa: C901 - one state machine, one place
        stack: list[_Frame] = []
        scalar = ""  # the scalar being read ("" when between values)
        in_string = escape = False
        pending_schema: dict[str, Any] | None = self.root  # the schema of the next value
        for ch in text:
            if in_string:
                scalar += ch
                if escape:
                    escape = False
                elif ch == "\\":
                    escape = True
                elif ch == '"':
                    in_string = False
                    self._end_string(stack, scalar)
                    scalar = ""
                    if stack and stack[-1].state == "colon":
                        continue
                    pending_schema = None
                continue
            if scalar and ch in ",]}":
                self._end_value(stack)
                scalar = ""
            if ch == '"':
                in_string, scalar = True, '"'
            elif ch == "{":
                stack.append(_Frame("object", self._deref(pending_schema, "object"), "key"))
            elif ch == "[":
                stack.append(_Frame("array", self._deref(pending_schema, "array"), "first"))
                pending_schema = stack[-1].schema.get("items", {})
            elif ch == ":":
                frame = stack[-1]
                frame.state = "value"
                pending_schema = self._prop(frame)
            elif ch == ",":
                frame = stack[-1]
                frame.state = "key" if frame.kind == "object" else "value"
                if frame.kind == "array":
                    pending_schema = frame.schema.get("items", {})
            elif ch in "]}":
                stack.pop()
                self._end_value(stack)
            else:
                scalar += ch
        if not text.strip():
            return minimal_value(self.root, self.root)
        return self._closing(stack, scalar, in_string, escape)

    def _deref(self, schema: dict[str, Any] | None, kind: str) -> dict[str, Any]:
        schema = _deref(schema or {}, self.root)
        for key in ("anyOf", "oneOf"):
            for alt in schema.get(key) or []:
                resolved = _deref(alt, self.root)
                if kind in _types(resolved):
                    return resolved
        return schema

    def _prop(self, frame: _Frame) -> dict[str, Any]:
        props = frame.schema.get("properties") or {}
        return dict(props.get(frame.key, {}))

    def _end_string(self, stack: list[_Frame], literal: str) -> None:
        frame = stack[-1] if stack else None
        if frame is not None and frame.kind == "object" and frame.state == "key":
            frame.key = json.loads(literal)
            names = list(frame.schema.get("properties") or {})
            frame.index = names.index(frame.key) if frame.key in names else frame.index
            frame.state = "colon"
            return
        self._end_value(stack)

    @staticmethod
    def _end_value(stack: list[_Frame]) -> None:
        if not stack:
            return
        frame = stack[-1]
        frame.state = "after"
        if frame.kind == "array":
            frame.count += 1

    # -- the completion ------------------------------------------------------------------

    def _closing(self, stack: list[_Frame], scalar: str, in_string: bool, escape: bool) -> str:
        out = ""
        if in_string:
            out += self._finish_string(stack, scalar, escape)
        elif scalar:
            out += _finish_scalar(scalar)
            self._end_value(stack)
        for depth in range(len(stack) - 1, -1, -1):
            out += self._close_frame(stack[depth])
            self._end_value(stack[:depth])  # the closed container is its parent's value
        return out

    def _finish_string(self, stack: list[_Frame], scalar: str, escape: bool) -> str:
        tail = ("n" if escape else "") + '"'
        body = json.loads(scalar + tail)
        frame = stack[-1] if stack else None
        if frame is not None and frame.kind == "object" and frame.state == "key":
            names = list(frame.schema.get("properties") or {})
            rest = [n for i, n in enumerate(names) if i > frame.index and n.startswith(body)]
            name = rest[0] if rest else body
            frame.key, frame.index = name, names.index(name) if name in names else frame.index
            frame.state = "after"
            value = minimal_value(self._prop(frame), self.root)
            return (
                json.dumps(name, ensure_ascii=False)[len(scalar) - (1 if escape else 0) :]
                + ":"
                + value
            )
        schema = self._value_schema(stack)
        options = schema.get("enum") if isinstance(schema.get("enum"), list) else None
        if "const" in schema:
            options = [schema["const"]]
        if options:
            match = next((v for v in options if isinstance(v, str) and v.startswith(body)), None)
            if match is not None:
                full = json.dumps(match, ensure_ascii=False)
                self._end_value(stack)
                return full[len(scalar) - (1 if escape else 0) :]
        pad = max(0, int(schema.get("minLength", 0)) - len(body))
        self._end_value(stack)
        return ("n" if escape else "") + "a" * pad + '"'

    def _value_schema(self, stack: list[_Frame]) -> dict[str, Any]:
        if not stack:
            return self._deref(self.root, "string")
        frame = stack[-1]
        if frame.kind == "array":
            return self._deref(frame.schema.get("items", {}), "string")
        return self._deref(self._prop(frame), "string")

    def _close_frame(self, frame: _Frame) -> str:
        if frame.kind == "array":
            out = ""
            if frame.state == "value":  # after a comma: an item is due
                out += minimal_value(frame.schema.get("items", {}), self.root)
                frame.count += 1
            need = int(frame.schema.get("minItems", 0)) - frame.count
            item = minimal_value(frame.schema.get("items", {}), self.root) if need > 0 else ""
            out += "".join(("," if frame.count + i else "") + item for i in range(max(0, need)))
            return out + "]"
        out = ""
        if frame.state == "colon":
            out += ":"
            frame.state = "value"
        if frame.state == "value":
            out += minimal_value(self._prop(frame), self.root)
        names = list((frame.schema.get("properties") or {}).items())
        required = set(frame.schema.get("required") or [])
        first = frame.index < 0 and frame.state == "key"
        after_comma = frame.state == "key" and frame.index >= 0
        todo = [(n, s) for i, (n, s) in enumerate(names) if i > frame.index and n in required]
        if after_comma and not todo:  # a comma was written: some property must follow
            todo = [(n, s) for i, (n, s) in enumerate(names) if i > frame.index][:1]
        parts = [
            f"{json.dumps(n, ensure_ascii=False)}:{minimal_value(s, self.root)}" for n, s in todo
        ]
        joined = ",".join(parts)
        if parts and not first and not after_comma:
            joined = "," + joined
        return out + joined + "}"


def _finish_scalar(scalar: str) -> str:
    """The rest of a number or literal prefix (``tr`` -> ``ue``, ``1.`` -> ``0``)."""
    for literal in ("true", "false", "null"):
        if literal.startswith(scalar):
            return literal[len(scalar) :]
    # Numbers end on a non-zero digit where one may follow: range grammars refuse "-0"
    # and trailing zeros in a fraction ("-0.310"), and "1." or "1e" need a digit anyway.
    if scalar.endswith(("-", ".", "e", "E", "+")):
        return "1"
    if scalar == "-0":
        return ".1"
    if "." in scalar and "e" not in scalar.lower() and scalar.endswith("0"):
        return "1"
    return ""


def _finish_utf8(data: bytes) -> bytes:
    """Continuation bytes that complete a multi-byte character cut at the end of ``data``."""
    for n in range(1, 4):
        tail = data[-n:] if len(data) >= n else data
        lead = tail[0] if tail else 0
        need = 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if lead >= 0xF0 else 0
        if need and len(tail) < need:
            for cont in range(0x80, 0xC0):
                fix = bytes([cont]) * (need - len(tail))
                try:
                    (tail + fix).decode("utf-8")
                except UnicodeDecodeError:
                    continue
                return fix
    return b""


@dataclass(frozen=True)
class Framed(_Closer):
    """A closer for output ``prefix + inner + suffix`` (a fence around a JSON part)."""

    inner: Closer
    prefix: bytes = b""
    suffix: bytes = b""

    def endings(self, out: bytes) -> list[bytes] | None:
        if out.startswith(self.prefix):
            body = out[len(self.prefix) :]
            # Past the JSON part already (in the suffix): finish the suffix.
            for cut in range(len(self.suffix), 0, -1):
                if body.endswith(self.suffix[:cut]):
                    done = self.inner.endings(body[: len(body) - cut])
                    if done is not None and b"" in done:
                        return [self.suffix[cut:]]
            tails = self.inner.endings(body)
            return None if tails is None else [t + self.suffix for t in tails]
        if self.prefix.startswith(out):
            tails = self.inner.endings(b"")
            rest = self.prefix[len(out) :]
            return None if tails is None else [rest + t + self.suffix for t in tails]
        return None


@dataclass(frozen=True)
class Schema(_Closer):
    """A closer for one JSON document of ``schema``."""

    schema: dict[str, Any]

    def endings(self, out: bytes) -> list[bytes] | None:
        try:
            return [JsonCloser(self.schema).complete(out)]
        except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError):
            return []  # not a prefix of a document: this closer has no ending for it


def call_schema(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The schema of one call of a function: its name, then its arguments."""
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class CallsCloser(_Closer):
    """A closer for function calls: one call ``{"name":..,"arguments":..}`` of any of
    ``tools`` (name -> parameters schema) or, with ``parallel``, a JSON array of at most
    ``max_calls`` of them (None: any number)."""

    tools: tuple[tuple[str, dict[str, Any]], ...]
    parallel: bool = False
    max_calls: int | None = None

    def _call(self, elem: bytes) -> list[bytes]:
        """The endings of one call's prefix ``elem``, one per function it may still be."""
        found: list[bytes] = []
        for name, params in self.tools:
            head = ('{"name":' + json.dumps(name, ensure_ascii=False)).encode()
            if head.startswith(elem) or elem.startswith(head):
                found.extend(Schema(call_schema(name, params)).endings(elem) or [])
        return _shortest_first(found)

    def endings(self, out: bytes) -> list[bytes] | None:
        if not (self.parallel and out.startswith(b"[")):
            return self._call(out)
        depth, start = _array_position(out)
        if depth == 0:  # the array is closed
            return [b""]
        elem = out[start:]
        if elem and depth == 1:  # between calls, after a complete one
            return [b"]"]
        return [t + b"]" for t in self._call(elem)]


@dataclass(frozen=True)
class Answer(_Closer):
    """The closer of ``tool_choice: auto``: the output is a fenced block of calls
    (``calls``, whose prefix is the lead and the fence's head), or an answer after
    ``lead``: a JSON document (``doc``) or free text (``doc`` None, nothing to close).
    Each ending continues the branch the output is on; while the output is still a
    prefix of both, both branches' endings stand."""

    calls: Framed
    lead: bytes
    doc: Closer | None = None

    def _on_calls(self, out: bytes) -> bool:
        return out.startswith(self.calls.prefix) or self.calls.prefix.startswith(out)

    def _on_doc(self, out: bytes) -> bool:
        if self.lead.startswith(out):
            return True
        if not out.startswith(self.lead) or out.startswith(self.calls.prefix):
            return False
        return out[len(self.lead) :][:1] in _JSON_STARTS

    def endings(self, out: bytes) -> list[bytes] | None:
        found: list[bytes] = []
        if self._on_calls(out):
            found.extend(self.calls.endings(out) or [])
        if self.doc is None:
            return _shortest_first(found) if self._on_calls(out) else None
        if self._on_doc(out):
            found.extend(Framed(self.doc, self.lead).endings(out) or [])
        return _shortest_first(found)


_JSON_STARTS = frozenset(bytes([c]) for c in b'{["-0123456789tfn')


def _array_position(out: bytes) -> tuple[int, int]:
    """(nesting depth at the end of ``out``, where its last top-level item starts)."""
    depth, in_string, escape, start = 0, False, False, 1
    for i, byte in enumerate(out):  # multi-byte UTF-8 never holds an ASCII byte
        ch = chr(byte)
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 1:
            start = i + 1
    return depth, start


def _lark_literal(text: str) -> str:
    return json.dumps(text)


def _json_rule(schema: dict[str, Any]) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": JSON_OPTIONS})


class SchemaTooLarge(SchemaError):
    """A schema whose shortest valid document is past the allowed size."""


def check_schema(schema: Any, max_min_bytes: int | None = None) -> dict[str, Any]:
    """The schema, or a SchemaError naming what this server cannot guarantee. With
    ``max_min_bytes``, a schema whose shortest valid document is larger is refused from
    arithmetic alone, before that document is ever built."""
    if not isinstance(schema, dict):
        raise SchemaError("the schema must be a JSON object")
    if unsupported := unsupported_features(schema):
        raise SchemaError("unsupported schema features: " + ", ".join(unsupported[:8]))
    _check_refs(schema, schema)
    if max_min_bytes is not None and (need := shortest_json_bytes(schema)) > max_min_bytes:
        raise SchemaTooLarge(
            f"the shortest document this schema allows is at least {need} bytes; the limit "
            f"is {max_min_bytes}"
        )
    minimal_value(schema, schema)
    return schema


def _check_refs(node: Any, root: dict[str, Any], depth: int = 0) -> None:
    """Every ``$ref`` in the schema resolves (a SchemaError names the one that does not)."""
    if depth > 64:
        raise SchemaError("the schema nests too deep")
    if isinstance(node, dict):
        if "$ref" in node:
            _deref(node, root)
        for value in node.values():
            _check_refs(value, root, depth + 1)
    elif isinstance(node, list):
        for value in node:
            _check_refs(value, root, depth + 1)


def json_constraint(schema: dict[str, Any] | None, prefix: str = "") -> Constraint:
    """JSON output (any object when ``schema`` is None), after ``prefix``."""
    schema = check_schema(schema if schema is not None else {"type": "object"})
    lines = [f"start: {_lark_literal(prefix)} doc" if prefix else "start: doc"]
    lines.append("doc: " + _json_rule(schema))
    closer = Framed(Schema(schema), prefix.encode())
    return Constraint("\n".join(lines), closer, kind="json")


def calls_constraint(
    tools: list[tuple[str, dict[str, Any]]],
    *,
    parallel: bool,
    max_calls: int | None = None,
    fence: tuple[str, str] | None = None,
    text_start: str | None = None,
    alt_schema: dict[str, Any] | None = None,
) -> Constraint:
    """Function calls of ``tools`` (with ``parallel``, a JSON array of at most
    ``max_calls`` of them; one call when ``max_calls`` is 1); with ``fence``, the calls
    sit between its two parts. With ``text_start`` the output may instead be an answer
    (``tool_choice: auto``) that starts with it: free text not starting like the fence,
    or, with ``alt_schema``, a JSON document of that schema."""
    for _, params in tools:
        check_schema(params)
    if max_calls is not None and max_calls < 1:
        raise SchemaError("at least one call must be allowed")
    parallel = parallel and max_calls != 1
    calls = [f"call{i}" for i in range(len(tools))]
    lines = ["call: " + " | ".join(calls)]
    lines += [f"call{i}: " + _json_rule(call_schema(n, p)) for i, (n, p) in enumerate(tools)]
    more = "*" if max_calls is None else f"{{0,{max_calls - 1}}}"
    lines.append(f'calls: call | "[" call ("," call){more} "]"' if parallel else "calls: call")
    inner = CallsCloser(tuple(tools), parallel, max_calls if parallel else 1)
    if fence is None:
        return Constraint("\n".join(["start: calls", *lines]), inner, kind="tool")
    head, tail = fence
    block = f"{_lark_literal(head)} calls {_lark_literal(tail)}"
    framed = Framed(inner, head.encode(), tail.encode())
    if text_start is None:
        return Constraint("\n".join([f"start: {block}", *lines]), framed, kind="tool")
    start = f"{_lark_literal(text_start)} " if text_start else ""
    if alt_schema is not None:
        check_schema(alt_schema)
        lines.append("doc: " + _json_rule(alt_schema))
        closer = Answer(framed, text_start.encode(), Schema(alt_schema))
        # Every output of this grammar is JSON (calls or a document): it always has an
        # ending due, so it is held to its budget like a JSON format ("answer").
        grammar = "\n".join([f"start: {block} | {start}doc", *lines])
        return Constraint(grammar, closer, kind="answer")
    lead = head[len(text_start) :][:1] if head.startswith(text_start) else ""
    lines.append(f"TEXT: /{_regex_not(lead)}[\\s\\S]*/" if lead else "TEXT: /[\\s\\S]+/")
    grammar = "\n".join([f"start: {block} | {start}TEXT", *lines])
    return Constraint(grammar, Answer(framed, text_start.encode()), kind="auto")


@dataclass(frozen=True)
class AfterThought(_Closer):
    """A closer for ``lead`` + a thought ending in ``end``, then what ``inner`` closes."""

    inner: Closer
    end: bytes = b"</think>"
    lead: bytes = b">"

    def endings(self, out: bytes) -> list[bytes] | None:
        cut = out.find(self.end)
        if cut >= 0:
            return self.inner.endings(out[cut + len(self.end) :])
        after = self.inner.endings(b"")
        if after is None:  # free text may follow: end the thought, nothing more is due
            after = [b""]
        for n in range(len(self.end) - 1, 0, -1):  # the end tag already begun
            if out.endswith(self.end[:n]):
                return [self.end[n:] + a for a in after]
        return [(self.lead if not out else b"") + self.end + a for a in after]


def after_thought(c: Constraint, end: str = "</think>", lead: str = ">") -> Constraint:
    """``c`` preceded by a thought (the prompt opened ``<think``): free text up to ``end``."""
    body = c.grammar.replace("start:", "answer:", 1)
    head = [
        f"start: {_lark_literal(lead)} thought answer" if lead else "start: thought answer",
        f"thought[stop={_lark_literal(end)}]: /(.|\\n)*/",
    ]
    closer = AfterThought(c.closer, end.encode(), lead.encode()) if c.closer else None
    return Constraint("\n".join([*head, body]), closer, kind=c.kind)


def _regex_not(ch: str) -> str:
    return "[^" + ("\\" + ch if ch in "\\]^-[/" else ch) + "]"
