"""The storage backend behind the knowledge base: relational store, vector index and
keyword index behind one synchronous interface (the façade calls it from worker threads).

Two implementations: ``sqlite`` (SQLite as truth, FAISS derived; the embedded default) and
``postgres`` (PostgreSQL + pgvector, shared by several gateway replicas).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from kb.filters import Filter
from kb.types import (
    Batch,
    ChunkRecord,
    ChunkView,
    Collection,
    FileCounts,
    FileRecord,
    FileStatus,
    Job,
    JobStatus,
    LastError,
    Page,
    PageRequest,
    StoreFile,
    StoreStats,
)

__all__ = ["CandidateQuery", "Candidates", "KnowledgeBackend", "SparseVector"]

SparseVector = dict[int, float]


@dataclass(frozen=True, slots=True)
class CandidateQuery:
    """One query as each retrieval signal reads it."""

    text: str
    vector: np.ndarray | None = None
    sparse: SparseVector | None = None


@dataclass(slots=True)
class Candidates:
    """Per-signal candidate lists of one query: (chunk id, raw score), best first."""

    dense: list[tuple[int, float]] = field(default_factory=list)
    keyword: list[tuple[int, float]] = field(default_factory=list)
    sparse: list[tuple[int, float]] = field(default_factory=list)


class KnowledgeBackend(Protocol):
    """Everything the knowledge base stores and searches."""

    name: str
    # True when several processes share the backend (jobs are claimed with leases and
    # other replicas' writes appear without notice).
    shared: bool

    def close(self) -> None: ...

    def startup(self) -> None:
        """Recover after a restart (stale leases, indexes against the truth)."""
        ...

    def flush(self) -> None:
        """Persist derived state (indexes)."""
        ...

    # -- files ----------------------------------------------------------------------------
    def upload_path(self, file_id: str) -> Path:
        """A local path an upload streams into before ``add_file``."""
        ...

    def add_file(self, record: FileRecord, source: Path) -> None: ...
    def replace_file(self, record: FileRecord, source: Path) -> None:
        """Give the file ``record.id`` the bytes at ``source`` and the record's name, size
        and digest (a fetched page filling the file created for it)."""
        ...

    def file(self, file_id: str) -> FileRecord | None: ...
    def list_files(
        self, purpose: str | None, page: PageRequest, project: str | None = None
    ) -> Page[FileRecord]:
        """A page of files, of ``project`` only when one is given."""
        ...

    def read_file(self, file_id: str, block: int = 1 << 20) -> Iterator[bytes]: ...
    def local_copy(self, file_id: str) -> AbstractContextManager[Path | None]:
        """A local path holding the file's bytes while the context is open (None when the
        bytes are missing)."""
        ...

    def delete_file(self, file_id: str) -> None: ...
    def stores_with_file(self, file_id: str) -> list[str]: ...

    # -- collections ----------------------------------------------------------------------
    def create_collection(self, c: Collection) -> None: ...
    def collection(self, cid: str) -> Collection | None: ...
    def collections_named(self, name: str, project: str | None = None) -> list[Collection]:
        """The stores named ``name`` (of ``project`` only when one is given), oldest first."""
        ...

    def all_collections(self) -> list[Collection]: ...
    def list_collections(self, page: PageRequest, project: str | None = None) -> Page[Collection]:
        """A page of stores, of ``project`` only when one is given."""
        ...

    def update_collection(self, cid: str, fields: dict[str, object]) -> None: ...
    def delete_collection(self, cid: str) -> None: ...
    def file_counts(self, cid: str, batch_id: str | None = None) -> FileCounts: ...
    def stats(self, cid: str) -> StoreStats: ...

    # -- store files (ingestion jobs) -----------------------------------------------------
    def attach(self, sf: StoreFile) -> bool: ...
    def store_file(self, cid: str, file_id: str) -> StoreFile | None: ...
    def list_store_files(
        self,
        cid: str,
        page: PageRequest,
        *,
        status: FileStatus | None = None,
        batch_id: str | None = None,
    ) -> Page[StoreFile]: ...
    def set_file_state(
        self,
        cid: str,
        file_id: str,
        status: FileStatus,
        *,
        last_error: LastError | None = None,
        usage_bytes: int | None = None,
        warnings: list[str] | None = None,
        clear_secrets: bool = False,
    ) -> None: ...
    def set_attributes(self, cid: str, file_id: str, attributes: dict[str, object]) -> None: ...
    def set_attempts(self, cid: str, file_id: str, attempts: int) -> None: ...
    def detach(self, cid: str, file_id: str) -> None: ...
    def claim(self, owner: str, lease_s: float) -> StoreFile | None: ...
    def renew(self, cid: str, file_id: str, owner: str, lease_s: float) -> bool: ...
    def in_progress_count(self) -> int: ...
    def file_details(
        self, cid: str, file_ids: set[str]
    ) -> dict[str, tuple[str, dict[str, object]]]: ...
    def matching_files(self, cid: str, flt: Filter) -> set[str]: ...
    def completed_digests(self, cid: str) -> set[str]: ...

    # -- batches and jobs -----------------------------------------------------------------
    def add_batch(self, batch: Batch) -> None: ...
    def batch(self, batch_id: str) -> Batch | None: ...
    def set_batch_status(self, batch_id: str, status: str) -> None: ...
    def open_batches(self) -> list[Batch]: ...
    def add_job(self, job: Job) -> None: ...
    def job(self, job_id: str) -> Job | None: ...
    def jobs(
        self, status: JobStatus | None = None, collection_id: str | None = None
    ) -> list[Job]: ...
    def update_job(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        progress: int | None = None,
        total: int | None = None,
        error: str | None = None,
        params: dict[str, object] | None = None,
    ) -> None: ...

    # -- chunks ---------------------------------------------------------------------------
    def existing_hashes(self, cid: str, hashes: list[str]) -> set[str]: ...
    def add_chunks(
        self,
        cid: str,
        records: list[ChunkRecord],
        vectors: np.ndarray,
        *,
        model: str,
        sparse: list[SparseVector] | None = None,
    ) -> int | None:
        """Store chunks (and index them) in one transaction; how many were new. None when
        the store is no longer embedded with ``model`` (re-embedded meanwhile): nothing is
        stored and the caller embeds again."""
        ...

    def delete_file_chunks(self, cid: str, file_id: str) -> int:
        """Drop a file's chunks (those no other file owns); how many left the store."""
        ...

    def chunks(self, ids: list[int]) -> dict[int, ChunkView]: ...
    def vectors(self, cid: str, ids: set[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, unit vectors) of a collection's chunks, or of the given ids."""
        ...

    def chunk_owners(self, ids: list[int]) -> dict[int, list[str]]: ...
    def file_chunks(self, cid: str, file_id: str, after: int, limit: int) -> list[ChunkView]: ...
    def count(self, cid: str) -> int: ...
    def file_usage_bytes(self, cid: str, file_id: str) -> int: ...

    # -- search ---------------------------------------------------------------------------
    def candidates(
        self,
        cid: str,
        queries: list[CandidateQuery],
        k: int,
        *,
        allowed_files: set[str] | None,
        dense: bool,
        keyword: bool,
    ) -> list[Candidates]: ...

    # -- re-embedding ---------------------------------------------------------------------
    def stage_embeddings(self, job_id: str, rows: list[tuple[int, np.ndarray]]) -> None: ...
    def unstaged_chunks(self, cid: str, job_id: str, limit: int) -> list[tuple[int, str]]: ...
    def staged_count(self, job_id: str) -> int: ...
    def swap_staged(self, cid: str, job_id: str, model: str, dimensions: int) -> bool:
        """Move a finished re-embed into place; False when chunks remain unstaged (added
        meanwhile): stage them and try again."""
        ...

    def drop_staging(self, job_id: str) -> None: ...

    # -- maintenance ----------------------------------------------------------------------
    def rebuild_index(self, cid: str) -> tuple[int, str]:
        """Rebuild the collection's vector index; (vectors, index kind)."""
        ...

    def index_kind(self, cid: str) -> str | None:
        """``flat``/``hnsw``/``ivf`` of a loaded index (None when not loaded)."""
        ...

    def wait_maintenance(self) -> None:
        """Block until background index work has finished."""
        ...
