"""``PostgresBackend``: the knowledge base on PostgreSQL + pgvector, shared by several
gateway replicas. The database is the only state: no FAISS, no local files.

- Vectors: ``vector`` columns with one HNSW index per dimension in use (kb/pg/schema.py);
  filtered searches use pgvector's iterative index scans.
- Keywords: BM25 (k1 1.2, b 0.75) computed in SQL from the ``tsvector`` columns, with
  document frequencies counted through the GIN index, over words and over CJK bigrams.
- Uploaded bytes: ``bytea`` parts in ``file_parts``, so every replica reads every file
  and a backup of the database is a backup of everything (no shared directory to mount).
- Ingestion jobs: claimed with ``FOR UPDATE SKIP LOCKED`` and a lease; a job whose
  replica died is taken over when its lease runs out. Chunks are unique per store by
  content hash, so a job run twice adds nothing twice.
- Every write is one transaction, so other replicas see it complete or not at all.

An unreachable database is a 503 (``StorageUnavailableError``) on the request that met
it, and a log line; the pool reconnects by itself when it is back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import StorageUnavailableError
from kb.backend import CandidateQuery, Candidates, SparseVector
from kb.config import KnowledgeSettings
from kb.filters import Filter
from kb.keywords import cjk_bigrams, query_grams, query_words
from kb.pg.filters import compile_filter
from kb.pg.schema import MIGRATIONS
from kb.pg.stemmed import StemmedIndexMixin
from kb.rows import (
    batch_from,
    chunk_from,
    collection_from,
    dump_json,
    file_from,
    file_state_fields,
    job_fields,
    job_from,
    options_json,
    store_file_from,
    strategy_json,
)
from kb.store.chunks import content_hash
from kb.store.paging import paged_query
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

__all__ = ["PostgresBackend", "redact_dsn", "token_lengths"]

log = logging.getLogger(__name__)

_CHUNK_COLUMNS = (
    "c.id, c.collection_id, c.file_id, c.position, c.text, c.token_count, c.page, c.sheet, "
    'c."row", c.heading'
)
_STORE_FILE_SELECT = (
    "v.*, (SELECT filename FROM files f WHERE f.id = v.file_id) AS filename, "
    "(SELECT bytes FROM files f WHERE f.id = v.file_id) AS bytes, "
    "(SELECT count(*) FROM chunk_refs r WHERE r.collection_id = v.collection_id "
    "AND r.file_id = v.file_id) AS chunk_count"
)
_K1, _B = 1.2, 0.75
_STATS_TTL_S = 5.0
_EXACT_UP_TO = 5_000  # chunks in a store searched exactly (no graph)
_FULL_SCORING_UP_TO = 2_000  # candidate chunks scored by BM25 before common terms drop
_COMMON_SHARE = 0.05
_PRESCORED = 400  # candidates the exact BM25 reads when there are many


def redact_dsn(dsn: str) -> str:
    """The DSN without its password (for logs and errors)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - an unparsable DSN is shown as nothing
        return "<dsn>"
    if "password" in parts:
        parts["password"] = "***"  # noqa: S105 - the mask shown instead of it
    return make_conninfo(**{k: str(v) for k, v in parts.items()})


def _vec(v: np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in np.asarray(v, dtype=np.float32)) + "]"


