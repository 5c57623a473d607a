"""Cursor paging as the OpenAI list endpoints do it: limit, order, after, before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from engines.errors import InvalidRequestError

T = TypeVar("T")

__all__ = ["page"]


def page(
    items: list[T],
    *,
    key: Callable[[T], str],
    limit: int | None,
    order: str | None,
    after: str | None,
    before: str | None,
    render: Callable[[T], Any],
) -> dict[str, Any]:
    """``items`` oldest first; returns the list object with first_id/last_id/has_more."""
    limit = 20 if limit is None else limit
    if not 1 <= limit <= 100:
        raise InvalidRequestError("'limit' must be between 1 and 100", param="limit")
    order = order or "desc"
    if order not in ("asc", "desc"):
        raise InvalidRequestError("'order' must be 'asc' or 'desc'", param="order")
    seq = list(reversed(items)) if order == "desc" else list(items)
    ids = [key(x) for x in seq]
    start, end = 0, len(seq)
    if after:
        if after not in ids:
            raise InvalidRequestError(f"no object {after!r} to page after", param="after")
        start = ids.index(after) + 1
    if before:
        if before not in ids:
            raise InvalidRequestError(f"no object {before!r} to page before", param="before")
        end = ids.index(before)
    window = seq[start:end]
    if before and not after:
        chosen = window[-limit:]
        has_more = len(window) > limit
    else:
        chosen = window[:limit]
        has_more = len(window) > limit
    data = [render(x) for x in chosen]
    return {
        "object": "list",
        "data": data,
        "first_id": key(chosen[0]) if chosen else None,
        "last_id": key(chosen[-1]) if chosen else None,
        "has_more": has_more,
    }
