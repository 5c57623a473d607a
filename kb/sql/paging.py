"""Cursor paging in SQL, as the OpenAI list endpoints page: ``limit``, ``order``, and ids
as ``after``/``before`` cursors; rows are ordered by (created_at, the dialect's tie-break
column)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from core.errors import InvalidRequestError
from kb.sql.port import Row, SqlPort
from kb.types import Page, PageRequest

__all__ = ["paged"]

T = TypeVar("T")


def paged(
    db: SqlPort,
    table: str,
    id_col: str,
    where: str,
    args: Sequence[object],
    page: PageRequest,
    convert: Callable[[Row], T],
    *,
    select: str = "*",
) -> Page[T]:
    """One page of ``SELECT select FROM table WHERE where`` (the table's own columns)."""
    tie = db.dialect.tie
    conds = [where]
    params: list[object] = list(args)
    newer = ">" if page.order == "asc" else "<"
    older = "<" if page.order == "asc" else ">"
    for value, sign, param in ((page.after, newer, "after"), (page.before, older, "before")):
        if not value:
            continue
        row = db.one(
            f"SELECT created_at, {tie} FROM {table} WHERE {where} AND {id_col} = ?",
            [*args, value],
        )
        if row is None:
            raise InvalidRequestError(f"no object {value!r} to page {param}", param=param)
        conds.append(f"(created_at, {tie}) {sign} (?, ?)")
        params.extend([row["created_at"], row[tie]])
    backwards = bool(page.before and not page.after)
    direction = "ASC" if (page.order == "asc") != backwards else "DESC"
    rows = db.rows(
        f"SELECT {select} FROM {table} WHERE {' AND '.join(conds)} "
        f"ORDER BY created_at {direction}, {tie} {direction} LIMIT ?",
        [*params, page.limit + 1],
    )
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    if backwards:
        rows.reverse()
    return Page([convert(r) for r in rows], has_more)
