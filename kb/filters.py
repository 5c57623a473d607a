"""Attribute filters over a file's ``attributes``, as one small typed tree.

The Vector Stores search syntax parses into it: a comparison ``{type: eq|ne|gt|gte|lt|
lte|in|nin, key, value}`` or a compound ``{type: and|or, filters: [...]}``; Dify's metadata
conditions (contains, starts with, empty, ...) build the same tree. A filter is validated
once (a bad one is a 400 naming it, with its depth and breadth capped) and then either
evaluated per file (``matches``) or compiled to SQL by a backend.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Literal

from core.errors import InvalidRequestError

__all__ = [
    "Compare",
    "Compound",
    "Filter",
    "FilterLimits",
    "Scalar",
    "parse_filter",
    "scalar_problem",
]

Scalar = str | int | float | bool
CompareOp = Literal[
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "nin",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "text_eq",
    "text_ne",
    "empty",
    "not_empty",
    "num_eq",
    "num_ne",
    "loose_gt",
    "loose_gte",
    "loose_lt",
    "loose_lte",
]
_VECTOR_STORE_OPS = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"})
# Operators true for a file that lacks the key.
_NEGATIVE = frozenset({"ne", "nin", "not_contains", "text_ne", "empty", "num_ne"})


@dataclass(frozen=True, slots=True)
class FilterLimits:
    max_depth: int = 8
    max_conditions: int = 64
    max_in_values: int = 256


@dataclass(frozen=True, slots=True)
class Compare:
    op: CompareOp
    key: str
    value: Scalar | tuple[Scalar, ...] | None = None

    def matches(self, attrs: dict[str, object]) -> bool:
        if self.key not in attrs:
            return self.op in _NEGATIVE
        return _test(self.op, attrs[self.key], self.value)


@dataclass(frozen=True, slots=True)
class Compound:
    op: Literal["and", "or"]
    filters: tuple[Filter, ...]

    def matches(self, attrs: dict[str, object]) -> bool:
        if self.op == "and":
            return all(f.matches(attrs) for f in self.filters)
        return any(f.matches(attrs) for f in self.filters)


Filter = Compare | Compound


def _eq(a: object, b: object) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def _ordered(a: object, b: object) -> bool:
    """Order comparisons need two numbers or two strings (bools are not numbers here)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, int | float) and isinstance(b, int | float)) or (
        isinstance(a, str) and isinstance(b, str)
    )


