"""The Vector Stores API (OpenAI shapes) and its extras: URL ingestion, a file's chunks,
re-embedding jobs. ``{vs_id}`` is a store id or its unique name."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody

from core.errors import InvalidRequestError
from gateway.converters import (
    batch_object,
    chunk_object,
    expiry,
    job_object,
    list_page,
    page_request,
    search_page,
    status_filter,
    store_file_object,
    store_object,
    strategy,
)
from gateway.schemas.common import DeletedObject, ListPage
from gateway.schemas.vector_stores import (
    BatchObject,
    CreateBatchRequest,
    CreateStoreFileRequest,
    CreateVectorStoreRequest,
    IngestUrlRequest,
    JobObject,
    ReembedRequest,
    SearchPage,
    SearchRequest,
    UpdateStoreFileRequest,
    UpdateVectorStoreRequest,
    VectorStoreFileObject,
    VectorStoreObject,
    WebSearchRequest,
)
from gateway.services.knowledge import batch_items, search_query
from gateway.state import ctx_of, principal_of
from kb.types import IngestOptions

# The SDK's *_and_poll helpers wait this long between polls when the server says so.
POLL_HEADERS = {"openai-poll-after-ms": "100"}

Store = FromPath[str]
AnyRequest = Request[Any, Any, Any]


def _polled(content: Any) -> Response[Any]:
    return Response(content=content, headers=POLL_HEADERS, status_code=200)


@post("/v1/vector_stores", status_code=200)
async def create_store(
    request: AnyRequest, state: State, data: JSONBody[CreateVectorStoreRequest]
) -> VectorStoreObject:
    ctx = ctx_of(state)
    if len(data.file_ids) > ctx.settings.limits.max_batch_files:
        raise InvalidRequestError("too many file_ids (limits.max_batch_files)", param="file_ids")
    view = await ctx.kb.create_store(
        data.name,
        data.embedding_model,
        dict(data.metadata) if data.metadata else None,
        expires_after=expiry(data.expires_after),
        chunking_strategy=strategy(data.chunking_strategy),
        file_ids=data.file_ids,
        who=principal_of(request),
    )
    return store_object(view)


@get("/v1/vector_stores")
async def list_stores(
    request: AnyRequest,
    state: State,
    limit: FromQuery[int | None] = None,
    order: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
) -> ListPage:
    found = await ctx_of(state).kb.stores(
        page_request(limit, order, after, before), who=principal_of(request)
    )
    return list_page(found, store_object, lambda s: s.id)


@get("/v1/vector_stores/{vs_id:str}")
async def retrieve_store(request: AnyRequest, state: State, vs_id: Store) -> VectorStoreObject:
    return store_object(await ctx_of(state).kb.store(vs_id, who=principal_of(request)))


@post("/v1/vector_stores/{vs_id:str}", status_code=200)
async def update_store(
    request: AnyRequest, state: State, vs_id: Store, data: JSONBody[UpdateVectorStoreRequest]
) -> VectorStoreObject:
    fields: dict[str, Any] = {}
    if data.name is not msgspec.UNSET:
        fields["name"] = data.name
    if data.metadata is not msgspec.UNSET:
        fields["metadata"] = dict(data.metadata) if data.metadata else None
    if data.expires_after is not msgspec.UNSET:
        fields["expires_after"] = expiry(data.expires_after)
    return store_object(
        await ctx_of(state).kb.update_store(vs_id, **fields, who=principal_of(request))
    )


@delete("/v1/vector_stores/{vs_id:str}", status_code=200)
async def delete_store(request: AnyRequest, state: State, vs_id: Store) -> DeletedObject:
    cid = await ctx_of(state).kb.delete_store(vs_id, who=principal_of(request))
    return DeletedObject(id=cid, object="vector_store.deleted")


# -- files in a store -------------------------------------------------------------------


@post("/v1/vector_stores/{vs_id:str}/files", status_code=200)
async def create_store_file(
    request: AnyRequest, state: State, vs_id: Store, data: JSONBody[CreateStoreFileRequest]
) -> Response[VectorStoreFileObject]:
    sf = await ctx_of(state).kb.attach(
        vs_id,
        data.file_id,
        attributes=dict(data.attributes) if data.attributes is not None else None,
        chunking_strategy=strategy(data.chunking_strategy),
        options=IngestOptions(password=data.password, ocr_languages=data.ocr_languages),
        who=principal_of(request),
    )
    return _polled(store_file_object(sf))


@get("/v1/vector_stores/{vs_id:str}/files")
async def list_store_files(
    request: AnyRequest,
    state: State,
    vs_id: Store,
    limit: FromQuery[int | None] = None,
    order: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
    filter: FromQuery[str | None] = None,
) -> ListPage:
    page, status = page_request(limit, order, after, before), status_filter(filter)
    found = await ctx_of(state).kb.store_files(
        vs_id, page, status=status, who=principal_of(request)
    )
    return list_page(found, store_file_object, lambda f: f.id)


@get("/v1/vector_stores/{vs_id:str}/files/{file_id:str}")
async def retrieve_store_file(
    request: AnyRequest, state: State, vs_id: Store, file_id: FromPath[str]
) -> Response[VectorStoreFileObject]:
    return _polled(
        store_file_object(
            await ctx_of(state).kb.store_file(vs_id, file_id, who=principal_of(request))
        )
    )


@post("/v1/vector_stores/{vs_id:str}/files/{file_id:str}", status_code=200)
async def update_store_file(
    request: AnyRequest,
    state: State,
    vs_id: Store,
    file_id: FromPath[str],
    data: JSONBody[UpdateStoreFileRequest],
) -> VectorStoreFileObject:
    sf = await ctx_of(state).kb.update_attributes(
        vs_id, file_id, dict(data.attributes), who=principal_of(request)
    )
    return store_file_object(sf)


@delete("/v1/vector_stores/{vs_id:str}/files/{file_id:str}", status_code=200)
async def delete_store_file(
    request: AnyRequest, state: State, vs_id: Store, file_id: FromPath[str]
) -> DeletedObject:
    await ctx_of(state).kb.detach(vs_id, file_id, who=principal_of(request))
    return DeletedObject(id=file_id, object="vector_store.file.deleted")


@get("/v1/vector_stores/{vs_id:str}/files/{file_id:str}/content")
async def store_file_content(
    request: AnyRequest, state: State, vs_id: Store, file_id: FromPath[str]
) -> dict[str, Any]:
    chunks = await ctx_of(state).kb.file_chunks(
        vs_id, file_id, limit=100_000, who=principal_of(request)
    )
    return {
        "object": "vector_store.file_content.page",
        "data": [{"type": "text", "text": c.text} for c in chunks],
        "has_more": False,
        "next_page": None,
    }


@get("/v1/vector_stores/{vs_id:str}/files/{file_id:str}/chunks")
async def list_file_chunks(
    request: AnyRequest,
    state: State,
    vs_id: Store,
    file_id: FromPath[str],
    limit: FromQuery[int] = 100,
    after: FromQuery[int | None] = None,
) -> dict[str, Any]:
    """Extra: a file's chunks in reading order, paged by position (``after`` = position)."""
    if not 1 <= limit <= 1000:
        raise InvalidRequestError("'limit' must be between 1 and 1000", param="limit")
    start = -1 if after is None else after
    rows = await ctx_of(state).kb.file_chunks(
        vs_id, file_id, after=start, limit=limit + 1, who=principal_of(request)
    )
    data = [msgspec.to_builtins(chunk_object(r)) for r in rows[:limit]]
    more = len(rows) > limit
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
        "next_after": data[-1]["position"] if data and more else None,
    }


