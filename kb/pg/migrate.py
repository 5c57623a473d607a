"""Copy a SQLite knowledge base into PostgreSQL, vectors included (no re-embedding).

Ids are kept (stores, files, chunks), so search results name the same chunks before and
after. It is resumable: every row is inserted with ``ON CONFLICT DO NOTHING`` and chunks go
in id order in batches, each its own transaction, so a second run after an interruption
continues where the first stopped. At the end the counts of every table are compared and
any difference is an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb.config import KnowledgeSettings
from kb.pg.backend import PostgresBackend
from kb.pg.chunks import pg_text, pg_vector, token_lengths
from kb.store import SqliteBackend

__all__ = ["MigrationReport", "migrate_sqlite"]

# (stage, done, total)
Progress = Callable[[str, int, int], None]
_TABLES = (
    "collections",
    "files",
    "vector_store_files",
    "file_batches",
    "jobs",
    "chunks",
    "chunk_refs",
    "chunk_sparse",
)


@dataclass(frozen=True)
class MigrationReport:
    counts: dict[str, tuple[int, int]]  # table -> (sqlite, postgres)

    @property
    def ok(self) -> bool:
        return all(a == b for a, b in self.counts.values())


def _json(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value)


def migrate_sqlite(
    directory: Path,
    dsn: str,
    settings: KnowledgeSettings | None = None,
    progress: Progress | None = None,
    batch: int = 500,
) -> MigrationReport:
    settings = settings or KnowledgeSettings()
    src = SqliteBackend(directory, settings)
    dst = PostgresBackend(dsn, settings)
    tell = progress or (lambda _s, _d, _t: None)
    try:
        _copy_rows(src, dst, tell)
        _copy_chunks(src, dst, tell, batch)
        counts = {t: (_count_sqlite(src, t), _count_pg(dst, t)) for t in _TABLES}
        return MigrationReport(counts)
    finally:
        dst.close()
        src.close()


def _count_sqlite(src: SqliteBackend, table: str) -> int:
    return src.integer(f"SELECT count(*) FROM {table}")


def _count_pg(dst: PostgresBackend, table: str) -> int:
    return dst._int(f"SELECT count(*) FROM {table}")


def _copy_rows(src: SqliteBackend, dst: PostgresBackend, tell: Progress) -> None:
    cols = src.rows("SELECT * FROM collections ORDER BY created_at, rowid")
    with dst._conn(transaction=True) as conn:
        for c in cols:
            conn.execute(
                "INSERT INTO collections (id, name, embedding_model, dimensions, metadata, "
                "created_at, expires_after, last_active_at, chunking_strategy, project) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    c["id"],
                    c["name"],
                    c["embedding_model"],
                    c["dimensions"],
                    _json(c["metadata"]) or "{}",
                    c["created_at"],
                    _json(c["expires_after"]),
                    c["last_active_at"],
                    _json(c["chunking_strategy"]),
                    c["project"],
                ),
            )
    for c in cols:
        dst._ensure_index(int(str(c["dimensions"])))
    tell("stores", len(cols), len(cols))
    files = src.rows("SELECT * FROM files ORDER BY created_at, rowid")
    for i, f in enumerate(files, start=1):
        fid = str(f["id"])
        if dst._one("SELECT 1 AS x FROM files WHERE id = %s", (fid,)) is None:
            with dst._conn(transaction=True) as conn:
                conn.execute(
                    "INSERT INTO files (id, filename, bytes, purpose, sha256, source_url, "
                    "created_at, project) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        fid,
                        f["filename"],
                        f["bytes"],
                        f["purpose"],
                        f["sha256"],
                        f["source_url"],
                        f["created_at"],
                        f["project"],
                    ),
                )
                for part, data in enumerate(src.read_file(fid, dst._part)):
                    conn.execute(
                        "INSERT INTO file_parts (file_id, part, data) VALUES (%s, %s, %s)",
                        (fid, part, data),
                    )
        tell("files", i, len(files))
    store_files = src.rows("SELECT * FROM vector_store_files ORDER BY created_at, rowid")
    with dst._conn(transaction=True) as conn:
        for v in store_files:
            conn.execute(
                "INSERT INTO vector_store_files (collection_id, file_id, status, last_error, "
                "attributes, chunking_strategy, usage_bytes, batch_id, options, attempts, "
                "created_at, updated_at, warnings) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    v["collection_id"],
                    v["file_id"],
                    v["status"],
                    _json(v["last_error"]),
                    _json(v["attributes"]) or "{}",
                    _json(v["chunking_strategy"]),
                    v["usage_bytes"],
                    v["batch_id"],
                    _json(v["options"]) or "{}",
                    v["attempts"],
                    v["created_at"],
                    v["updated_at"],
                    _json(v.get("warnings")) or "[]",
                ),
            )
        for b in src.rows("SELECT * FROM file_batches"):
            conn.execute(
                "INSERT INTO file_batches (id, collection_id, status, created_at) VALUES "
                "(%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (b["id"], b["collection_id"], b["status"], b["created_at"]),
            )
        for j in src.rows("SELECT * FROM jobs ORDER BY rowid"):
            conn.execute(
                "INSERT INTO jobs (id, kind, collection_id, status, params, progress, total, "
                "error, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "%s) ON CONFLICT DO NOTHING",
                (
                    j["id"],
                    j["kind"],
                    j["collection_id"],
                    j["status"],
                    _json(j["params"]) or "{}",
                    j["progress"],
                    j["total"],
                    j["error"],
                    j["created_at"],
                    j["updated_at"],
                ),
            )
    tell("store files", len(store_files), len(store_files))


def _copy_chunks(src: SqliteBackend, dst: PostgresBackend, tell: Progress, batch: int) -> None:
    total = src.integer("SELECT count(*) FROM chunks")
    dims = {
        str(r["id"]): int(str(r["dimensions"]))
        for r in src.rows("SELECT id, dimensions FROM collections")
    }
    done = dst._int("SELECT count(*) FROM chunks")
    last = dst._int("SELECT coalesce(max(id), 0) FROM chunks")
    tell("chunks", done, total)
    while True:
        rows = src.rows(
            "SELECT id, collection_id, file_id, position, text, token_count, page, sheet, "
            "row, heading, content_hash, cjk, embedding FROM chunks WHERE id > ? "
            "ORDER BY id LIMIT ?",
            [last, batch],
        )
        if not rows:
            break
        ids = [int(str(r["id"])) for r in rows]
        refs = src.rows(
            "SELECT chunk_id, collection_id, file_id FROM chunk_refs WHERE chunk_id "
            "IN (SELECT value FROM json_each(?)) ORDER BY rowid",
            [json.dumps(ids)],
        )
        sparse = src.rows(
            "SELECT collection_id, token, chunk_id, weight FROM chunk_sparse WHERE chunk_id "
            "IN (SELECT value FROM json_each(?))",
            [json.dumps(ids)],
        )
        with dst._conn(transaction=True) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO chunks (id, collection_id, file_id, position, text, token_count, "
                'page, sheet, "row", heading, content_hash, cjk, dims, embedding, tsv_len, '
                "cjk_tsv_len) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "%s::vector, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [_chunk_args(r, dims[str(r["collection_id"])]) for r in rows],
            )
            cur.executemany(
                "INSERT INTO chunk_refs (chunk_id, collection_id, file_id) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [(r["chunk_id"], r["collection_id"], r["file_id"]) for r in refs],
            )
            if sparse:
                cur.executemany(
                    "INSERT INTO chunk_sparse (collection_id, token, chunk_id, weight) VALUES "
                    "(%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(s["collection_id"], s["token"], s["chunk_id"], s["weight"]) for s in sparse],
                )
        last = ids[-1]
        done += len(rows)
        tell("chunks", min(done, total), total)
    # New chunks continue after the copied ids.
    with dst._conn() as conn:
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('chunks', 'id'), "
            "GREATEST((SELECT coalesce(max(id), 0) FROM chunks), 1))"
        )


def _chunk_args(r: dict[str, Any], dims: int) -> tuple[object, ...]:
    blob = r["embedding"]
    vec = np.frombuffer(blob if isinstance(blob, bytes) else b"", dtype="<f4")
    return (
        r["id"],
        r["collection_id"],
        r["file_id"],
        r["position"],
        pg_text(str(r["text"])),
        r["token_count"],
        r["page"],
        r["sheet"],
        r["row"],
        r["heading"],
        r["content_hash"],
        r["cjk"],
        dims,
        pg_vector(vec),
        *token_lengths(str(r["text"]), str(r["cjk"])),
    )
