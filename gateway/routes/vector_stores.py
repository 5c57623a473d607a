"""The Vector Stores API (OpenAI shapes) and its extras: URL ingestion, a file's chunks,
re-embedding jobs."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
from litestar import Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody

from engines.errors import InvalidRequestError
from gateway.routes.paging import page
from gateway.schemas_kb import (
    BatchObject,
    ChunkObject,
    ContentPart,
    CreateBatchRequest,
    CreateStoreFileRequest,
    CreateVectorStoreRequest,
    DeletedObject,
    ExpiresAfter,
    FileCounts,
    IngestUrlRequest,
    JobObject,
    LastError,
    ReembedRequest,
    SearchPage,
    SearchRequest,
    SearchResultObject,
    UpdateStoreFileRequest,
    UpdateVectorStoreRequest,
    VectorStoreFileObject,
    VectorStoreObject,
)
from gateway.state import ctx_of
from kb.service import KnowledgeBase

# The SDK's *_and_poll helpers wait this long between polls when the server says so.
POLL_HEADERS = {"openai-poll-after-ms": "100"}


def store_object(kb: KnowledgeBase, col: dict[str, Any]) -> VectorStoreObject:
    cid = col["id"]
    counts = kb.store.file_counts(cid)
    expires = json.loads(col["expires_after"]) if col.get("expires_after") else None
    last_active = col.get("last_active_at")
    expires_at = (
        int(last_active) + int(expires["days"]) * 86400 if expires and last_active else None
    )
    if expires_at is not None and time.time() > expires_at:
        status = "expired"
    elif counts["in_progress"]:
        status = "in_progress"
    else:
        status = "completed"
    return VectorStoreObject(
        id=cid,
        created_at=int(col["created_at"]),
        name=col["name"],
        usage_bytes=kb.store.usage_bytes(cid),
        file_counts=FileCounts(**counts),
        status=status,
        metadata=json.loads(col["metadata"] or "{}"),
        expires_after=ExpiresAfter(**expires) if expires else None,
        expires_at=expires_at,
        last_active_at=last_active,
        embedding_model=col["embedding_model"],
        dimensions=int(col["dimensions"]),
        chunk_count=kb.store.count(cid),
    )


def store_file_object(row: dict[str, Any]) -> VectorStoreFileObject:
    err = row.get("last_error")
    return VectorStoreFileObject(
        id=row["file_id"],
        created_at=int(row["created_at"]),
        vector_store_id=row["collection_id"],
        status=row["status"],
        last_error=LastError(**err) if err else None,
        usage_bytes=int(row["usage_bytes"]),
        chunking_strategy=row["chunking_strategy"],
        attributes=row["attributes"],
    )


def batch_object(kb: KnowledgeBase, row: dict[str, Any]) -> BatchObject:
    return BatchObject(
        id=row["id"],
        created_at=int(row["created_at"]),
        vector_store_id=row["collection_id"],
        status=row["status"],
        file_counts=FileCounts(**kb.store.file_counts(row["collection_id"], row["id"])),
    )


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in metadata.items()):
        raise InvalidRequestError(
            "metadata holds at most 16 pairs, keys <= 64 and values <= 512 characters",
            param="metadata",
        )


def _polled(content: Any) -> Response[Any]:
    return Response(content=content, headers=POLL_HEADERS, status_code=200)


@post("/v1/vector_stores", status_code=200)
async def create_store(state: State, data: JSONBody[CreateVectorStoreRequest]) -> VectorStoreObject:
    kb = ctx_of(state).kb
    _check_metadata(data.metadata)
    for fid in data.file_ids:
        kb.file(fid)
    cid = kb.create_collection(
        data.name,
        data.embedding_model,
        data.metadata,
        expires_after=msgspec.to_builtins(data.expires_after) if data.expires_after else None,
        chunking_strategy=data.chunking_strategy,
    )
    for fid in data.file_ids:
        kb.attach(cid, fid, chunking_strategy=data.chunking_strategy)
    return store_object(kb, kb.collection(cid))


@get("/v1/vector_stores", sync_to_thread=False)
def list_stores(
    state: State,
    limit: FromQuery[int | None] = None,
    order: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
) -> dict[str, Any]:
    kb = ctx_of(state).kb
    return page(
        kb.collections(),
        key=lambda c: c["id"],
        limit=limit,
        order=order,
        after=after,
        before=before,
        render=lambda c: store_object(kb, c),
    )


@get("/v1/vector_stores/{vs_id:str}", sync_to_thread=False)
def retrieve_store(state: State, vs_id: FromPath[str]) -> VectorStoreObject:
    kb = ctx_of(state).kb
    return store_object(kb, kb.collection(vs_id))


@post("/v1/vector_stores/{vs_id:str}", status_code=200)
async def update_store(
    state: State, vs_id: FromPath[str], data: JSONBody[UpdateVectorStoreRequest]
) -> VectorStoreObject:
    kb = ctx_of(state).kb
    kb.collection(vs_id)
    fields: dict[str, Any] = {}
    if data.name is not msgspec.UNSET:
        fields["name"] = data.name
    if data.metadata is not msgspec.UNSET:
        _check_metadata(data.metadata)
        fields["metadata"] = json.dumps(data.metadata or {})
    if data.expires_after is not msgspec.UNSET:
        fields["expires_after"] = (
            json.dumps(msgspec.to_builtins(data.expires_after)) if data.expires_after else None
        )
        fields["last_active_at"] = int(time.time())
    kb.store.update_collection(vs_id, **fields)
    return store_object(kb, kb.collection(vs_id))


@delete("/v1/vector_stores/{vs_id:str}", status_code=200)
async def delete_store(state: State, vs_id: FromPath[str]) -> DeletedObject:
    ctx_of(state).kb.delete_collection(vs_id)
    return DeletedObject(id=vs_id, object="vector_store.deleted")


# -- files in a store -------------------------------------------------------------------


@post("/v1/vector_stores/{vs_id:str}/files", status_code=200)
async def create_store_file(
    state: State, vs_id: FromPath[str], data: JSONBody[CreateStoreFileRequest]
) -> Response[VectorStoreFileObject]:
    kb = ctx_of(state).kb
    row = kb.attach(
        vs_id,
        data.file_id,
        attributes=data.attributes,
        chunking_strategy=data.chunking_strategy,
        options={"password": data.password} if data.password else None,
    )
    return _polled(store_file_object(row))


@get("/v1/vector_stores/{vs_id:str}/files", sync_to_thread=False)
def list_store_files(
    state: State,
    vs_id: FromPath[str],
    limit: FromQuery[int | None] = None,
    order: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
    filter: FromQuery[str | None] = None,
) -> dict[str, Any]:
    kb = ctx_of(state).kb
    kb.collection(vs_id)
    return _files_page(kb, vs_id, None, limit, order, after, before, filter)


def _files_page(
    kb: KnowledgeBase,
    vs_id: str,
    batch_id: str | None,
    limit: int | None,
    order: str | None,
    after: str | None,
    before: str | None,
    status: str | None,
) -> dict[str, Any]:
    """A page of a store's (or a batch's) files, optionally of one status."""
    if status is not None and status not in ("in_progress", "completed", "failed", "cancelled"):
        raise InvalidRequestError(
            "'filter' must be in_progress, completed, failed or cancelled", param="filter"
        )
    return page(
        kb.store.store_files(vs_id, status=status, batch_id=batch_id),
        key=lambda r: r["file_id"],
        limit=limit,
        order=order,
        after=after,
        before=before,
        render=store_file_object,
    )


@get("/v1/vector_stores/{vs_id:str}/files/{file_id:str}", sync_to_thread=False)
def retrieve_store_file(
    state: State, vs_id: FromPath[str], file_id: FromPath[str]
) -> Response[VectorStoreFileObject]:
    return _polled(store_file_object(ctx_of(state).kb.store_file(vs_id, file_id)))


@post("/v1/vector_stores/{vs_id:str}/files/{file_id:str}", status_code=200)
async def update_store_file(
    state: State,
    vs_id: FromPath[str],
    file_id: FromPath[str],
    data: JSONBody[UpdateStoreFileRequest],
) -> VectorStoreFileObject:
    kb = ctx_of(state).kb
    kb.update_attributes(vs_id, file_id, data.attributes)
    return store_file_object(kb.store_file(vs_id, file_id))


@delete("/v1/vector_stores/{vs_id:str}/files/{file_id:str}", status_code=200)
async def delete_store_file(
    state: State, vs_id: FromPath[str], file_id: FromPath[str]
) -> DeletedObject:
    await ctx_of(state).kb.detach(vs_id, file_id)
    return DeletedObject(id=file_id, object="vector_store.file.deleted")


@get("/v1/vector_stores/{vs_id:str}/files/{file_id:str}/content", sync_to_thread=False)
def store_file_content(
    state: State, vs_id: FromPath[str], file_id: FromPath[str]
) -> dict[str, Any]:
    kb = ctx_of(state).kb
    chunks = kb.file_chunks(vs_id, file_id, limit=100_000)
    return {
        "object": "vector_store.file_content.page",
        "data": [{"type": "text", "text": c["text"]} for c in chunks],
        "has_more": False,
        "next_page": None,
    }


@get("/v1/vector_stores/{vs_id:str}/files/{file_id:str}/chunks", sync_to_thread=False)
def list_file_chunks(
    state: State,
    vs_id: FromPath[str],
    file_id: FromPath[str],
    limit: FromQuery[int] = 100,
    after: FromQuery[int | None] = None,
) -> dict[str, Any]:
    """Extra: a file's chunks in reading order, paged by position (``after`` = position)."""
    if not 1 <= limit <= 1000:
        raise InvalidRequestError("'limit' must be between 1 and 1000", param="limit")
    kb = ctx_of(state).kb
    rows = kb.file_chunks(vs_id, file_id, after=-1 if after is None else after, limit=limit + 1)
    data = [msgspec.to_builtins(ChunkObject(**r)) for r in rows[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(rows) > limit,
        "next_after": data[-1]["position"] if data and len(rows) > limit else None,
    }


# -- batches ----------------------------------------------------------------------------


@post("/v1/vector_stores/{vs_id:str}/file_batches", status_code=200)
async def create_batch(
    state: State, vs_id: FromPath[str], data: JSONBody[CreateBatchRequest]
) -> Response[BatchObject]:
    kb = ctx_of(state).kb
    if bool(data.file_ids) == bool(data.files):
        raise InvalidRequestError("give either 'file_ids' or 'files'", param="file_ids")
    files = (
        [{"file_id": f, "attributes": data.attributes} for f in data.file_ids or []]
        if data.file_ids
        else [msgspec.to_builtins(f) for f in data.files or []]
    )
    batch_id = kb.create_batch(vs_id, files, data.chunking_strategy)
    return _polled(batch_object(kb, kb.batch(vs_id, batch_id)))


@get("/v1/vector_stores/{vs_id:str}/file_batches/{batch_id:str}", sync_to_thread=False)
def retrieve_batch(
    state: State, vs_id: FromPath[str], batch_id: FromPath[str]
) -> Response[BatchObject]:
    kb = ctx_of(state).kb
    return _polled(batch_object(kb, kb.batch(vs_id, batch_id)))


@post("/v1/vector_stores/{vs_id:str}/file_batches/{batch_id:str}/cancel", status_code=200)
async def cancel_batch(state: State, vs_id: FromPath[str], batch_id: FromPath[str]) -> BatchObject:
    kb = ctx_of(state).kb
    await kb.cancel_batch(vs_id, batch_id)
    return batch_object(kb, kb.batch(vs_id, batch_id))


@get("/v1/vector_stores/{vs_id:str}/file_batches/{batch_id:str}/files", sync_to_thread=False)
def list_batch_files(
    state: State,
    vs_id: FromPath[str],
    batch_id: FromPath[str],
    limit: FromQuery[int | None] = None,
    order: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
    filter: FromQuery[str | None] = None,
) -> dict[str, Any]:
    kb = ctx_of(state).kb
    kb.batch(vs_id, batch_id)
    return _files_page(kb, vs_id, batch_id, limit, order, after, before, filter)


# -- search and extras ------------------------------------------------------------------


@post("/v1/vector_stores/{vs_id:str}/search", status_code=200)
async def search_store(
    state: State, vs_id: FromPath[str], data: JSONBody[SearchRequest]
) -> SearchPage:
    kb = ctx_of(state).kb
    if not 1 <= data.max_num_results <= 50:
        raise InvalidRequestError(
            "'max_num_results' must be between 1 and 50", param="max_num_results"
        )
    ranking = data.ranking_options
    rerank: bool | None = None
    threshold = 0.0
    weights: tuple[float, float] | None = None
    if ranking is not None:
        if ranking.ranker not in ("auto", "default-2024-11-15", "none"):
            raise InvalidRequestError(
                "ranking_options.ranker must be 'auto', 'default-2024-11-15' or 'none'",
                param="ranking_options.ranker",
            )
        rerank = False if ranking.ranker == "none" else None
        if not 0.0 <= ranking.score_threshold <= 1.0:
            raise InvalidRequestError(
                "ranking_options.score_threshold must be between 0 and 1",
                param="ranking_options.score_threshold",
            )
        threshold = ranking.score_threshold
        if ranking.hybrid_search:
            weights = (
                float(ranking.hybrid_search.get("embedding_weight", 1.0)),
                float(ranking.hybrid_search.get("text_weight", 1.0)),
            )
    outcome = await kb.search(
        vs_id,
        data.query,
        data.max_num_results,
        filters=data.filters,
        rerank=rerank,
        score_threshold=threshold,
        rewrite_query=data.rewrite_query,
        weights=weights,
        model=data.model,
    )
    return SearchPage(
        search_query=outcome.queries,
        data=[
            SearchResultObject(
                file_id=r.file_id,
                filename=r.filename,
                score=r.score,
                attributes=r.attributes,
                content=[ContentPart(text=r.text)],
                chunk_id=r.chunk_id,
                page=r.page,
                sheet=r.sheet,
                row=r.row,
            )
            for r in outcome.results
        ],
    )


@post("/v1/vector_stores/{vs_id:str}/urls", status_code=200)
async def ingest_url(
    state: State, vs_id: FromPath[str], data: JSONBody[IngestUrlRequest]
) -> Response[VectorStoreFileObject]:
    row = await ctx_of(state).kb.ingest_url(vs_id, data.url, attributes=data.attributes)
    return _polled(store_file_object(row))


def job_object(job: dict[str, Any]) -> JobObject:
    return JobObject(
        id=job["id"],
        kind=job["kind"],
        vector_store_id=job["collection_id"],
        status=job["status"],
        progress=int(job["progress"]),
        total=int(job["total"]),
        error=job["error"],
        created_at=int(job["created_at"]),
    )


@post("/v1/vector_stores/{vs_id:str}/reembed", status_code=200)
async def reembed_store(
    state: State, vs_id: FromPath[str], data: JSONBody[ReembedRequest]
) -> JobObject:
    ctx = ctx_of(state)
    ctx.registry.resolve(data.model, "embedding")
    return job_object(ctx.kb.reembed(vs_id, data.model))


@get("/v1/vector_stores/{vs_id:str}/jobs/{job_id:str}", sync_to_thread=False)
def retrieve_job(state: State, vs_id: FromPath[str], job_id: FromPath[str]) -> JobObject:
    return job_object(ctx_of(state).kb.job(vs_id, job_id))


routes = [
    create_store,
    list_stores,
    retrieve_store,
    update_store,
    delete_store,
    create_store_file,
    list_store_files,
    retrieve_store_file,
    update_store_file,
    delete_store_file,
    store_file_content,
    list_file_chunks,
    create_batch,
    retrieve_batch,
    cancel_batch,
    list_batch_files,
    search_store,
    ingest_url,
    reembed_store,
    retrieve_job,
]