# -- batches ----------------------------------------------------------------------------


@post("/v1/vector_stores/{vs_id:str}/file_batches", status_code=200)
async def create_batch(
    request: AnyRequest, state: State, vs_id: Store, data: JSONBody[CreateBatchRequest]
) -> Response[BatchObject]:
    ctx = ctx_of(state)
    items = batch_items(data, ctx.settings.limits)
    batch = await ctx.kb.create_batch(
        vs_id, items, strategy(data.chunking_strategy), who=principal_of(request)
    )
    return _polled(batch_object(batch))


@get("/v1/vector_stores/{vs_id:str}/file_batches/{batch_id:str}")
async def retrieve_batch(
    request: AnyRequest, state: State, vs_id: Store, batch_id: FromPath[str]
) -> Response[BatchObject]:
    return _polled(
        batch_object(await ctx_of(state).kb.batch(vs_id, batch_id, who=principal_of(request)))
    )


@post("/v1/vector_stores/{vs_id:str}/file_batches/{batch_id:str}/cancel", status_code=200)
async def cancel_batch(
    request: AnyRequest, state: State, vs_id: Store, batch_id: FromPath[str]
) -> BatchObject:
    return batch_object(
        await ctx_of(state).kb.cancel_batch(vs_id, batch_id, who=principal_of(request))
    )


