"""Wire types of the Files and Vector Stores APIs (OpenAI shapes, plus a few extras)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "ChunkObject",
    "CreateBatchRequest",
    "CreateStoreFileRequest",
    "CreateVectorStoreRequest",
    "DeletedObject",
    "FileCounts",
    "FileObject",
    "IngestUrlRequest",
    "JobObject",
    "ReembedRequest",
    "SearchRequest",
    "UpdateStoreFileRequest",
    "UpdateVectorStoreRequest",
    "VectorStoreFileObject",
    "VectorStoreObject",
]


class FileObject(msgspec.Struct):
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    object: Literal["file"] = "file"
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class DeletedObject(msgspec.Struct):
    id: str
    object: str
    deleted: bool = True


class FileCounts(msgspec.Struct):
    in_progress: int
    completed: int
    failed: int
    cancelled: int
    total: int


class ExpiresAfter(msgspec.Struct):
    anchor: Literal["last_active_at"]
    days: int


class VectorStoreObject(msgspec.Struct):
    id: str
    created_at: int
    name: str | None
    usage_bytes: int
    file_counts: FileCounts
    status: str
    metadata: dict[str, str]
    expires_after: ExpiresAfter | None
    expires_at: int | None
    last_active_at: int | None
    embedding_model: str
    dimensions: int
    chunk_count: int
    object: Literal["vector_store"] = "vector_store"


class CreateVectorStoreRequest(msgspec.Struct, kw_only=True):
    name: str | None = None
    file_ids: list[str] = []
    chunking_strategy: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    expires_after: ExpiresAfter | None = None
    embedding_model: str | None = None


class UpdateVectorStoreRequest(msgspec.Struct, kw_only=True):
    name: str | msgspec.UnsetType | None = msgspec.UNSET
    metadata: dict[str, str] | msgspec.UnsetType | None = msgspec.UNSET
    expires_after: ExpiresAfter | msgspec.UnsetType | None = msgspec.UNSET


class LastError(msgspec.Struct):
    code: str
    message: str


class VectorStoreFileObject(msgspec.Struct):
    id: str
    created_at: int
    vector_store_id: str
    status: str
    last_error: LastError | None
    usage_bytes: int
    chunking_strategy: dict[str, Any]
    attributes: dict[str, Any]
    object: Literal["vector_store.file"] = "vector_store.file"


class CreateStoreFileRequest(msgspec.Struct, kw_only=True):
    file_id: str
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None
    # Extra: the password of an encrypted PDF (kept with the job, never returned).
    password: str | None = None


class UpdateStoreFileRequest(msgspec.Struct, kw_only=True):
    attributes: dict[str, Any]


class BatchFile(msgspec.Struct, kw_only=True):
    file_id: str
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


class CreateBatchRequest(msgspec.Struct, kw_only=True):
    file_ids: list[str] | None = None
    files: list[BatchFile] | None = None
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


class BatchObject(msgspec.Struct):
    id: str
    created_at: int
    vector_store_id: str
    status: str
    file_counts: FileCounts
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"


class RankingOptions(msgspec.Struct, kw_only=True):
    ranker: str = "auto"
    score_threshold: float = 0.0
    hybrid_search: dict[str, float] | None = None


class SearchRequest(msgspec.Struct, kw_only=True):
    query: str | list[str]
    filters: dict[str, Any] | None = None
    max_num_results: int = 10
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False
    # Extra: the embedding model the caller expects the store to use (400 if it differs).
    model: str | None = None


class ContentPart(msgspec.Struct):
    text: str
    type: Literal["text"] = "text"


class SearchResultObject(msgspec.Struct):
    file_id: str
    filename: str
    score: float
    attributes: dict[str, Any]
    content: list[ContentPart]
    chunk_id: int
    page: int | None = None
    sheet: str | None = None
    row: int | None = None


class SearchPage(msgspec.Struct):
    search_query: list[str]
    data: list[SearchResultObject]
    has_more: bool = False
    next_page: str | None = None
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"


class IngestUrlRequest(msgspec.Struct, kw_only=True):
    url: str
    attributes: dict[str, Any] | None = None


class ChunkObject(msgspec.Struct):
    id: int
    position: int
    text: str
    token_count: int
    page: int | None = None
    sheet: str | None = None
    row: int | None = None
    object: Literal["vector_store.file.chunk"] = "vector_store.file.chunk"


class ReembedRequest(msgspec.Struct, kw_only=True):
    model: str


class JobObject(msgspec.Struct):
    id: str
    kind: str
    vector_store_id: str
    status: str
    progress: int
    total: int
    error: str | None
    created_at: int
    object: Literal["vector_store.job"] = "vector_store.job"