def _number(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        return float(v)  # type: ignore[arg-type]  # strings of digits compare as numbers
    except (TypeError, ValueError):
        return None


def _order(op: str, a: object, b: object) -> bool:
    if op.endswith("gt"):
        return bool(a > b)  # type: ignore[operator]
    if op.endswith("gte"):
        return bool(a >= b)  # type: ignore[operator]
    if op.endswith("lt"):
        return bool(a < b)  # type: ignore[operator]
    return bool(a <= b)  # type: ignore[operator]


def _text_test(op: str, text: str, want: str, raw: object) -> bool:
    if op == "contains":
        return want in text
    if op == "not_contains":
        return want not in text
    if op == "starts_with":
        return text.startswith(want)
    if op == "ends_with":
        return text.endswith(want)
    if op == "text_eq":
        return text == want
    if op == "text_ne":
        return text != want
    if op == "empty":
        return raw in (None, "")
    return raw not in (None, "")


def _test(op: CompareOp, a: object, b: object) -> bool:
    if op in ("eq", "ne"):
        return _eq(a, b) == (op == "eq")
    if op in ("in", "nin"):
        found = any(_eq(a, v) for v in b)  # type: ignore[attr-defined]
        return found == (op == "in")
    if op in ("gt", "gte", "lt", "lte"):
        return _ordered(a, b) and _order(op, a, b)
    na, nb = _number(a), _number(b)
    if op in ("num_eq", "num_ne"):
        return (na is not None and na == nb) == (op == "num_eq")
    if op.startswith("loose_"):
        # Numbers when both sides read as numbers, else text (Dify compares dates so).
        if na is not None and nb is not None:
            return _order(op, na, nb)
        return _order(op, "" if a is None else str(a), "" if b is None else str(b))
    return _text_test(op, "" if a is None else str(a), "" if b is None else str(b), a)


def scalar_problem(value: object) -> str | None:
    """Why a stored or compared value cannot be kept as it is on every backend: PostgreSQL
    text holds no NUL character, and its JSON numbers and double precision stop at the
    float range (SQLite takes both, so the check is here, the same for each)."""
    if isinstance(value, str):
        return "holds a NUL character (\\u0000)" if "\x00" in value else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if abs(value) <= sys.float_info.max else "is outside the float range"
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    return None


def _bad(msg: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(msg, param=param, code="invalid_filter")


class _Parser:
    def __init__(self, limits: FilterLimits, param: str) -> None:
        self.limits = limits
        self.param = param
        self.count = 0

    def parse(self, spec: object, path: str, depth: int) -> Filter:
        if depth > self.limits.max_depth:
            raise _bad(
                f"{path}: filters nest deeper than {self.limits.max_depth} levels", self.param
            )
        self.count += 1
        if self.count > self.limits.max_conditions:
            raise _bad(
                f"filters hold more than {self.limits.max_conditions} conditions", self.param
            )
        if not isinstance(spec, dict):
            raise _bad(f"{path} must be an object", self.param)
        kind = spec.get("type")
        if kind in ("and", "or"):
            subs = spec.get("filters")
            if not isinstance(subs, list) or not subs:
                raise _bad(f"{path}.filters must be a non-empty list", self.param)
            parts = tuple(
                self.parse(f, f"{path}.filters[{i}]", depth + 1) for i, f in enumerate(subs)
            )
            return Compound("and" if kind == "and" else "or", parts)
        if kind not in _VECTOR_STORE_OPS:
            raise _bad(
                f"{path}.type must be one of eq, ne, gt, gte, lt, lte, in, nin, and, or; "
                f"got {kind!r}",
                self.param,
            )
        return self._compare(spec, str(kind), path)

    def _compare(self, spec: dict[str, object], kind: str, path: str) -> Compare:
        key = spec.get("key")
        if not isinstance(key, str) or not key:
            raise _bad(f"{path}.key must be a non-empty string", self.param)
        if (problem := scalar_problem(key)) is not None:
            raise _bad(f"{path}.key {problem}", self.param)
        if "value" not in spec:
            raise _bad(f"{path}.value is required", self.param)
        value = spec["value"]
        if kind in ("in", "nin"):
            if not isinstance(value, list) or not all(isinstance(v, Scalar) for v in value):
                raise _bad(
                    f"{path}.value must be a list of strings, numbers or booleans", self.param
                )
            if len(value) > self.limits.max_in_values:
                raise _bad(
                    f"{path}.value lists more than {self.limits.max_in_values} values", self.param
                )
            for i, v in enumerate(value):
                if (problem := scalar_problem(v)) is not None:
                    raise _bad(f"{path}.value[{i}] {problem}", self.param)
            return Compare(kind, key, tuple(value))  # type: ignore[arg-type]
        if not isinstance(value, Scalar):
            raise _bad(f"{path}.value must be a string, number or boolean", self.param)
        if (problem := scalar_problem(value)) is not None:
            raise _bad(f"{path}.value {problem}", self.param)
        if kind in ("gt", "gte", "lt", "lte") and isinstance(value, bool):
            raise _bad(f"{path}: {kind} needs a number or a string, not a boolean", self.param)
        return Compare(kind, key, value)  # type: ignore[arg-type]


def parse_filter(
    spec: object, *, param: str = "filters", limits: FilterLimits | None = None
) -> Filter:
    """Validate a Vector Stores filter and build its tree (a 400 naming ``param`` if bad)."""
    return _Parser(limits or FilterLimits(), param).parse(spec, param, 1)