@get("/v1/vector_stores/{vs_id:str}/file_batches/{batch_id:str}/files")
async def list_batch_files(
    request: AnyRequest,
    state: State,
    vs_id: Store,
    batch_id: FromPath[str],
    limit: FromQuery[int | None] = None,
    order: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
    filter: FromQuery[str | None] = None,
) -> ListPage:
    page, status = page_request(limit, order, after, before), status_filter(filter)
    found = await ctx_of(state).kb.store_files(
        vs_id, page, status=status, batch_id=batch_id, who=principal_of(request)
    )
    return list_page(found, store_file_object, lambda f: f.id)


# -- search and extras ------------------------------------------------------------------


@post("/v1/vector_stores/{vs_id:str}/search", status_code=200)
async def search_store(
    request: AnyRequest, state: State, vs_id: Store, data: JSONBody[SearchRequest]
) -> SearchPage:
    ctx = ctx_of(state)
    outcome = await ctx.kb.search(
        vs_id, search_query(data, ctx.settings.limits), who=principal_of(request)
    )
    return search_page(outcome)


@post("/v1/vector_stores/{vs_id:str}/urls", status_code=200)
async def ingest_url(
    request: AnyRequest, state: State, vs_id: Store, data: JSONBody[IngestUrlRequest]
) -> Response[VectorStoreFileObject]:
    attrs = dict(data.attributes) if data.attributes is not None else None
    return _polled(
        store_file_object(
            await ctx_of(state).kb.ingest_url(
                vs_id, data.url, attributes=attrs, who=principal_of(request)
            )
        )
    )


@post("/v1/vector_stores/{vs_id:str}/reembed", status_code=200)
async def reembed_store(
    request: AnyRequest, state: State, vs_id: Store, data: JSONBody[ReembedRequest]
) -> JobObject:
    ctx = ctx_of(state)
    ctx.registry.resolve(data.model, "embedding")
    return job_object(await ctx.kb.reembed(vs_id, data.model, who=principal_of(request)))


@post("/v1/vector_stores/{vs_id:str}/web_search", status_code=200)
async def web_search(
    request: AnyRequest, state: State, vs_id: Store, data: JSONBody[WebSearchRequest]
) -> JobObject:
    attrs = dict(data.attributes) if data.attributes is not None else None
    kb = ctx_of(state).kb
    job = await kb.web_search(
        vs_id, data.query, max_results=data.max_results, attributes=attrs, who=principal_of(request)
    )
    return job_object(job)


@get("/v1/vector_stores/{vs_id:str}/jobs/{job_id:str}")
async def retrieve_job(
    request: AnyRequest, state: State, vs_id: Store, job_id: FromPath[str]
) -> JobObject:
    return job_object(await ctx_of(state).kb.job(vs_id, job_id, who=principal_of(request)))


@get("/v1/vector_stores/{vs_id:str}/jobs")
async def list_jobs(request: AnyRequest, state: State, vs_id: Store) -> dict[str, Any]:
    """The store's jobs (re-embeds, web searches), newest first."""
    jobs = await ctx_of(state).kb.jobs(vs_id, who=principal_of(request))
    data = [job_object(j) for j in sorted(jobs, key=lambda j: -j.created_at)]
    return {"object": "list", "data": data}


routes = [
    list_jobs,
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
    web_search,
    retrieve_job,
]
