"""Dify's external knowledge API: POST /retrieval, so Dify can use our vector stores.

Request ``{knowledge_id, query, retrieval_setting{top_k, score_threshold},
metadata_condition?}``; answer ``{records: [{content, score, title, metadata}]}``. Errors
use Dify's shape ``{error_code, error_msg}``: 1001/1002 for auth (in the middleware),
2001 when the knowledge does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request, Response, post
from litestar.datastructures import State

from engines.errors import APIError, NotFoundError
from gateway.state import ctx_of

_OPERATORS = frozenset(
    (
        "contains",
        "not contains",
        "start with",
        "end with",
        "is",
        "is not",
        "empty",
        "not empty",
        "=",
        "≠",
        ">",
        "<",
        "≥",
        "≤",
        "before",
        "after",
    )
)


def _error(status: int, code: int, msg: str) -> Response[Any]:
    return Response({"error_code": code, "error_msg": msg}, status_code=status)


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _condition(c: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    names = c.get("name")
    if isinstance(names, str):
        names = [names]
    op = c.get("comparison_operator")
    want = c.get("value")
    if not isinstance(names, list) or not names or not isinstance(op, str):
        raise ValueError("each condition needs 'name' and 'comparison_operator'")
    if op not in _OPERATORS:
        raise ValueError(f"unknown comparison_operator {op!r}")

    def test(value: Any) -> bool:
        sv, sw = _text(value), _text(want)
        if op == "contains":
            return sw in sv
        if op == "not contains":
            return sw not in sv
        if op == "start with":
            return sv.startswith(sw)
        if op == "end with":
            return sv.endswith(sw)
        if op in ("is", "="):
            return sv == sw if op == "is" else _number(value) == _number(want)
        if op in ("is not", "≠"):
            return sv != sw if op == "is not" else _number(value) != _number(want)
        if op == "empty":
            return value in (None, "")
        if op == "not empty":
            return value not in (None, "")
        if op in (">", "<", "≥", "≤", "after", "before"):
            a, b = (_number(value), _number(want))
            if a is None or b is None:  # dates and other strings compare as text
                a, b = sv, sw  # type: ignore[assignment]
            if op in (">", "after"):
                return bool(a > b)  # type: ignore[operator]
            if op in ("<", "before"):
                return bool(a < b)  # type: ignore[operator]
            return bool(a >= b) if op == "≥" else bool(a <= b)  # type: ignore[operator]
        return False

    return lambda attrs: (
        any(test(attrs.get(n)) for n in names if n in attrs)
        or (op in ("not contains", "is not", "≠", "empty") and not any(n in attrs for n in names))
    )


def _predicate(spec: Any) -> Callable[[dict[str, Any]], bool] | None:
    if not spec:
        return None
    if not isinstance(spec, dict):
        raise ValueError("metadata_condition must be an object")
    conditions = [_condition(c) for c in spec.get("conditions") or []]
    if not conditions:
        return None
    if (spec.get("logical_operator") or "and") == "or":
        return lambda attrs: any(c(attrs) for c in conditions)
    return lambda attrs: all(c(attrs) for c in conditions)


@post("/retrieval", status_code=200)
async def retrieval(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    try:
        body = await request.json()
    except Exception:
        return _error(400, 400, "the request body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, 400, "the request body must be an object")
    knowledge_id, query = body.get("knowledge_id"), body.get("query")
    setting = body.get("retrieval_setting") or {}
    if not isinstance(knowledge_id, str) or not isinstance(query, str) or not query.strip():
        return _error(400, 400, "knowledge_id and query are required strings")
    if not isinstance(setting, dict):
        return _error(400, 400, "retrieval_setting must be an object")
    top_k = setting.get("top_k", 5)
    threshold = setting.get("score_threshold", 0.0)
    if not isinstance(top_k, int) or not 1 <= top_k <= 50:
        return _error(400, 400, "retrieval_setting.top_k must be between 1 and 50")
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        return _error(400, 400, "retrieval_setting.score_threshold must be between 0 and 1")
    try:
        predicate = _predicate(body.get("metadata_condition"))
    except ValueError as exc:
        return _error(400, 400, str(exc))
    kb = ctx_of(state).kb
    try:
        cid = kb.collection_by_name(knowledge_id)["id"]
    except NotFoundError:
        return _error(404, 2001, "The knowledge does not exist")
    try:
        outcome = await kb.search(
            cid, query, top_k, score_threshold=float(threshold), predicate=predicate
        )
    except APIError as exc:
        return _error(exc.status_code, exc.status_code, exc.message)
    records = [
        {
            "content": r.text,
            "score": r.score,
            "title": r.filename,
            "metadata": {
                **r.attributes,
                "file_id": r.file_id,
                "chunk_id": r.chunk_id,
                "vector_store_id": cid,
                **({"page": r.page} if r.page is not None else {}),
            },
        }
        for r in outcome.results
    ]
    return Response({"records": records}, status_code=200)


routes = [retrieval]
