"""Attribute filters compiled to SQL over ``attributes`` (jsonb), with the semantics of
``Filter.matches`` (kb/filters.py): equality does not mix booleans and numbers, order
comparisons need two numbers or two strings (compared by code point), and a missing key
satisfies only the negative operators. Dify's text and loose-number operators have no
compiled form: ``compile_filter`` returns None and the caller evaluates them in Python.
``file_scope`` narrows a search to the chunks of the files a filter left."""

from __future__ import annotations

import json

from kb.filters import Compare, Filter

__all__ = ["compile_filter", "file_scope"]

_ORDER = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _jsonb(value: object) -> str:
    return json.dumps(value)


def _compare(c: Compare, col: str, args: list[object]) -> str | None:
    has = f"({col} ? %s)"
    val = f"({col} -> %s)"
    if c.op in ("eq", "ne"):
        args.extend([c.key, c.key, _jsonb(c.value)])
        test = f"({has} AND {val} = %s::jsonb)"
        return test if c.op == "eq" else f"(NOT {test})"
    if c.op in ("in", "nin"):
        values = list(c.value) if isinstance(c.value, tuple) else [c.value]
        args.extend([c.key, c.key, [_jsonb(v) for v in values]])
        test = f"({has} AND {val} = ANY(%s::jsonb[]))"
        return test if c.op == "in" else f"(NOT {test})"
    if c.op in _ORDER:
        sign = _ORDER[c.op]
        if isinstance(c.value, bool) or c.value is None or isinstance(c.value, tuple):
            return "FALSE"
        if isinstance(c.value, int | float):
            args.extend([c.key, c.key, c.value])
            return (
                f"(jsonb_typeof({val}) = 'number' AND ({col} ->> %s)::double precision "
                f"{sign} %s::double precision)"
            )
        args.extend([c.key, c.key, str(c.value)])
        return f"(jsonb_typeof({val}) = 'string' AND ({col} ->> %s) COLLATE \"C\" {sign} %s)"
    return None


def _compile(f: Filter, col: str, args: list[object]) -> str | None:
    if isinstance(f, Compare):
        return _compare(f, col, args)
    parts = []
    for sub in f.filters:
        sql = _compile(sub, col, args)
        if sql is None:
            return None
        parts.append(sql)
    joiner = " AND " if f.op == "and" else " OR "
    return "(" + joiner.join(parts) + ")" if parts else ("TRUE" if f.op == "and" else "FALSE")


def compile_filter(f: Filter, col: str = "attributes") -> tuple[str, list[object]] | None:
    """(SQL condition, its parameters), or None when the filter uses an operator with no
    compiled form."""
    args: list[object] = []
    sql = _compile(f, col, args)
    return None if sql is None else (sql, args)


def file_scope(files: list[str] | None, chunk: str = "c.id") -> tuple[str, list[object]]:
    """The condition keeping chunks (``chunk``: their id column) of the given files, and
    its parameters; nothing when every file is allowed."""
    if files is None:
        return "", []
    alias = chunk.split(".")[0]
    return (
        f" AND {chunk} IN (SELECT chunk_id FROM chunk_refs WHERE collection_id = "
        f"{alias}.collection_id AND file_id = ANY(%s))",
        [files],
    )
