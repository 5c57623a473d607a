"""The Vector Stores API (OpenAI shapes) and its extras: URL and web-search ingestion, a
file's chunks, re-embedding jobs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from gateway.schemas.common import Attributes, Metadata, NonEmptyStr

__all__ = [
    "AutoChunking",
    "BatchFile",
    "BatchObject",
    "ChunkObject",
    "ChunkingStrategySpec",
    "ContentPart",
    "CreateBatchRequest",
    "CreateStoreFileRequest",
    "CreateVectorStoreRequest",
    "ExpiresAfter",
    "FileCountsObject",
    "IngestUrlRequest",
    "JobObject",
    "LastErrorObject",
    "RankingOptions",
    "ReembedRequest",
    "SearchPage",
    "SearchRequest",
    "SearchResultObject",
    "StaticChunking",
    "StaticChunkingStrategy",
    "UpdateStoreFileRequest",
    "UpdateVectorStoreRequest",
    "VectorStoreFileObject",
    "VectorStoreObject",
]

# Hard ceilings of the decoder; the configured caps are lower.
MAX_FILE_IDS = 10_000
MAX_QUERIES = 256


class AutoChunking(msgspec.Struct, tag="auto", tag_field="type"):
    pass


class StaticChunking(msgspec.Struct):
    max_chunk_size_tokens: Annotated[int, msgspec.Meta(ge=100, le=4096)] = 800
    chunk_overlap_tokens: Annotated[int, msgspec.Meta(ge=0, le=2048)] = 400


class StaticChunkingStrategy(msgspec.Struct, tag="static", tag_field="type"):
    static: StaticChunking


ChunkingStrategySpec = AutoChunking | StaticChunkingStrategy


class FileCountsObject(msgspec.Struct):
    in_progress: int
    completed: int
    failed: int
    cancelled: int
    total: int


class ExpiresAfter(msgspec.Struct):
    anchor: Literal["last_active_at"]
    days: Annotated[int, msgspec.Meta(ge=1, le=365)]


class VectorStoreObject(msgspec.Struct):
    id: str
    created_at: int
    name: str  # "" for a store made without a name (OpenAI's schema has no null here)
    usage_bytes: int
    file_counts: FileCountsObject
    status: str
    metadata: dict[str, str]
    expires_after: ExpiresAfter | msgspec.UnsetType  # absent when the store never expires
    expires_at: int | None
    last_active_at: int | None
    # Extras: how the store is embedded and held.
    embedding_model: str
    dimensions: int
    chunk_count: int
    backend: str = "sqlite"
    object: Literal["vector_store"] = "vector_store"


class CreateVectorStoreRequest(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    file_ids: Annotated[list[str], msgspec.Meta(max_length=MAX_FILE_IDS)] = []
    chunking_strategy: ChunkingStrategySpec | None = None
    metadata: Metadata | None = None
    expires_after: ExpiresAfter | None = None
    embedding_model: str | None = None


class UpdateVectorStoreRequest(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(max_length=256)] | msgspec.UnsetType | None = msgspec.UNSET
    metadata: Metadata | msgspec.UnsetType | None = msgspec.UNSET
    expires_after: ExpiresAfter | msgspec.UnsetType | None = msgspec.UNSET


class LastErrorObject(msgspec.Struct):
    code: str
    message: str


class VectorStoreFileObject(msgspec.Struct):
    id: str
    created_at: int
    vector_store_id: str
    status: str
    last_error: LastErrorObject | None
    usage_bytes: int
    chunking_strategy: dict[str, Any]
    attributes: dict[str, str | int | float | bool]
    # Extras shown by listings (and the console).
    filename: str | msgspec.UnsetType = msgspec.UNSET
    bytes: int | msgspec.UnsetType = msgspec.UNSET
    chunk_count: int | msgspec.UnsetType = msgspec.UNSET
    warnings: list[str] | msgspec.UnsetType = msgspec.UNSET
    object: Literal["vector_store.file"] = "vector_store.file"


class CreateStoreFileRequest(msgspec.Struct, kw_only=True):
    file_id: NonEmptyStr
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategySpec | None = None
    # Extra: the password of an encrypted PDF (kept until the ingestion ends, never returned).
    password: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    # Extra: Tesseract languages for pages without a text layer (e.g. "eng+chi_sim").
    ocr_languages: Annotated[str, msgspec.Meta(max_length=128, pattern=r"^[A-Za-z_+]+$")] | None = (
        None
    )


class UpdateStoreFileRequest(msgspec.Struct, kw_only=True):
    attributes: Attributes


class BatchFile(msgspec.Struct, kw_only=True):
    file_id: NonEmptyStr
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategySpec | None = None


class CreateBatchRequest(msgspec.Struct, kw_only=True):
    file_ids: Annotated[list[str], msgspec.Meta(max_length=MAX_FILE_IDS)] | None = None
    files: Annotated[list[BatchFile], msgspec.Meta(max_length=MAX_FILE_IDS)] | None = None
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategySpec | None = None


class BatchObject(msgspec.Struct):
    id: str
    created_at: int
    vector_store_id: str
    status: str
    file_counts: FileCountsObject
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"


class HybridWeights(msgspec.Struct, kw_only=True):
    embedding_weight: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    text_weight: Annotated[float, msgspec.Meta(ge=0)] = 1.0


class RankingOptions(msgspec.Struct, kw_only=True):
    ranker: Literal["auto", "default-2024-11-15", "none"] = "auto"
    score_threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    hybrid_search: HybridWeights | None = None


class SearchRequest(msgspec.Struct, kw_only=True):
    query: str | Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_QUERIES)]
    filters: dict[str, Any] | None = None
    max_num_results: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False
    # Extra: the embedding model the caller expects the store to use (400 if it differs).
    model: str | None = None
    # Extra: which signals to use (the console's playground compares them).
    mode: Literal["hybrid", "dense", "keyword", "sparse"] = "hybrid"


class ContentPart(msgspec.Struct):
    text: str
    type: Literal["text"] = "text"


class SearchResultObject(msgspec.Struct):
    file_id: str
    filename: str
    score: float
    attributes: dict[str, str | int | float | bool]
    content: list[ContentPart]
    # Extras: where the chunk sits and why it ranked there.
    chunk_id: int
    page: int | None = None
    sheet: str | None = None
    row: int | None = None
    heading: str | None = None
    scores: dict[str, float | None] | msgspec.UnsetType = msgspec.UNSET


class SearchPage(msgspec.Struct):
    search_query: list[str]
    data: list[SearchResultObject]
    has_more: bool = False
    next_page: str | None = None
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"


class IngestUrlRequest(msgspec.Struct, kw_only=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
    attributes: Attributes | None = None


class ChunkObject(msgspec.Struct):
    id: int
    position: int
    text: str
    token_count: int
    page: int | None = None
    sheet: str | None = None
    row: int | None = None
    heading: str | None = None
    object: Literal["vector_store.file.chunk"] = "vector_store.file.chunk"


class ReembedRequest(msgspec.Struct, kw_only=True):
    model: NonEmptyStr


class WebSearchRequest(msgspec.Struct, kw_only=True):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    max_results: Annotated[int, msgspec.Meta(ge=1)] | None = None
    attributes: Attributes | None = None


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
    # web_search jobs: the query, the files ingested, the results that failed.
    details: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
