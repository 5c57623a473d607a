"""``PostgresBackend``: the knowledge base on PostgreSQL + pgvector, shared by several
gateway replicas. The database is the only state: no FAISS, no local files.

- Vectors: ``vector`` columns with one HNSW index per dimension in use (kb/pg/db.py);
  filtered searches use pgvector's iterative index scans.
- Keywords: BM25 computed in SQL from ``tsvector`` columns (kb/pg/keyword.py).
- Uploaded bytes and ingestion leases: kb/pg/files.py.
- Every statement both backends run alike is shared (kb/sql/); this package keeps what
  PostgreSQL does its own way.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kb.backend import CandidateQuery, Candidates
from kb.config import KnowledgeSettings
from kb.pg.chunks import ChunksMixin, pg_vector, token_lengths
from kb.pg.db import redact_dsn
from kb.pg.files import FilesMixin
from kb.pg.filters import file_scope
from kb.pg.keyword import KeywordMixin
from kb.sql.collections import SqlCollections
from kb.sql.jobs import SqlJobs
from kb.types import Collection

__all__ = ["PostgresBackend", "redact_dsn", "token_lengths"]

log = logging.getLogger(__name__)

_EXACT_UP_TO = 5_000  # chunks in a store searched exactly (no graph)


class PostgresBackend(SqlCollections, FilesMixin, ChunksMixin, SqlJobs, KeywordMixin):
    name = "postgres"
    shared = True

    def __init__(self, dsn: str, settings: KnowledgeSettings | None = None) -> None:
        super().__init__(dsn, settings)
        self.stemming = self.settings.keyword_stemming
        self._stats_cache = {}
        self._df_cache = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="rwkv-rag-uploads-"))

    # -- lifecycle ----------------------------------------------------------------------

    def startup(self) -> None:
        try:
            self._ensure_schema()
            if self.stemming:
                self.start_stemmed_rebuild(self.settings.keyword_rebuild_batch)
        except Exception as exc:  # noqa: BLE001 - served as 503 until the database is back
            log.error(
                "knowledge base database unreachable at startup",
                extra={"dsn": self.dsn_shown, "error": type(exc).__name__},
            )

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.stop_stemmed_rebuild()
        self.pool.close()

    def wait_maintenance(self) -> None:
        self.wait_stemmed_rebuild()

    def create_collection(self, c: Collection) -> None:
        super().create_collection(c)
        self._ensure_index(c.dimensions)

    # -- search -------------------------------------------------------------------------

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
        out = [Candidates() for _ in queries]
        if allowed_files is not None and not allowed_files:
            return out
        files = sorted(allowed_files) if allowed_files is not None else None
        with self._conn(transaction=True) as conn:
            row = conn.execute("SELECT dimensions FROM collections WHERE id = %s", (cid,))
            found = row.fetchone()
            dims = int(found["dimensions"]) if found else 0
            if dense:
                ef = int(self.settings.postgres.hnsw_ef_search)
                conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            for q, cand in zip(queries, out, strict=True):
                if dense and q.vector is not None and dims:
                    cand.dense = self._dense(conn, cid, dims, q.vector, k, files)
                if keyword:
                    cand.keyword = self._keyword(conn, cid, q.text, k, files)
                if q.sparse:
                    cand.sparse = self._sparse(conn, cid, q.sparse, k, files)
        return out

    def _dense(
        self, conn: Any, cid: str, dims: int, vec: np.ndarray, k: int, files: list[str] | None
    ) -> list[tuple[int, float]]:
        scope, extra = file_scope(files)
        q = pg_vector(vec)
        exact = self._stats(conn, cid, "tsv")[0] <= _EXACT_UP_TO
        if exact:
            # Small store: an exact scan through the store's own rows beats the graph.
            sql = (
                "SELECT c.id, -(c.embedding <#> %s::vector) AS score FROM chunks c "
                f"WHERE c.collection_id = %s{scope} ORDER BY c.embedding <#> %s::vector LIMIT %s"
            )
        else:
            # The HNSW index over this dimension, the store filtered during the scan
            # (iterative scans); ``collection_id || ''`` keeps the planner off the btree.
            sql = (
                f"SELECT c.id, -(c.embedding::vector({dims}) <#> %s::vector({dims})) AS score "
                f"FROM chunks c WHERE c.dims = {dims} AND (c.collection_id || '') = %s{scope} "
                f"ORDER BY c.embedding::vector({dims}) <#> %s::vector({dims}) LIMIT %s"
            )
        if not exact:
            # The planner under-counts the store's share and would scan; the graph it is.
            conn.execute("SET LOCAL enable_seqscan = off")
        rows = conn.execute(sql, [q, cid, *extra, q, k]).fetchall()
        if not exact:
            conn.execute("SET LOCAL enable_seqscan = on")
        return [(int(r["id"]), float(r["score"])) for r in rows]

    # -- maintenance --------------------------------------------------------------------

    def rebuild_index(self, cid: str) -> tuple[int, str]:
        dims = self.dimensions(cid)
        with self._conn() as conn:
            conn.execute(f"REINDEX INDEX CONCURRENTLY chunks_hnsw_{int(dims)}")
        return self.count(cid), "hnsw"

    def index_kind(self, cid: str) -> str | None:
        return "hnsw"
