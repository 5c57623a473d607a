"""Typed read models of the knowledge base: what its façade returns to routes, MCP, the
CLI, metrics and RAG (never rows or dicts)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from core.tenancy import ADMIN_PROJECT
from kb.chunking import ChunkingStrategy

__all__ = [
    "FILE_STATUSES",
    "AttributeValue",
    "Attributes",
    "Batch",
    "ChunkRecord",
    "ChunkView",
    "Collection",
    "Expiry",
    "FileCounts",
    "FileRecord",
    "FileStatus",
    "IngestOptions",
    "Job",
    "JobStatus",
    "LastError",
    "Page",
    "PageRequest",
    "SearchHit",
    "SearchOutcome",
    "StoreFile",
    "StoreStats",
    "StoreView",
]

AttributeValue = str | int | float | bool
Attributes = dict[str, AttributeValue]
FileStatus = Literal["in_progress", "completed", "failed", "cancelled"]
FILE_STATUSES: tuple[FileStatus, ...] = ("in_progress", "completed", "failed", "cancelled")
JobStatus = Literal["in_progress", "completed", "failed", "cancelled"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Cursor paging as the OpenAI list endpoints do it (ids as cursors)."""

    limit: int = 20
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    data: Sequence[T]
    has_more: bool


@dataclass(frozen=True, slots=True)
class Expiry:
    """``expires_after``: the store expires ``days`` after it was last used."""

    anchor: Literal["last_active_at"]
    days: int


@dataclass(frozen=True, slots=True)
class Collection:
    """A vector store: a collection of chunks embedded with one model."""

    id: str
    name: str | None
    embedding_model: str
    dimensions: int
    metadata: dict[str, str]
    created_at: int
    expires_after: Expiry | None = None
    last_active_at: int | None = None
    chunking_strategy: ChunkingStrategy | None = None
    project: str = ADMIN_PROJECT  # the project that owns it (core.tenancy)

    @property
    def expires_at(self) -> int | None:
        if self.expires_after is None or self.last_active_at is None:
            return None
        return self.last_active_at + self.expires_after.days * 86400

    def expired(self, now: float | None = None) -> bool:
        at = self.expires_at
        return at is not None and (time.time() if now is None else now) > at


@dataclass(frozen=True, slots=True)
class FileCounts:
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.in_progress + self.completed + self.failed + self.cancelled


@dataclass(frozen=True, slots=True)
class StoreStats:
    file_counts: FileCounts
    usage_bytes: int
    chunk_count: int


@dataclass(frozen=True, slots=True)
class StoreView:
    """A store with its live figures and derived status."""

    collection: Collection
    stats: StoreStats
    backend: str = "sqlite"

    @property
    def id(self) -> str:
        return self.collection.id

    @property
    def status(self) -> Literal["expired", "in_progress", "completed"]:
        if self.collection.expired():
            return "expired"
        return "in_progress" if self.stats.file_counts.in_progress else "completed"


@dataclass(frozen=True, slots=True)
class FileRecord:
    """An uploaded file (the Files API object)."""

    id: str
    filename: str
    bytes: int
    purpose: str
    sha256: str
    created_at: int
    source_url: str | None = None
    project: str = ADMIN_PROJECT  # the project that owns it (core.tenancy)


@dataclass(frozen=True, slots=True)
class LastError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """How one file is read: a content type from its URL fetch, an encrypted PDF's password
    (kept only until the ingestion ends, never returned), an OCR language."""

    content_type: str | None = None
    password: str | None = None
    ocr_languages: str | None = None
    # A page still to fetch (``/urls`` runs as a job): the file's bytes come from it.
    fetch_url: str | None = None


@dataclass(frozen=True, slots=True)
class StoreFile:
    """A file in a store: its ingestion job and what it produced."""

    collection_id: str
    file_id: str
    status: FileStatus
    last_error: LastError | None
    attributes: Attributes
    chunking_strategy: ChunkingStrategy
    usage_bytes: int
    created_at: int
    updated_at: int
    batch_id: str | None = None
    options: IngestOptions = field(default_factory=IngestOptions)
    attempts: int = 0
    filename: str | None = None
    bytes: int | None = None
    chunk_count: int | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    collection_id: str
    status: JobStatus
    created_at: int
    file_counts: FileCounts = field(default_factory=FileCounts)


@dataclass(frozen=True, slots=True)
class Job:
    """A long-running store job (re-embedding, web-search ingestion)."""

    id: str
    kind: str
    collection_id: str
    status: JobStatus
    params: dict[str, object]
    progress: int
    total: int
    error: str | None
    created_at: int
    updated_at: int


@dataclass(slots=True)
class ChunkRecord:
    """A chunk about to be stored."""

    file_id: str
    position: int
    text: str
    token_count: int
    page: int | None = None
    sheet: str | None = None
    row: int | None = None
    heading: str | None = None


@dataclass(frozen=True, slots=True)
class ChunkView:
    id: int
    collection_id: str
    file_id: str
    position: int
    text: str
    token_count: int
    page: int | None = None
    sheet: str | None = None
    row: int | None = None
    heading: str | None = None


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One retrieved chunk. ``score`` is absolute and calibrated in [0, 1]: it depends only
    on the query and this chunk. The per-signal figures explain the ranking."""

    vector_store_id: str
    chunk_id: int
    file_id: str
    filename: str
    text: str
    score: float
    attributes: Attributes
    position: int
    page: int | None = None
    sheet: str | None = None
    row: int | None = None
    heading: str | None = None
    dense_rank: int | None = None
    keyword_rank: int | None = None
    dense_score: float | None = None
    keyword_score: float | None = None
    sparse_score: float | None = None
    fused_score: float | None = None
    rerank_score: float | None = None


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    queries: list[str]
    hits: list[SearchHit]
