"""What a JSON document valid against a schema costs at least, computed arithmetically
from the schema alone (no value is built): lower bounds in bytes of compact JSON, from
``minLength``/``minItems`` products, required properties and the cheapest branch.
Figures saturate at ``CEILING``, so a 41-byte schema asking for fifty million
characters costs nothing to judge."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["CEILING", "shortest_call_bytes", "shortest_json_bytes"]

# Saturation: past this every figure is "too large" (no huge integers from products).
CEILING = 1 << 40


def _add(*xs: int) -> int:
    return min(CEILING, sum(xs))


def _mul(a: int, b: int) -> int:
    return CEILING if a and b and a >= CEILING // max(b, 1) else min(CEILING, a * b)


def _compact(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _int(x: Any) -> int:
    return x if isinstance(x, int) and not isinstance(x, bool) and x > 0 else 0


def _typed(kind: str, schema: dict[str, Any], root: dict[str, Any], seen: frozenset[str]) -> int:
    if kind == "string":
        return _add(2, _int(schema.get("minLength")))
    if kind in ("boolean", "null"):
        return 4
    if kind in ("integer", "number"):
        return 1
    if kind == "array":
        n = _int(schema.get("minItems"))
        if n == 0:
            return 2
        item = _bytes(schema.get("items", True), root, seen)
        return _add(2, _mul(n, item), n - 1)
    if kind == "object":
        props = schema.get("properties") or {}
        required = [k for k in schema.get("required") or [] if isinstance(k, str)]
        parts = [_add(_compact(k), 1, _bytes(props.get(k, True), root, seen)) for k in required]
        return _add(2, *parts, max(len(parts) - 1, 0))
    return 1


def _bytes(schema: Any, root: dict[str, Any], seen: frozenset[str]) -> int:
    if not isinstance(schema, dict):
        return 1  # true (anything): the shortest JSON value
    if "const" in schema:
        return _compact(schema["const"])
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return min(_compact(v) for v in schema["enum"])
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            return 1  # a recursive reference: its shortest expansion is found elsewhere
        return _bytes(_resolve(ref, root), root, seen | {ref})
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list) and branches:
        return min(_bytes(b, root, seen) for b in branches)
    kinds = schema.get("type")
    if isinstance(kinds, list) and kinds:
        return min(_typed(str(k), schema, root, seen) for k in kinds)
    if isinstance(kinds, str):
        return _typed(kinds, schema, root, seen)
    if "properties" in schema:
        return _typed("object", schema, root, seen)
    if "items" in schema:
        return _typed("array", schema, root, seen)
    return 1


def shortest_json_bytes(schema: Any) -> int:
    """A lower bound on the bytes of any compact JSON document valid against ``schema``."""
    root = schema if isinstance(schema, dict) else {}
    return _bytes(schema, root, frozenset())


def shortest_call_bytes(name: str, parameters: Any) -> int:
    """A lower bound on one call written as ``{"name":...,"arguments":...}``."""
    return _add(_compact({"name": name, "arguments": None}) - 4, shortest_json_bytes(parameters))
