"""Attribute filters of the Vector Stores search API.

A comparison ``{type: eq|ne|gt|gte|lt|lte|in|nin, key, value}`` or a compound
``{type: and|or, filters: [...]}``, evaluated against a file's ``attributes``. Filters are
validated once (a bad one is a 400 naming it) and then applied to each file, so search
can limit both FAISS and FTS5 to the matching files' chunks before ranking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engines.errors import InvalidRequestError

__all__ = ["compile_filter"]

Predicate = Callable[[dict[str, Any]], bool]

_COMPARISONS = {"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"}
_SCALAR = (str, int, float, bool)


def _bad(msg: str) -> InvalidRequestError:
    return InvalidRequestError(msg, param="filters")


def _ordered(a: Any, b: Any) -> bool:
    """Order comparisons need two numbers or two strings (bools are not numbers here)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, int | float) and isinstance(b, int | float)) or (
        isinstance(a, str) and isinstance(b, str)
    )


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def compile_filter(spec: Any, path: str = "filters") -> Predicate:
    if not isinstance(spec, dict):
        raise _bad(f"{path} must be an object")
    kind = spec.get("type")
    if kind in ("and", "or"):
        subs = spec.get("filters")
        if not isinstance(subs, list) or not subs:
            raise _bad(f"{path}.filters must be a non-empty list")
        preds = [compile_filter(f, f"{path}.filters[{i}]") for i, f in enumerate(subs)]
        if kind == "and":
            return lambda attrs: all(p(attrs) for p in preds)
        return lambda attrs: any(p(attrs) for p in preds)
    if kind not in _COMPARISONS:
        raise _bad(
            f"{path}.type must be one of eq, ne, gt, gte, lt, lte, in, nin, and, or; got {kind!r}"
        )
    key = spec.get("key")
    if not isinstance(key, str) or not key:
        raise _bad(f"{path}.key must be a non-empty string")
    if "value" not in spec:
        raise _bad(f"{path}.value is required")
    value = spec["value"]
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not all(isinstance(v, _SCALAR) for v in value):
            raise _bad(f"{path}.value must be a list of strings, numbers or booleans")
        members = list(value)
        if kind == "in":
            return lambda attrs: key in attrs and any(_eq(attrs[key], v) for v in members)
        return lambda attrs: key not in attrs or not any(_eq(attrs[key], v) for v in members)
    if not isinstance(value, _SCALAR):
        raise _bad(f"{path}.value must be a string, number or boolean")
    if kind == "eq":
        return lambda attrs: key in attrs and _eq(attrs[key], value)
    if kind == "ne":
        return lambda attrs: key not in attrs or not _eq(attrs[key], value)
    if isinstance(value, bool):
        raise _bad(f"{path}: {kind} needs a number or a string, not a boolean")

    def order(attrs: dict[str, Any]) -> bool:
        if key not in attrs or not _ordered(attrs[key], value):
            return False
        a = attrs[key]
        if kind == "gt":
            return bool(a > value)
        if kind == "gte":
            return bool(a >= value)
        if kind == "lt":
            return bool(a < value)
        return bool(a <= value)

    return order