class PostgresBackend(StemmedIndexMixin):
    name = "postgres"
    shared = True

    def __init__(self, dsn: str, settings: KnowledgeSettings | None = None) -> None:
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.settings = settings or KnowledgeSettings()
        self.stemming = self.settings.keyword_stemming
        pg = self.settings.postgres
        self.dsn_shown = redact_dsn(dsn)
        self._timeout = pg.connect_timeout_s
        self._part = pg.file_part_bytes
        self.pool = ConnectionPool(
            dsn,
            min_size=pg.pool_min_size,
            max_size=pg.pool_max_size,
            timeout=pg.connect_timeout_s,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": max(1, math.ceil(pg.connect_timeout_s)),
                "options": f"-c statement_timeout={int(pg.statement_timeout_s * 1000)}",
            },
            open=False,
            name="rwkv-rag-kb",
        )
        self.pool.open(wait=False)
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._indexed_dims: set[int] = set()
        self._stats_cache: dict[tuple[str, str], tuple[float, int, float]] = {}
        self._df_cache: dict[tuple[str, str, str], tuple[float, int]] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="rwkv-rag-uploads-"))

    # -- connections --------------------------------------------------------------------

    @contextlib.contextmanager
    def _conn(self, *, transaction: bool = False) -> Iterator[Any]:
        import psycopg
        import psycopg_pool

        try:
            self._ensure_schema()
            with self.pool.connection(timeout=self._timeout) as conn:
                if transaction:
                    with conn.transaction():
                        yield conn
                else:
                    yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError) as exc:
            log.error(
                "knowledge base database unreachable",
                extra={"dsn": self.dsn_shown, "error": type(exc).__name__},
            )
            raise StorageUnavailableError(
                "the knowledge base's database is unreachable; try again shortly"
            ) from None

    def _ensure_schema(self) -> None:
        if self._migrated:
            return
        with self._migrate_lock:
            if self._migrated:
                return
            with self.pool.connection(timeout=self._timeout) as raw, raw.transaction():
                conn: Any = raw
                # One replica migrates at a time; the others wait here, then see it done.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('rwkv-rag-kb-migrate'))")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY, "
                    "applied_at BIGINT NOT NULL)"
                )
                done = {r["id"] for r in conn.execute("SELECT id FROM _migrations").fetchall()}
                for number, sql in enumerate(MIGRATIONS, start=1):
                    if number not in done:
                        conn.execute(sql)
                        conn.execute(
                            "INSERT INTO _migrations VALUES (%s, %s)", (number, int(time.time()))
                        )
                dims = conn.execute("SELECT DISTINCT dimensions FROM collections").fetchall()
            self._migrated = True
            for row in dims:
                self._ensure_index(int(row["dimensions"]))

    def _ensure_index(self, dims: int) -> None:
        """The HNSW index over vectors of ``dims`` dimensions (one per size in use)."""
        if dims in self._indexed_dims or not 1 <= dims <= 16000:
            return
        s = self.settings
        with self.pool.connection(timeout=self._timeout) as conn, conn.transaction():
            # Building over existing rows (a re-embed to a new size, a bulk load) may take
            # minutes: no statement timeout, and memory enough to build in one pass.
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS chunks_hnsw_{dims} ON chunks USING hnsw "
                f"((embedding::vector({dims})) vector_ip_ops) "
                f"WITH (m = {int(s.hnsw_m)}, ef_construction = {int(s.hnsw_ef_construction)}) "
                f"WHERE dims = {dims}"
            )
        self._indexed_dims.add(dims)

    def _rows(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return list(conn.execute(sql, args).fetchall())

    def _one(self, sql: str, args: Any = ()) -> dict[str, Any] | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def _int(self, sql: str, args: Any = ()) -> int:
        row = self._one(sql, args)
        return int(next(iter(row.values())) or 0) if row else 0

    def _exec(self, sql: str, args: Any = ()) -> int:
        with self._conn() as conn:
            return int(conn.execute(sql, args).rowcount)

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

    # -- files --------------------------------------------------------------------------

    def upload_path(self, file_id: str) -> Path:
        return self._tmp / f"{file_id}.part"

    def add_file(self, record: FileRecord, source: Path) -> None:
        with self._conn(transaction=True) as conn:
            conn.execute(
                "INSERT INTO files (id, filename, bytes, purpose, sha256, source_url, "
                "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    record.id,
                    _text(record.filename),
                    record.bytes,
                    record.purpose,
                    record.sha256,
                    record.source_url,
                    record.created_at,
                ),
            )
            with open(source, "rb") as fh:
                for part, data in enumerate(iter(lambda: fh.read(self._part), b"")):
                    conn.execute(
                        "INSERT INTO file_parts (file_id, part, data) VALUES (%s, %s, %s)",
                        (record.id, part, data),
                    )
        if source.parent == self._tmp:
            source.unlink(missing_ok=True)

    def file(self, file_id: str) -> FileRecord | None:
        row = self._one("SELECT * FROM files WHERE id = %s", (file_id,))
        return file_from(row) if row else None

    def list_files(self, purpose: str | None, page: PageRequest) -> Page[FileRecord]:
        where, args = ("purpose = %s", [purpose]) if purpose else ("TRUE", [])
        return self._paged("files", "id", where, args, page, file_from)

    def read_file(self, file_id: str, block: int = 1 << 20) -> Iterator[bytes]:
        parts = self._int("SELECT count(*) FROM file_parts WHERE file_id = %s", (file_id,))
        for part in range(parts):
            row = self._one(
                "SELECT data FROM file_parts WHERE file_id = %s AND part = %s", (file_id, part)
            )
            if row is not None:
                yield bytes(row["data"])

    @contextlib.contextmanager
    def local_copy(self, file_id: str) -> Iterator[Path | None]:
        if self.file(file_id) is None:
            yield None
            return
        fd, name = tempfile.mkstemp(prefix=f"{file_id}-", dir=self._tmp)
        path = Path(name)
        try:
            with open(fd, "wb") as fh:
                for block in self.read_file(file_id):
                    fh.write(block)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def delete_file(self, file_id: str) -> None:
        self._exec("DELETE FROM files WHERE id = %s", (file_id,))

    def stores_with_file(self, file_id: str) -> list[str]:
        return [
            str(r["collection_id"])
            for r in self._rows(
                "SELECT collection_id FROM vector_store_files WHERE file_id = %s", (file_id,)
            )
        ]

    # -- collections --------------------------------------------------------------------

    def create_collection(self, c: Collection) -> None:
        self._exec(
            "INSERT INTO collections (id, name, embedding_model, dimensions, metadata, "
            "created_at, expires_after, last_active_at, chunking_strategy) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                c.id,
                c.name,
                c.embedding_model,
                c.dimensions,
                dump_json(c.metadata),
                c.created_at,
                dump_json({"anchor": c.expires_after.anchor, "days": c.expires_after.days})
                if c.expires_after
                else None,
                c.last_active_at,
                dump_json(strategy_json(c.chunking_strategy)) if c.chunking_strategy else None,
            ),
        )
        self._ensure_index(c.dimensions)

    def collection(self, cid: str) -> Collection | None:
        row = self._one("SELECT * FROM collections WHERE id = %s", (cid,))
        return collection_from(row) if row else None

    def collections_named(self, name: str) -> list[Collection]:
        return [
            collection_from(r)
            for r in self._rows("SELECT * FROM collections WHERE name = %s", (name,))
        ]

    def all_collections(self) -> list[Collection]:
        return [
            collection_from(r)
            for r in self._rows("SELECT * FROM collections ORDER BY created_at, seq")
        ]

    def list_collections(self, page: PageRequest) -> Page[Collection]:
        return self._paged("collections", "id", "TRUE", [], page, collection_from)

    def update_collection(self, cid: str, fields: dict[str, object]) -> None:
        allowed = {"name", "metadata", "expires_after", "last_active_at", "chunking_strategy"}
        if not fields:
            return
        if not set(fields) <= allowed:
            raise ValueError(f"unknown collection fields: {sorted(set(fields) - allowed)}")
        encoded = {
            k: (dump_json(v) if k in ("metadata", "expires_after", "chunking_strategy") else v)
            for k, v in fields.items()
        }
        sets = ", ".join(f"{k} = %s" for k in encoded)
        self._exec(f"UPDATE collections SET {sets} WHERE id = %s", [*encoded.values(), cid])

    def delete_collection(self, cid: str) -> None:
        with self._conn(transaction=True) as conn:
            conn.execute("DELETE FROM chunk_sparse WHERE collection_id = %s", (cid,))
            conn.execute("DELETE FROM chunk_refs WHERE collection_id = %s", (cid,))
            conn.execute("DELETE FROM chunks WHERE collection_id = %s", (cid,))
            conn.execute("DELETE FROM collections WHERE id = %s", (cid,))

    def file_counts(self, cid: str, batch_id: str | None = None) -> FileCounts:
        sql = "SELECT status, count(*) AS n FROM vector_store_files WHERE collection_id = %s"
        args: list[object] = [cid]
        if batch_id:
            sql += " AND batch_id = %s"
            args.append(batch_id)
        counts = {str(r["status"]): int(r["n"]) for r in self._rows(sql + " GROUP BY status", args)}
        return FileCounts(**{k: counts.get(k, 0) for k in FileCounts.__dataclass_fields__})

    def stats(self, cid: str) -> StoreStats:
        usage = self._int(
            "SELECT coalesce(sum(usage_bytes), 0) FROM vector_store_files WHERE collection_id = %s",
            (cid,),
        )
        return StoreStats(self.file_counts(cid), usage, self.count(cid))

    # -- store files --------------------------------------------------------------------

    def attach(self, sf: StoreFile) -> bool:
        return bool(
            self._exec(
                "INSERT INTO vector_store_files (collection_id, file_id, status, attributes, "
                "chunking_strategy, batch_id, options, created_at, updated_at) "
                "VALUES (%s, %s, 'in_progress', %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (
                    sf.collection_id,
                    sf.file_id,
                    dump_json(sf.attributes),
                    dump_json(strategy_json(sf.chunking_strategy)),
                    sf.batch_id,
                    dump_json(options_json(sf.options)),
                    sf.created_at,
                    sf.updated_at,
                ),
            )
        )

    def store_file(self, cid: str, file_id: str) -> StoreFile | None:
        row = self._one(
            f"SELECT {_STORE_FILE_SELECT} FROM vector_store_files v "
            "WHERE collection_id = %s AND file_id = %s",
            (cid, file_id),
        )
        return store_file_from(row) if row else None

    def list_store_files(
        self,
        cid: str,
        page: PageRequest,
        *,
        status: FileStatus | None = None,
        batch_id: str | None = None,
    ) -> Page[StoreFile]:
        where = "collection_id = %s"
        args: list[object] = [cid]
        if status:
            where += " AND status = %s"
            args.append(status)
        if batch_id:
            where += " AND batch_id = %s"
            args.append(batch_id)
        return self._paged(
            "vector_store_files v",
            "file_id",
            where,
            args,
            page,
            store_file_from,
            _STORE_FILE_SELECT,
        )

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
    ) -> None:
        fields = file_state_fields(status, last_error, usage_bytes, warnings)
        sets = ", ".join(f"{k} = %s" for k in fields)
        if clear_secrets:
            sets += ", options = options - 'password'"
        self._exec(
            f"UPDATE vector_store_files SET {sets} WHERE collection_id = %s AND file_id = %s",
            [*fields.values(), cid, file_id],
        )

    def set_attributes(self, cid: str, file_id: str, attributes: dict[str, object]) -> None:
        self._exec(
            "UPDATE vector_store_files SET attributes = %s, updated_at = %s "
            "WHERE collection_id = %s AND file_id = %s",
            (dump_json(attributes), int(time.time()), cid, file_id),
        )

    def set_attempts(self, cid: str, file_id: str, attempts: int) -> None:
        self._exec(
            "UPDATE vector_store_files SET attempts = %s WHERE collection_id = %s AND file_id = %s",
            (attempts, cid, file_id),
        )

    def detach(self, cid: str, file_id: str) -> None:
        self._exec(
            "DELETE FROM vector_store_files WHERE collection_id = %s AND file_id = %s",
            (cid, file_id),
        )

    def claim(self, owner: str, lease_s: float) -> StoreFile | None:
        """Take the oldest unclaimed (or lease-expired) ingestion, counting the attempt.
        ``SKIP LOCKED``: replicas claiming at once each get a different job."""
        now = time.time()
        try:
            rows = self._rows(
                "UPDATE vector_store_files SET lease_owner = %s, lease_until = %s, "
                "attempts = attempts + 1 WHERE (collection_id, file_id) = (SELECT "
                "collection_id, file_id FROM vector_store_files WHERE status = 'in_progress' "
                "AND (lease_until IS NULL OR lease_until < %s) ORDER BY created_at, seq "
                "LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING collection_id, file_id",
                (owner, now + lease_s, now),
            )
        except StorageUnavailableError:
            return None  # the worker idles and asks again
        return self.store_file(rows[0]["collection_id"], rows[0]["file_id"]) if rows else None

    def renew(self, cid: str, file_id: str, owner: str, lease_s: float) -> bool:
        try:
            return bool(
                self._exec(
                    "UPDATE vector_store_files SET lease_until = %s WHERE collection_id = %s "
                    "AND file_id = %s AND lease_owner = %s AND status = 'in_progress'",
                    (time.time() + lease_s, cid, file_id, owner),
                )
            )
        except StorageUnavailableError:
            return True  # keep working; the lease check after the job decides

    def in_progress_count(self) -> int:
        return self._int("SELECT count(*) FROM vector_store_files WHERE status = 'in_progress'")

    def file_details(
        self, cid: str, file_ids: set[str]
    ) -> dict[str, tuple[str, dict[str, object]]]:
        rows = self._rows(
            "SELECT v.file_id, v.attributes, f.filename FROM vector_store_files v "
            "LEFT JOIN files f ON f.id = v.file_id WHERE v.collection_id = %s "
            "AND v.file_id = ANY(%s)",
            (cid, sorted(file_ids)),
        )
        return {
            str(r["file_id"]): (str(r["filename"] or r["file_id"]), dict(r["attributes"]))
            for r in rows
        }

    def matching_files(self, cid: str, flt: Filter) -> set[str]:
        compiled = compile_filter(flt)
        if compiled is None:  # Dify's text operators: evaluated here
            rows = self._rows(
                "SELECT file_id, attributes FROM vector_store_files WHERE collection_id = %s",
                (cid,),
            )
            return {str(r["file_id"]) for r in rows if flt.matches(dict(r["attributes"]))}
        sql, args = compiled
        rows = self._rows(
            f"SELECT file_id FROM vector_store_files WHERE collection_id = %s AND {sql}",
            [cid, *args],
        )
        return {str(r["file_id"]) for r in rows}

    def completed_digests(self, cid: str) -> set[str]:
        return {
            str(r["sha256"])
            for r in self._rows(
                "SELECT f.sha256 FROM vector_store_files v JOIN files f ON f.id = v.file_id "
                "WHERE v.collection_id = %s AND v.status = 'completed'",
                (cid,),
            )
        }

    # -- batches and jobs ---------------------------------------------------------------

    def add_batch(self, batch: Batch) -> None:
        self._exec(
            "INSERT INTO file_batches (id, collection_id, status, created_at) "
            "VALUES (%s, %s, %s, %s)",
            (batch.id, batch.collection_id, batch.status, batch.created_at),
        )

    def batch(self, batch_id: str) -> Batch | None:
        row = self._one("SELECT * FROM file_batches WHERE id = %s", (batch_id,))
        return batch_from(row) if row else None

    def set_batch_status(self, batch_id: str, status: str) -> None:
        self._exec("UPDATE file_batches SET status = %s WHERE id = %s", (status, batch_id))

    def open_batches(self) -> list[Batch]:
        return [
            batch_from(r)
            for r in self._rows("SELECT * FROM file_batches WHERE status = 'in_progress'")
        ]

    def add_job(self, job: Job) -> None:
        self._exec(
            "INSERT INTO jobs (id, kind, collection_id, status, params, progress, total, "
            "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                job.id,
                job.kind,
                job.collection_id,
                job.status,
                dump_json(job.params),
                job.progress,
                job.total,
                job.created_at,
                job.updated_at,
            ),
        )

    def job(self, job_id: str) -> Job | None:
        row = self._one("SELECT * FROM jobs WHERE id = %s", (job_id,))
        return job_from(row) if row else None

    def jobs(self, status: JobStatus | None = None, collection_id: str | None = None) -> list[Job]:
        conds, args = ["TRUE"], list[object]()
        if status:
            conds.append("status = %s")
            args.append(status)
        if collection_id:
            conds.append("collection_id = %s")
            args.append(collection_id)
        return [
            job_from(r)
            for r in self._rows(
                f"SELECT * FROM jobs WHERE {' AND '.join(conds)} ORDER BY seq", args
            )
        ]

    def update_job(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        progress: int | None = None,
        total: int | None = None,
        error: str | None = None,
        params: dict[str, object] | None = None,
    ) -> None:
        fields = job_fields(status, progress, total, error, params)
        sets = ", ".join(f"{k} = %s" for k in fields)
        self._exec(f"UPDATE jobs SET {sets} WHERE id = %s", [*fields.values(), job_id])

    # -- chunks -------------------------------------------------------------------------

    def existing_hashes(self, cid: str, hashes: list[str]) -> set[str]:
        if not hashes:
            return set()
        return {
            str(r["content_hash"])
            for r in self._rows(
                "SELECT content_hash FROM chunks WHERE collection_id = %s AND "
                "content_hash = ANY(%s)",
                (cid, hashes),
            )
        }

    def add_chunks(
        self,
        cid: str,
        records: list[ChunkRecord],
        vectors: np.ndarray,
        *,
        model: str,
        sparse: list[SparseVector] | None = None,
    ) -> int | None:
        added = 0
        with self._conn(transaction=True) as conn:
            # The store row is locked against a re-embed swapping its model meanwhile.
            col = conn.execute(
                "SELECT embedding_model, dimensions FROM collections WHERE id = %s FOR SHARE",
                (cid,),
            ).fetchone()
            if col is None or col["embedding_model"] != model:
                return None
            dims = int(col["dimensions"])
            for i, (rec, vec) in enumerate(zip(records, vectors, strict=True)):
                digest = content_hash(rec.text)
                cjk = cjk_bigrams(rec.text)
                text = _text(rec.text)
                row = conn.execute(
                    "INSERT INTO chunks (collection_id, file_id, position, text, token_count, "
                    'page, sheet, "row", heading, content_hash, cjk, dims, embedding, '
                    "tsv_len, cjk_tsv_len) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                    "%s, %s::vector, %s, %s) "
                    "ON CONFLICT (collection_id, content_hash) DO NOTHING RETURNING id",
                    (
                        cid,
                        rec.file_id,
                        rec.position,
                        text,
                        rec.token_count,
                        rec.page,
                        _opt_text(rec.sheet),
                        rec.row,
                        _opt_text(rec.heading),
                        digest,
                        cjk,
                        dims,
                        _vec(vec),
                        *token_lengths(text, cjk),
                    ),
                ).fetchone()
                if row is not None:
                    chunk_id = int(row["id"])
                    added += 1
                    if sparse is not None and sparse[i]:
                        with conn.cursor() as cur:
                            cur.executemany(
                                "INSERT INTO chunk_sparse (collection_id, token, chunk_id, "
                                "weight) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                                [(cid, int(t), chunk_id, float(w)) for t, w in sparse[i].items()],
                            )
                else:
                    chunk_id = int(
                        conn.execute(
                            "SELECT id FROM chunks WHERE collection_id = %s AND content_hash = %s",
                            (cid, digest),
                        ).fetchone()["id"]
                    )
                conn.execute(
                    "INSERT INTO chunk_refs (chunk_id, collection_id, file_id) "
                    "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (chunk_id, cid, rec.file_id),
                )
        return added

    def delete_file_chunks(self, cid: str, file_id: str) -> int:
        with self._conn(transaction=True) as conn:
            owned = [
                int(r["chunk_id"])
                for r in conn.execute(
                    "DELETE FROM chunk_refs WHERE collection_id = %s AND file_id = %s "
                    "RETURNING chunk_id",
                    (cid, file_id),
                ).fetchall()
            ]
            if not owned:
                return 0
            # Chunks another file still owns move to it; the rest leave the store.
            conn.execute(
                "UPDATE chunks c SET file_id = r.file_id FROM (SELECT DISTINCT ON (chunk_id) "
                "chunk_id, file_id FROM chunk_refs WHERE chunk_id = ANY(%s) ORDER BY chunk_id, "
                "seq) r WHERE c.id = r.chunk_id AND c.file_id = %s",
                (owned, file_id),
            )
            gone = conn.execute(
                "DELETE FROM chunks WHERE id = ANY(%s) AND NOT EXISTS (SELECT 1 FROM "
                "chunk_refs r WHERE r.chunk_id = chunks.id) RETURNING id",
                (owned,),
            ).fetchall()
        return len(gone)

    def chunks(self, ids: list[int]) -> dict[int, ChunkView]:
        if not ids:
            return {}
        rows = self._rows(f"SELECT {_CHUNK_COLUMNS} FROM chunks c WHERE c.id = ANY(%s)", (ids,))
        return {int(r["id"]): chunk_from(r) for r in rows}

    def chunk_owners(self, ids: list[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for r in self._rows(
            "SELECT chunk_id, file_id FROM chunk_refs WHERE chunk_id = ANY(%s) ORDER BY seq",
            (ids,),
        ):
            out.setdefault(int(r["chunk_id"]), []).append(str(r["file_id"]))
        return out

    def file_chunks(self, cid: str, file_id: str, after: int, limit: int) -> list[ChunkView]:
        rows = self._rows(
            "SELECT c.id, r.collection_id, r.file_id, c.position, c.text, c.token_count, "
            'c.page, c.sheet, c."row", c.heading FROM chunk_refs r JOIN chunks c '
            "ON c.id = r.chunk_id WHERE r.collection_id = %s AND r.file_id = %s "
            "AND c.position > %s ORDER BY c.position, c.id LIMIT %s",
            (cid, file_id, after, limit),
        )
        return [chunk_from(r) for r in rows]

    def count(self, cid: str) -> int:
        return self._int("SELECT count(*) FROM chunks WHERE collection_id = %s", (cid,))

    def file_usage_bytes(self, cid: str, file_id: str) -> int:
        return self._int(
            "SELECT coalesce(sum(octet_length(c.text)), 0) FROM chunk_refs r JOIN chunks c "
            "ON c.id = r.chunk_id WHERE r.collection_id = %s AND r.file_id = %s",
            (cid, file_id),
        )

    def vectors(self, cid: str, ids: set[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        dims = self._int("SELECT dimensions FROM collections WHERE id = %s", (cid,))
        if ids is None:
            rows = self._rows(
                "SELECT id, embedding::real[] AS v FROM chunks WHERE collection_id = %s "
                "ORDER BY id",
                (cid,),
            )
        else:
            rows = self._rows(
                "SELECT id, embedding::real[] AS v FROM chunks WHERE collection_id = %s AND "
                "id = ANY(%s) ORDER BY id",
                (cid, sorted(ids)),
            )
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, dims), np.float32)
        mat = np.asarray([r["v"] for r in rows], dtype=np.float32).reshape(len(rows), -1)
        return np.asarray([r["id"] for r in rows], dtype=np.int64), mat

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

    @staticmethod
    def _scope(files: list[str] | None, chunk: str = "c.id") -> tuple[str, list[object]]:
        """The condition keeping chunks (``chunk``: their id column) of the given files."""
        if files is None:
            return "", []
        alias = chunk.split(".")[0]
        return (
            f" AND {chunk} IN (SELECT chunk_id FROM chunk_refs WHERE collection_id = "
            f"{alias}.collection_id AND file_id = ANY(%s))",
            [files],
        )

    def _dense(
        self, conn: Any, cid: str, dims: int, vec: np.ndarray, k: int, files: list[str] | None
    ) -> list[tuple[int, float]]:
        scope, extra = self._scope(files)
        q = _vec(vec)
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

    def _dfs(self, conn: Any, cid: str, column: str, lexemes: list[str]) -> dict[str, int]:
        """Document frequencies through the GIN index, cached as the statistics are."""
        now = time.monotonic()
        out: dict[str, int] = {}
        missing = []
        for lex in lexemes:
            hit = self._df_cache.get((cid, column, lex))
            if hit is not None and now - hit[0] < _STATS_TTL_S * 6:
                out[lex] = hit[1]
            else:
                missing.append(lex)
        if missing:
            for r in conn.execute(
                "SELECT t, (SELECT count(*) FROM chunks WHERE "
                f"{column} @@ quote_literal(t)::tsquery AND collection_id = %s) AS df "
                "FROM unnest(%s::text[]) AS t",
                (cid, missing),
            ).fetchall():
                out[str(r["t"])] = int(r["df"])
                self._df_cache[(cid, column, str(r["t"]))] = (now, int(r["df"]))
            if len(self._df_cache) > 100_000:
                self._df_cache.clear()
        return out

    def _stats(self, conn: Any, cid: str, column: str) -> tuple[int, float]:
        """(chunks, mean token count) of a store's column, cached for a few seconds
        (BM25 statistics and the exact/ANN choice; slightly stale is harmless)."""
        key = (cid, column)
        hit = self._stats_cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < _STATS_TTL_S:
            return hit[1], hit[2]
        row = conn.execute(
            f"SELECT count(*) AS n, coalesce(avg({column}_len), 1) AS avglen "
            "FROM chunks WHERE collection_id = %s",
            (cid,),
        ).fetchone()
        n, avglen = int(row["n"]), float(row["avglen"]) or 1.0
        self._stats_cache[key] = (now, n, avglen)
        return n, avglen

    def _bm25(
        self,
        conn: Any,
        cid: str,
        column: str,
        terms: list[str],
        k: int,
        files: list[str] | None,
    ) -> list[tuple[int, float]]:
        """BM25 over one tsvector column: document frequencies through the GIN index,
        the collection's size and mean length, then the top ``k`` matches."""
        lexemes = sorted({t.lower() for t in terms if t.strip()})
        if not lexemes:
            return []
        n, avglen = self._stats(conn, cid, column)
        if not n:
            return []
        dfs = self._dfs(conn, cid, column, lexemes)
        # FTS5's (and Robertson's) idf, floored as FTS5 floors it.
        idf = {t: max(math.log((n - df + 0.5) / (df + 0.5)), 1e-6) for t, df in dfs.items() if df}
        if not idf:
            return []
        # Candidates: chunks holding a query term. When that is a large share of a big
        # store, chunks holding only its commonest terms are left out of the scoring
        # (they could only rank last); every term still counts in the scores.
        matching = list(idf)
        # Many candidates (a big store, common words): chunks holding only the commonest
        # terms are left out, and the rest are cut to the best few hundred by the sum of
        # the idf of the terms they hold before the exact BM25 (which reads term
        # frequencies and lengths) ranks them. Every term still counts in the scores.
        limit = ""
        if min(n, sum(dfs.values())) > _FULL_SCORING_UP_TO:
            rare = [t for t in matching if dfs[t] <= _COMMON_SHARE * n]
            matching = rare or sorted(matching, key=lambda t: dfs[t])[:2]
            limit = (
                f" ORDER BY (SELECT sum(q.idf) FROM q WHERE c.{column} @@ q.tq) DESC, c.id "
                f"LIMIT {max(_PRESCORED, 4 * k)}"
            )
        scope, extra = self._scope(files)
        rows = conn.execute(
            "WITH q AS (SELECT term, idf, quote_literal(term)::tsquery AS tq FROM "
            "unnest(%s::text[], %s::float8[]) AS q(term, idf)), "
            f"m AS (SELECT c.id, c.{column} AS tsv, c.{column}_len AS dl FROM chunks c "
            f"WHERE c.collection_id = %s AND c.{column} @@ %s::tsquery{scope}{limit}) "
            "SELECT m.id, sum(q.idf * u.tf * %s / (u.tf + %s * (1 - %s + %s * "
            "m.dl / %s))) AS score FROM m CROSS JOIN LATERAL (SELECT lexeme, "
            "coalesce(array_length(positions, 1), 1) AS tf FROM unnest(m.tsv)) u "
            "JOIN q ON q.term = u.lexeme GROUP BY m.id ORDER BY score DESC, m.id LIMIT %s",
            [
                list(idf),
                list(idf.values()),
                cid,
                _tsquery(matching),
                *extra,
                _K1 + 1,
                _K1,
                _B,
                _B,
                avglen,
                k,
            ],
        ).fetchall()
        return [(int(r["id"]), float(r["score"])) for r in rows]

    def _keyword(
        self, conn: Any, cid: str, text: str, k: int, files: list[str] | None
    ) -> list[tuple[int, float]]:
        results: dict[int, float] = {}
        words = query_words(text)
        column = "tsv"
        if words and self.stemming and self.stemmed_index_ready(conn):
            # The query's words as the index's stems (the same configuration made both).
            column, words = "stem_tsv", _stems(conn, words)
        if words:
            for chunk_id, score in self._bm25(conn, cid, column, words, k, files):
                results[chunk_id] = score
        grams = query_grams(text)
        if grams:
            for chunk_id, score in self._bm25(conn, cid, "cjk_tsv", grams, k, files):
                results[chunk_id] = max(results.get(chunk_id, float("-inf")), score)
        return sorted(results.items(), key=lambda kv: -kv[1])[:k]

    def _sparse(
        self, conn: Any, cid: str, query: SparseVector, k: int, files: list[str] | None
    ) -> list[tuple[int, float]]:
        scope, extra = self._scope(files, "s.chunk_id")
        rows = conn.execute(
            "SELECT s.chunk_id AS id, sum(s.weight * q.w) AS score FROM chunk_sparse s "
            "JOIN unnest(%s::int[], %s::float8[]) AS q(token, w) ON s.token = q.token "
            f"WHERE s.collection_id = %s{scope} GROUP BY s.chunk_id "
            "ORDER BY score DESC, s.chunk_id LIMIT %s",
            [list(query), list(query.values()), cid, *extra, k],
        ).fetchall()
        return [(int(r["id"]), float(r["score"])) for r in rows]

    # -- re-embedding -------------------------------------------------------------------

    def stage_embeddings(self, job_id: str, rows: list[tuple[int, np.ndarray]]) -> None:
        with self._conn(transaction=True) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO reembed_staging (job_id, chunk_id, embedding) VALUES "
                "(%s, %s, %s::vector) ON CONFLICT (job_id, chunk_id) DO UPDATE SET "
                "embedding = EXCLUDED.embedding",
                [(job_id, i, _vec(v)) for i, v in rows],
            )

    def unstaged_chunks(self, cid: str, job_id: str, limit: int) -> list[tuple[int, str]]:
        return [
            (int(r["id"]), str(r["text"]))
            for r in self._rows(
                "SELECT id, text FROM chunks c WHERE collection_id = %s AND NOT EXISTS "
                "(SELECT 1 FROM reembed_staging s WHERE s.job_id = %s AND s.chunk_id = c.id) "
                "ORDER BY id LIMIT %s",
                (cid, job_id, limit),
            )
        ]

    def staged_count(self, job_id: str) -> int:
        return self._int("SELECT count(*) FROM reembed_staging WHERE job_id = %s", (job_id,))

    def swap_staged(self, cid: str, job_id: str, model: str, dimensions: int) -> bool:
        """One transaction: every chunk takes its new vector and the store its new model,
        or nothing changes (chunks added meanwhile: stage them and try again)."""
        with self._conn(transaction=True) as conn:
            conn.execute("SELECT 1 FROM collections WHERE id = %s FOR UPDATE", (cid,))
            left = conn.execute(
                "SELECT 1 FROM chunks c WHERE collection_id = %s AND NOT EXISTS (SELECT 1 "
                "FROM reembed_staging s WHERE s.job_id = %s AND s.chunk_id = c.id) LIMIT 1",
                (cid, job_id),
            ).fetchone()
            if left is not None:
                return False
            conn.execute(
                "UPDATE chunks c SET embedding = s.embedding, dims = %s FROM reembed_staging s "
                "WHERE s.job_id = %s AND s.chunk_id = c.id AND c.collection_id = %s",
                (dimensions, job_id, cid),
            )
            conn.execute(
                "UPDATE collections SET embedding_model = %s, dimensions = %s WHERE id = %s",
                (model, dimensions, cid),
            )
            conn.execute("DELETE FROM chunk_sparse WHERE collection_id = %s", (cid,))
        self._ensure_index(dimensions)
        return True

    def drop_staging(self, job_id: str) -> None:
        self._exec("DELETE FROM reembed_staging WHERE job_id = %s", (job_id,))

    # -- maintenance --------------------------------------------------------------------

    def rebuild_index(self, cid: str) -> tuple[int, str]:
        dims = self._int("SELECT dimensions FROM collections WHERE id = %s", (cid,))
        with self._conn() as conn:
            conn.execute(f"REINDEX INDEX CONCURRENTLY chunks_hnsw_{int(dims)}")
        return self.count(cid), "hnsw"

    def index_kind(self, cid: str) -> str | None:
        return "hnsw"

    # -- paging -------------------------------------------------------------------------

    def _paged(
        self,
        table: str,
        id_col: str,
        where: str,
        args: Sequence[object],
        page: PageRequest,
        convert: Any,
        select: str = "*",
    ) -> Page[Any]:
        return paged_query(
            self._one,
            self._rows,
            table,
            id_col,
            where,
            args,
            page,
            convert,
            select=select,
            ph="%s",
            tie="seq",
        )


_WORD = re.compile(r"\w+", re.UNICODE)


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL; extracted text sometimes does (PDFs, binaries)."""
    return value.replace("\x00", "") if "\x00" in value else value


def _opt_text(value: str | None) -> str | None:
    return None if value is None else _text(value)


def token_lengths(text: str, cjk: str) -> tuple[int, int]:
    """Tokens in the text and in its CJK bigram column: BM25's document lengths (the
    SQLite index counts them alike)."""
    return len(_WORD.findall(text)), len(cjk.split())


def _stems(conn: Any, words: list[str]) -> list[str]:
    row = conn.execute(
        "SELECT array(SELECT lexeme FROM unnest(to_tsvector('kb_stem', %s))) AS l",
        (" ".join(words),),
    ).fetchone()
    return [str(x) for x in row["l"]]


def _tsquery(lexemes: list[str]) -> str:
    """An OR tsquery of literal lexemes (quoted, so no operator in them is read)."""
    return " | ".join("'" + lex.replace("\\", "\\\\").replace("'", "''") + "'" for lex in lexemes)
