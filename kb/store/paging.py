"""Cursor paging in SQL, as the OpenAI list endpoints page: ``limit``, ``order``, and ids
as ``after``/``before`` cursors; rows are ordered by (created_at, a tie-break column).
Shared by both backends: SQLite (``?``, rowid) and PostgreSQL (``%s``, a serial)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from core.errors import InvalidRequestError
from kb.store.db import Database, Row
from kb.types import Page, PageRequest

__all__ = ["paged", "paged_query"]

T = TypeVar("T")
FetchOne = Callable[[str, Sequence[object]], Mapping[str, Any] | None]
FetchRows = Callable[[str, Sequence[object]], Sequence[Mapping[str, Any]]]


def paged_query(
    one: FetchOne,
    rows_of: FetchRows,
    table: str,
    id_col: str,
    where: str,
    args: Sequence[object],
    page: PageRequest,
    convert: Callable[[Any], T],
    *,
    select: str = "*",
    ph: str = "?",
    tie: str = "rowid",
) -> Page[T]:
    """One page of ``SELECT select FROM table WHERE where`` (the table's own columns)."""
    conds = [where]
    params: list[object] = list(args)
    newer = ">" if page.order == "asc" else "<"
    older = "<" if page.order == "asc" else ">"
    for value, sign, param in ((page.after, newer, "after"), (page.before, older, "before")):
        if not value:
            continue
        row = one(
            f"SELECT created_at, {tie} FROM {table} WHERE {where} AND {id_col} = {ph}",
            [*args, value],
        )
        if row is None:
            raise InvalidRequestError(f"no object {value!r} to page {param}", param=param)
        conds.append(f"(created_at, {tie}) {sign} ({ph}, {ph})")
        params.extend([row["created_at"], row[tie]])
    backwards = bool(page.before and not page.after)
    direction = "ASC" if (page.order == "asc") != backwards else "DESC"
    rows = list(
        rows_of(
            f"SELECT {select} FROM {table} WHERE {' AND '.join(conds)} "
            f"ORDER BY created_at {direction}, {tie} {direction} LIMIT {ph}",
            [*params, page.limit + 1],
        )
    )
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    if backwards:
        rows.reverse()
    return Page([convert(r) for r in rows], has_more)


def paged(
    db: Database,
    table: str,
    id_col: str,
    where: str,
    args: Sequence[object],
    page: PageRequest,
    convert: Callable[[Row], T],
    select: str = "*",
) -> Page[T]:
    return paged_query(db.one, db.rows, table, id_col, where, args, page, convert, select=select)
