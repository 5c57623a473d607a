"""Dify's external knowledge API over our vector stores: its request parsed into a search
query, its metadata conditions into the knowledge base's filter tree, its error codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import APIError, NotFoundError
from core.tenancy import LOCAL_ADMIN, Principal
from kb.filters import Compare, Compound, Filter, scalar_problem
from kb.retrieval import SearchQuery
from kb.service import KnowledgeBase
from kb.types import SearchOutcome

__all__ = ["DifyError", "DifyRequest", "parse_request", "records", "retrieve"]

# Dify operator -> filter operator.
_OPERATORS: dict[str, str] = {
    "contains": "contains",
    "not contains": "not_contains",
    "start with": "starts_with",
    "end with": "ends_with",
    "is": "text_eq",
    "is not": "text_ne",
    "empty": "empty",
    "not empty": "not_empty",
    "=": "num_eq",
    "≠": "num_ne",
    ">": "loose_gt",
    "<": "loose_lt",
    "≥": "loose_gte",
    "≤": "loose_lte",
    "after": "loose_gt",
    "before": "loose_lt",
}


class DifyError(Exception):
    """An error in Dify's own shape: ``{error_code, error_msg}``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class DifyRequest:
    knowledge_id: str
    query: str
    top_k: int
    score_threshold: float
    filter: Filter | None


def _bad(message: str) -> DifyError:
    return DifyError(400, 400, message)


def _condition(c: object) -> Filter:
    if not isinstance(c, dict):
        raise _bad("each condition must be an object")
    names = c.get("name")
    names = [names] if isinstance(names, str) else names
    op = c.get("comparison_operator")
    if not isinstance(names, list) or not names or not isinstance(op, str):
        raise _bad("each condition needs 'name' and 'comparison_operator'")
    if op not in _OPERATORS:
        raise _bad(f"unknown comparison_operator {op!r}")
    value = c.get("value")
    want = value if isinstance(value, str | int | float | bool) or value is None else str(value)
    for part in (*names, want):
        if (problem := scalar_problem(part)) is not None:
            raise _bad(f"a metadata condition {problem}")
    parts = tuple(Compare(_OPERATORS[op], str(n), want) for n in names)  # type: ignore[arg-type]
    return parts[0] if len(parts) == 1 else Compound("or", parts)


def _filter(spec: object, max_conditions: int) -> Filter | None:
    if not spec:
        return None
    if not isinstance(spec, dict):
        raise _bad("metadata_condition must be an object")
    raw = spec.get("conditions") or []
    if not isinstance(raw, list) or len(raw) > max_conditions:
        raise _bad(f"metadata_condition.conditions must be a list of at most {max_conditions}")
    conditions = tuple(_condition(c) for c in raw)
    if not conditions:
        return None
    if (spec.get("logical_operator") or "and") == "or":
        return Compound("or", conditions)
    return Compound("and", conditions)


def parse_request(body: Any, max_conditions: int) -> DifyRequest:
    if not isinstance(body, dict):
        raise _bad("the request body must be an object")
    knowledge_id, query = body.get("knowledge_id"), body.get("query")
    setting = body.get("retrieval_setting") or {}
    if not isinstance(knowledge_id, str) or not isinstance(query, str) or not query.strip():
        raise _bad("knowledge_id and query are required strings")
    for field, text in (("knowledge_id", knowledge_id), ("query", query)):
        if (problem := scalar_problem(text)) is not None:
            raise _bad(f"{field} {problem}")
    if not isinstance(setting, dict):
        raise _bad("retrieval_setting must be an object")
    top_k, threshold = setting.get("top_k", 5), setting.get("score_threshold", 0.0)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 50:
        raise _bad("retrieval_setting.top_k must be between 1 and 50")
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise _bad("retrieval_setting.score_threshold must be between 0 and 1")
    flt = _filter(body.get("metadata_condition"), max_conditions)
    return DifyRequest(knowledge_id, query, top_k, float(threshold), flt)


async def retrieve(
    kb: KnowledgeBase, req: DifyRequest, who: Principal = LOCAL_ADMIN
) -> tuple[str, SearchOutcome]:
    """Search the knowledge (a store ``who`` sees; another project's is missing)."""
    try:
        col = await kb.collection(req.knowledge_id, who=who)
    except NotFoundError:
        raise DifyError(404, 2001, "The knowledge does not exist") from None
    query = SearchQuery(
        (req.query,), req.top_k, filter=req.filter, score_threshold=req.score_threshold
    )
    try:
        return col.id, await kb.search(col.id, query, who=who)
    except APIError as exc:
        raise DifyError(exc.status_code, exc.status_code, exc.message) from None


def records(cid: str, outcome: SearchOutcome) -> list[dict[str, Any]]:
    return [
        {
            "content": h.text,
            "score": h.score,
            "title": h.filename,
            "metadata": {
                **h.attributes,
                "file_id": h.file_id,
                "chunk_id": h.chunk_id,
                "vector_store_id": cid,
                **({"page": h.page} if h.page is not None else {}),
            },
        }
        for h in outcome.hits
    ]
