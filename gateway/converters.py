"""Converters at the edge: knowledge-base read models -> wire objects, wire requests ->
the façade's typed arguments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import msgspec

from core.errors import InvalidRequestError
from gateway.schemas.common import ListPage
from gateway.schemas.files import FileObject
from gateway.schemas.vector_stores import (
    BatchObject,
    ChunkingStrategySpec,
    ChunkObject,
    ContentPart,
    ExpiresAfter,
    FileCountsObject,
    JobObject,
    LastErrorObject,
    SearchPage,
    SearchResultObject,
    StaticChunkingStrategy,
    VectorStoreFileObject,
    VectorStoreObject,
)
from kb.chunking import ChunkingStrategy
from kb.rows import strategy_json
from kb.types import (
    FILE_STATUSES,
    Batch,
    ChunkView,
    Expiry,
    FileCounts,
    FileRecord,
    FileStatus,
    Job,
    Page,
    PageRequest,
    SearchOutcome,
    StoreFile,
    StoreView,
)

__all__ = [
    "batch_object",
    "chunk_object",
    "expiry",
    "file_object",
    "job_object",
    "list_page",
    "page_request",
    "search_page",
    "status_filter",
    "store_file_object",
    "store_object",
    "strategy",
]

T = TypeVar("T")


def page_request(
    limit: int | None, order: str | None, after: str | None, before: str | None, default: int = 20
) -> PageRequest:
    limit = default if limit is None else limit
    if not 1 <= limit <= 100:
        raise InvalidRequestError("'limit' must be between 1 and 100", param="limit")
    if order not in (None, "asc", "desc"):
        raise InvalidRequestError("'order' must be 'asc' or 'desc'", param="order")
    direction: Literal["asc", "desc"] = "asc" if order == "asc" else "desc"
    return PageRequest(limit, direction, after or None, before or None)


def status_filter(value: str | None) -> FileStatus | None:
    if value is None:
        return None
    for status in FILE_STATUSES:
        if value == status:
            return status
    raise InvalidRequestError(
        "'filter' must be in_progress, completed, failed or cancelled", param="filter"
    )


def list_page(page: Page[T], render: Callable[[T], Any], key: Callable[[Any], str]) -> ListPage:
    data = [render(x) for x in page.data]
    return ListPage(
        data=data,
        first_id=key(data[0]) if data else None,
        last_id=key(data[-1]) if data else None,
        has_more=page.has_more,
    )


def strategy(spec: ChunkingStrategySpec | None) -> ChunkingStrategy | None:
    """A request's chunking strategy (None: auto, i.e. the store's or the model's default)."""
    if not isinstance(spec, StaticChunkingStrategy):
        return None
    try:
        return ChunkingStrategy(spec.static.max_chunk_size_tokens, spec.static.chunk_overlap_tokens)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="chunking_strategy") from None


def expiry(spec: ExpiresAfter | None) -> Expiry | None:
    return Expiry(spec.anchor, spec.days) if spec is not None else None


def _counts(c: FileCounts) -> FileCountsObject:
    return FileCountsObject(c.in_progress, c.completed, c.failed, c.cancelled, c.total)


def store_object(view: StoreView) -> VectorStoreObject:
    col = view.collection
    exp = col.expires_after
    return VectorStoreObject(
        id=col.id,
        created_at=col.created_at,
        name=col.name or "",
        usage_bytes=view.stats.usage_bytes,
        file_counts=_counts(view.stats.file_counts),
        status=view.status,
        metadata=col.metadata,
        expires_after=ExpiresAfter(exp.anchor, exp.days) if exp else msgspec.UNSET,
        expires_at=col.expires_at,
        last_active_at=col.last_active_at,
        embedding_model=col.embedding_model,
        dimensions=col.dimensions,
        chunk_count=view.stats.chunk_count,
        backend=view.backend,
    )


def file_object(f: FileRecord) -> FileObject:
    return FileObject(
        id=f.id, bytes=f.bytes, created_at=f.created_at, filename=f.filename, purpose=f.purpose
    )


def store_file_object(sf: StoreFile) -> VectorStoreFileObject:
    err = sf.last_error
    return VectorStoreFileObject(
        id=sf.file_id,
        created_at=sf.created_at,
        vector_store_id=sf.collection_id,
        status=sf.status,
        last_error=LastErrorObject(err.code, err.message) if err else None,
        usage_bytes=sf.usage_bytes,
        chunking_strategy=strategy_json(sf.chunking_strategy),
        attributes=dict(sf.attributes),
        filename=sf.filename if sf.filename is not None else msgspec.UNSET,
        bytes=sf.bytes if sf.bytes is not None else msgspec.UNSET,
        chunk_count=sf.chunk_count if sf.chunk_count is not None else msgspec.UNSET,
        warnings=list(sf.warnings) if sf.warnings else msgspec.UNSET,
    )


def batch_object(b: Batch) -> BatchObject:
    return BatchObject(
        id=b.id,
        created_at=b.created_at,
        vector_store_id=b.collection_id,
        status=b.status,
        file_counts=_counts(b.file_counts),
    )


def job_object(job: Job) -> JobObject:
    out = JobObject(
        id=job.id,
        kind=job.kind,
        vector_store_id=job.collection_id,
        status=job.status,
        progress=job.progress,
        total=job.total,
        error=job.error,
        created_at=job.created_at,
    )
    if job.kind == "web_search":
        p = job.params
        out.details = {k: p.get(k) for k in ("query", "max_results", "files", "failed")}
    return out


def chunk_object(c: ChunkView) -> ChunkObject:
    return ChunkObject(
        id=c.id,
        position=c.position,
        text=c.text,
        token_count=c.token_count,
        page=c.page,
        sheet=c.sheet,
        row=c.row,
        heading=c.heading,
    )


def search_page(outcome: SearchOutcome, *, explain: bool = True) -> SearchPage:
    data = [
        SearchResultObject(
            file_id=h.file_id,
            filename=h.filename,
            score=h.score,
            attributes=dict(h.attributes),
            content=[ContentPart(text=h.text)],
            chunk_id=h.chunk_id,
            page=h.page,
            sheet=h.sheet,
            row=h.row,
            heading=h.heading,
            scores={
                "dense": h.dense_score,
                "keyword": h.keyword_score,
                "sparse": h.sparse_score,
                "fused": h.fused_score,
                "rerank": h.rerank_score,
            }
            if explain
            else msgspec.UNSET,
        )
        for h in outcome.hits
    ]
    return SearchPage(search_query=list(outcome.queries), data=data)


def strings(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)
