"""``SqliteBackend``: the store's parts over one SQLite file, with FAISS as the vector index.

Chunk writes and their FAISS updates happen under one lock per collection, so the index
never runs ahead of (or behind) what SQLite committed; at startup the indexes are checked
against SQLite and repaired.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kb.backend import CandidateQuery, Candidates, SparseVector
from kb.config import KnowledgeSettings
from kb.filters import Filter
from kb.indexes import IndexManager
from kb.sql.collections import SqlCollections
from kb.sql.jobs import SqlJobs
from kb.store.chunks import ChunksMixin
from kb.store.files import FilesMixin
from kb.store.keyword import KeywordMixin
from kb.types import ChunkRecord

__all__ = ["SqliteBackend"]


class SqliteBackend(SqlCollections, FilesMixin, ChunksMixin, SqlJobs, KeywordMixin):
    name = "sqlite"
    shared = False

    def __init__(self, directory: Path, settings: KnowledgeSettings | None = None) -> None:
        super().__init__(directory / "kb.sqlite")
        self.dir = directory
        self.files_dir = directory / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings or KnowledgeSettings()
        self.indexes = IndexManager(self, directory / "indexes", self.settings, self._dims)
        self._write_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.stemming = self.settings.keyword_stemming

    def _dims(self, cid: str) -> int | None:
        col = self.collection(cid)
        return col.dimensions if col else None

    def _write_lock(self, cid: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._write_locks.get(cid)
            if lock is None:
                lock = self._write_locks[cid] = threading.Lock()
            return lock

    # -- lifecycle ----------------------------------------------------------------------

    def startup(self) -> None:
        self.release_leases()
        if self.stemming:
            self.start_stemmed_rebuild(self.settings.keyword_rebuild_batch)

    def flush(self) -> None:
        self.indexes.flush()

    def close(self) -> None:
        self.stop_stemmed_rebuild()
        self.indexes.wait_upgrades(timeout=30)
        self.flush()
        super().close()

    @contextlib.contextmanager
    def local_copy(self, file_id: str) -> Iterator[Path | None]:
        yield self.file_path(file_id)

    # -- chunks and the index -------------------------------------------------------------

    def add_chunks(
        self,
        cid: str,
        records: list[ChunkRecord],
        vectors: np.ndarray,
        *,
        model: str,
        sparse: list[SparseVector] | None = None,
    ) -> int | None:
        with self._write_lock(cid):
            col = self.collection(cid)
            if col is None or col.embedding_model != model:
                return None
            self.indexes.get(cid)  # load (and repair) before the write it must include
            added = self.insert_chunks(cid, records, vectors)
            if added and sparse is not None:
                self.insert_sparse(cid, [(c, sparse[i]) for i, c in added])
            if added:
                ids = np.array([c for _, c in added], dtype=np.int64)
                self.indexes.added(cid, ids, vectors[[i for i, _ in added]])
        return len(added)

    def delete_file_chunks(self, cid: str, file_id: str) -> int:
        with self._write_lock(cid):
            self.indexes.get(cid)
            ids = self.remove_file_chunks(cid, file_id)
            if ids:
                self.indexes.removed(cid, ids)
        return len(ids)

    def delete_collection(self, cid: str) -> None:
        with self._write_lock(cid):
            super().delete_collection(cid)
            self.indexes.drop(cid)

    def swap_staged(self, cid: str, job_id: str, model: str, dimensions: int) -> bool:
        with self._write_lock(cid):
            if self.unstaged_chunks(cid, job_id, 1):
                return False
            self.swap_staged_rows(cid, job_id, model, dimensions)
            self.indexes.rebuild(cid)
        return True

    def rebuild_index(self, cid: str) -> tuple[int, str]:
        with self._write_lock(cid):
            index = self.indexes.rebuild(cid)
        return len(index), index.kind

    def index_kind(self, cid: str) -> str | None:
        index = self.indexes.loaded(cid)
        return index.kind if index is not None else None

    def wait_maintenance(self) -> None:
        self.indexes.wait_upgrades()
        self.wait_stemmed_rebuild()

    # -- search ---------------------------------------------------------------------------

    def matching_files(self, cid: str, flt: Filter) -> set[str]:
        return {fid for fid, attrs in self.store_file_attributes(cid) if flt.matches(attrs)}

    def candidates(
        self,
        cid: str,
        queries: list[CandidateQuery],
        k: int,
        *,
        allowed_files: set[str] | None,
        dense: bool,
        keyword: bool,
    ) -> list[Candidates]:
        allowed = None if allowed_files is None else self.chunk_ids_of_files(cid, allowed_files)
        out = [Candidates() for _ in queries]
        if dense:
            vecs = [q.vector for q in queries if q.vector is not None]
            if vecs:
                scores, ids = self.indexes.get(cid).search(np.stack(vecs), k, allowed=allowed)
                for row, cand in enumerate(out):
                    if ids.size:
                        cand.dense = [
                            (int(i), float(s))
                            for i, s in zip(ids[row], scores[row], strict=True)
                            if i >= 0
                        ]
        if keyword:
            for q, cand in zip(queries, out, strict=True):
                cand.keyword = self.keyword_search(cid, q.text, k, allowed=allowed)
        for q, cand in zip(queries, out, strict=True):
            if q.sparse:
                cand.sparse = self.sparse_search(cid, q.sparse, k, allowed=allowed)
        return out
