"""SQLite is the source of truth: collections, files, chunks (with their vectors), FTS5.

Keyword search runs on two FTS5 indexes kept by triggers: ``unicode61`` over the text
(words, for alphabetic scripts) and ``unicode61`` over a shadow column of overlapping CJK
character bigrams (as Lucene's CJK analyzer does), so Chinese and Japanese text, which has
no spaces between words, is searchable by keyword too. Bigrams rather than FTS5's trigram
tokenizer: most Chinese words are two characters, which a trigram index cannot match.
Chunks are keyed by a content hash within a collection, so re-ingesting the same text is a
no-op. Schema changes are numbered migrations applied in order at open.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

__all__ = ["ChunkRecord", "KnowledgeStore", "cjk_bigrams", "content_hash"]

MIGRATIONS: list[str] = [
    # 1: collections, files, chunks with their vectors, two FTS5 indexes kept by triggers.
    """
    CREATE TABLE collections (
        id TEXT PRIMARY KEY,
        name TEXT,
        embedding_model TEXT NOT NULL,
        dimensions INTEGER NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL
    );
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        file_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        text TEXT NOT NULL,
        token_count INTEGER NOT NULL,
        page INTEGER,
        sheet TEXT,
        row INTEGER,
        content_hash TEXT NOT NULL,
        cjk TEXT NOT NULL DEFAULT '',
        attributes TEXT NOT NULL DEFAULT '{}',
        embedding BLOB NOT NULL,
        UNIQUE (collection_id, content_hash)
    );
    CREATE INDEX chunks_file ON chunks(collection_id, file_id);
    CREATE VIRTUAL TABLE chunks_fts USING fts5(
        text, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    );
    CREATE VIRTUAL TABLE chunks_cjk USING fts5(
        cjk, content='chunks', content_rowid='id', tokenize='unicode61'
    );
    CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
        INSERT INTO chunks_cjk(rowid, cjk) VALUES (new.id, new.cjk);
    END;
    CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO chunks_cjk(chunks_cjk, rowid, cjk) VALUES ('delete', old.id, old.cjk);
    END;
    """,
    # 2: files, vector store files (each one an ingestion job), file batches, jobs, and
    # chunk ownership: a chunk deduplicated across files is owned by each of them.
    """
    ALTER TABLE collections ADD COLUMN expires_after TEXT;
    ALTER TABLE collections ADD COLUMN last_active_at INTEGER;
    ALTER TABLE collections ADD COLUMN chunking_strategy TEXT;
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        filename TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        purpose TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        path TEXT NOT NULL,
        source_url TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE vector_store_files (
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        file_id TEXT NOT NULL,
        status TEXT NOT NULL,
        last_error TEXT,
        attributes TEXT NOT NULL DEFAULT '{}',
        chunking_strategy TEXT NOT NULL,
        usage_bytes INTEGER NOT NULL DEFAULT 0,
        batch_id TEXT,
        options TEXT NOT NULL DEFAULT '{}',
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (collection_id, file_id)
    );
    CREATE INDEX vsf_status ON vector_store_files(status);
    CREATE INDEX vsf_batch ON vector_store_files(batch_id);
    CREATE TABLE file_batches (
        id TEXT PRIMARY KEY,
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        collection_id TEXT NOT NULL,
        status TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        progress INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE reembed_staging (
        job_id TEXT NOT NULL,
        chunk_id INTEGER NOT NULL,
        embedding BLOB NOT NULL,
        PRIMARY KEY (job_id, chunk_id)
    );
    CREATE TABLE chunk_refs (
        chunk_id INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
        collection_id TEXT NOT NULL,
        file_id TEXT NOT NULL,
        PRIMARY KEY (chunk_id, file_id)
    );
    CREATE INDEX chunk_refs_file ON chunk_refs(collection_id, file_id);
    INSERT INTO chunk_refs (chunk_id, collection_id, file_id)
        SELECT id, collection_id, file_id FROM chunks;
    """,
]

_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
_TOKEN = re.compile(r"\w+", re.UNICODE)


# Function words carry no topic; matching on them lets BM25 rank a chunk for "until" or
# "my". Only the query side drops them (documents are indexed whole).
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
    ]
)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


@dataclass(slots=True)
class ChunkRecord:
    file_id: str
    position: int
    text: str
    token_count: int
    page: int | None = None
    sheet: str | None = None
    row: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


class KnowledgeStore:
    """One SQLite file (WAL). Safe to share across threads: writes are serialised."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._migrate()

    # The writer connection above is used only under ``_lock``; reads go through one
    # connection per thread, so searches run concurrently with an ingestion's write
    # transaction (WAL) and never see a half-written batch.
    def _read(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        cur = self._read().execute(sql, tuple(args))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def open_batches(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM file_batches WHERE status = 'in_progress'")

    def _migrate(self) -> None:
        with self._lock:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations "
                "(id INTEGER PRIMARY KEY, applied_at INTEGER)"
            )
            done = {r[0] for r in self.conn.execute("SELECT id FROM _migrations")}
            for number, sql in enumerate(MIGRATIONS, start=1):
                if number in done:
                    continue
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _statements(sql):
                        self.conn.execute(statement)
                    self.conn.execute(
                        "INSERT INTO _migrations VALUES (?, ?)", (number, int(time.time()))
                    )
                    self.conn.execute("COMMIT")
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise

    def close(self) -> None:
        with self._lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
            self.conn.close()
        self._local = threading.local()

    # -- collections ---------------------------------------------------------------------

    def create_collection(
        self,
        cid: str,
        name: str | None,
        embedding_model: str,
        dimensions: int,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            self.db.table("collections").insert(
                {
                    "id": cid,
                    "name": name,
                    "embedding_model": embedding_model,
                    "dimensions": dimensions,
                    "metadata": json.dumps(metadata or {}),
                    "created_at": int(time.time()),
                }
            )

    def collection(self, cid: str) -> dict[str, Any] | None:
        rows = list(self._rows("SELECT * FROM collections WHERE id = ?", [cid]))
        return rows[0] if rows else None

    def delete_collection(self, cid: str) -> None:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("DELETE FROM chunks WHERE collection_id = ?", (cid,))
            self.conn.execute("DELETE FROM collections WHERE id = ?", (cid,))
            self.conn.execute("COMMIT")

    # -- files, vector store files, batches, jobs ---------------------------------------

    def add_file(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.db.table("files").insert(row)

    def file(self, file_id: str) -> dict[str, Any] | None:
        rows = list(self._rows("SELECT * FROM files WHERE id = ?", [file_id]))
        return rows[0] if rows else None

    def list_files(self, purpose: str | None = None) -> list[dict[str, Any]]:
        if purpose:
            return list(
                self._rows(
                    "SELECT * FROM files WHERE purpose = ? ORDER BY created_at, rowid", [purpose]
                )
            )
        return list(self._rows("SELECT * FROM files ORDER BY created_at, rowid"))

    def delete_file(self, file_id: str) -> None:
        with self._lock:
            self.conn.execute("DELETE FROM files WHERE id = ?", (file_id,))

    def stores_with_file(self, file_id: str) -> list[str]:
        return [
            r[0]
            for r in self._read().execute(
                "SELECT collection_id FROM vector_store_files WHERE file_id = ?", (file_id,)
            )
        ]

    def list_collections(self) -> list[dict[str, Any]]:
        return list(self._rows("SELECT * FROM collections ORDER BY created_at, rowid"))

    def update_collection(self, cid: str, **fields: Any) -> None:
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self.conn.execute(
                f"UPDATE collections SET {sets} WHERE id = ?", (*fields.values(), cid)
            )

    def attach_file(
        self,
        cid: str,
        file_id: str,
        *,
        attributes: dict[str, Any],
        chunking_strategy: dict[str, Any],
        batch_id: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> bool:
        """Add a file to a collection as an in-progress ingestion; False if already there."""
        now = int(time.time())
        with self._lock:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO vector_store_files (collection_id, file_id, status, "
                "attributes, chunking_strategy, batch_id, options, created_at, updated_at) "
                "VALUES (?, ?, 'in_progress', ?, ?, ?, ?, ?, ?)",
                (
                    cid,
                    file_id,
                    json.dumps(attributes),
                    json.dumps(chunking_strategy),
                    batch_id,
                    json.dumps(options or {}),
                    now,
                    now,
                ),
            )
            return bool(cur.rowcount)

    def store_file(self, cid: str, file_id: str) -> dict[str, Any] | None:
        rows = list(
            self._rows(
                "SELECT * FROM vector_store_files WHERE collection_id = ? AND file_id = ?",
                [cid, file_id],
            )
        )
        return _decode_vsf(rows[0]) if rows else None

    def store_files(
        self, cid: str, *, status: str | None = None, batch_id: str | None = None
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM vector_store_files WHERE collection_id = ?"
        args: list[Any] = [cid]
        if status:
            sql += " AND status = ?"
            args.append(status)
        if batch_id:
            sql += " AND batch_id = ?"
            args.append(batch_id)
        return [_decode_vsf(r) for r in self._rows(sql + " ORDER BY created_at, rowid", args)]

    def store_file_details(self, cid: str, file_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Filename and attributes of some of a collection's files (search results)."""
        rows = self._rows(
            "SELECT v.file_id, v.attributes, f.filename FROM vector_store_files v "
            "LEFT JOIN files f ON f.id = v.file_id WHERE v.collection_id = ? "
            "AND v.file_id IN (SELECT value FROM json_each(?))",
            [cid, json.dumps(sorted(file_ids))],
        )
        return {
            r["file_id"]: {"filename": r["filename"], "attributes": json.loads(r["attributes"])}
            for r in rows
        }

    def pending_files(self) -> list[dict[str, Any]]:
        return [
            _decode_vsf(r)
            for r in self._rows(
                "SELECT * FROM vector_store_files WHERE status = 'in_progress' "
                "ORDER BY created_at, rowid"
            )
        ]

    def update_store_file(self, cid: str, file_id: str, **fields: Any) -> None:
        for key in ("last_error", "attributes"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        fields["updated_at"] = int(time.time())
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self.conn.execute(
                f"UPDATE vector_store_files SET {sets} WHERE collection_id = ? AND file_id = ?",
                (*fields.values(), cid, file_id),
            )

    def detach_file(self, cid: str, file_id: str) -> None:
        with self._lock:
            self.conn.execute(
                "DELETE FROM vector_store_files WHERE collection_id = ? AND file_id = ?",
                (cid, file_id),
            )

    def file_counts(self, cid: str, batch_id: str | None = None) -> dict[str, int]:
        counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
        sql = "SELECT status, count(*) FROM vector_store_files WHERE collection_id = ?"
        args: list[Any] = [cid]
        if batch_id:
            sql += " AND batch_id = ?"
            args.append(batch_id)
        for status, n in self._read().execute(sql + " GROUP BY status", args):
            counts[status] = int(n)
        counts["total"] = sum(counts.values())
        return counts

    def usage_bytes(self, cid: str) -> int:
        row = (
            self._read()
            .execute(
                "SELECT coalesce(sum(usage_bytes), 0) FROM vector_store_files "
                "WHERE collection_id = ?",
                (cid,),
            )
            .fetchone()
        )
        return int(row[0])

    def file_usage_bytes(self, cid: str, file_id: str) -> int:
        row = (
            self._read()
            .execute(
                "SELECT coalesce(sum(length(CAST(c.text AS BLOB))), 0) FROM chunk_refs r "
                "JOIN chunks c ON c.id = r.chunk_id WHERE r.collection_id = ? AND r.file_id = ?",
                (cid, file_id),
            )
            .fetchone()
        )
        return int(row[0])

    def add_batch(self, batch_id: str, cid: str) -> None:
        with self._lock:
            self.db.table("file_batches").insert(
                {
                    "id": batch_id,
                    "collection_id": cid,
                    "status": "in_progress",
                    "created_at": int(time.time()),
                }
            )

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        rows = list(self._rows("SELECT * FROM file_batches WHERE id = ?", [batch_id]))
        return rows[0] if rows else None

    def set_batch_status(self, batch_id: str, status: str) -> None:
        with self._lock:
            self.conn.execute("UPDATE file_batches SET status = ? WHERE id = ?", (status, batch_id))

    def add_job(self, job_id: str, kind: str, cid: str, params: dict[str, Any]) -> None:
        now = int(time.time())
        with self._lock:
            self.db.table("jobs").insert(
                {
                    "id": job_id,
                    "kind": kind,
                    "collection_id": cid,
                    "status": "in_progress",
                    "params": json.dumps(params),
                    "created_at": now,
                    "updated_at": now,
                }
            )

    def job(self, job_id: str) -> dict[str, Any] | None:
        rows = list(self._rows("SELECT * FROM jobs WHERE id = ?", [job_id]))
        if not rows:
            return None
        return {**rows[0], "params": json.loads(rows[0]["params"])}

    def jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM jobs" + (" WHERE status = ?" if status else "") + " ORDER BY rowid"
        return [
            {**r, "params": json.loads(r["params"])}
            for r in self._rows(sql, [status] if status else [])
        ]

    def update_job(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = int(time.time())
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self.conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))

    # -- chunks --------------------------------------------------------------------------

    def add_chunks(
        self, cid: str, records: list[ChunkRecord], vectors: np.ndarray
    ) -> list[tuple[int, int]]:
        """Insert in one transaction; returns (row index, chunk id) of each *new* chunk.

        A chunk whose text already exists in the collection is not stored twice: the file
        becomes one more owner of the existing chunk (dedupe)."""
        added: list[tuple[int, int]] = []
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for i, (rec, vec) in enumerate(zip(records, vectors, strict=True)):
                    digest = content_hash(rec.text)
                    cur = self.conn.execute(
                        "INSERT OR IGNORE INTO chunks (collection_id, file_id, position, text, "
                        "token_count, page, sheet, row, content_hash, cjk, attributes, embedding) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            cid,
                            rec.file_id,
                            rec.position,
                            rec.text,
                            rec.token_count,
                            rec.page,
                            rec.sheet,
                            rec.row,
                            digest,
                            cjk_bigrams(rec.text),
                            json.dumps(rec.attributes),
                            np.asarray(vec, dtype="<f4").tobytes(),
                        ),
                    )
                    if cur.rowcount:
                        chunk_id = int(cur.lastrowid or 0)
                        added.append((i, chunk_id))
                    else:
                        chunk_id = int(
                            self.conn.execute(
                                "SELECT id FROM chunks WHERE collection_id = ? "
                                "AND content_hash = ?",
                                (cid, digest),
                            ).fetchone()[0]
                        )
                    self.conn.execute(
                        "INSERT OR IGNORE INTO chunk_refs (chunk_id, collection_id, file_id) "
                        "VALUES (?, ?, ?)",
                        (chunk_id, cid, rec.file_id),
                    )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return added

    def existing_hashes(self, cid: str, hashes: list[str]) -> set[str]:
        """Which of ``hashes`` the collection already holds (to skip embedding them)."""
        if not hashes:
            return set()
        rows = self._read().execute(
            "SELECT content_hash FROM chunks WHERE collection_id = ? AND content_hash IN "
            "(SELECT value FROM json_each(?))",
            (cid, json.dumps(hashes)),
        )
        return {r[0] for r in rows}

    def delete_file_chunks(self, cid: str, file_id: str) -> list[int]:
        """Drop the file's ownership of its chunks; returns the ids of chunks no file owns
        any more (deleted from SQLite and both FTS indexes)."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                owned = [
                    r[0]
                    for r in self.conn.execute(
                        "SELECT chunk_id FROM chunk_refs WHERE collection_id = ? AND file_id = ?",
                        (cid, file_id),
                    )
                ]
                self.conn.execute(
                    "DELETE FROM chunk_refs WHERE collection_id = ? AND file_id = ?",
                    (cid, file_id),
                )
                orphans: list[int] = []
                for chunk_id in owned:
                    other = self.conn.execute(
                        "SELECT file_id FROM chunk_refs WHERE chunk_id = ? LIMIT 1", (chunk_id,)
                    ).fetchone()
                    if other is None:
                        orphans.append(chunk_id)
                    else:
                        self.conn.execute(
                            "UPDATE chunks SET file_id = ? WHERE id = ? AND file_id = ?",
                            (other[0], chunk_id, file_id),
                        )
                self.conn.execute(
                    "DELETE FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps(orphans),),
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return orphans

    def chunks(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        ids = list(ids)
        if not ids:
            return {}
        rows = self._rows(
            "SELECT id, collection_id, file_id, position, text, token_count, page, sheet, row, "
            "attributes FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
            [json.dumps(ids)],
        )
        return {r["id"]: {**r, "attributes": json.loads(r["attributes"])} for r in rows}

    def chunk_owners(self, ids: Iterable[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for chunk_id, file_id in self._read().execute(
            "SELECT chunk_id, file_id FROM chunk_refs WHERE chunk_id IN "
            "(SELECT value FROM json_each(?)) ORDER BY rowid",
            (json.dumps(list(ids)),),
        ):
            out.setdefault(int(chunk_id), []).append(file_id)
        return out

    def file_chunks(
        self, cid: str, file_id: str, *, after: int = -1, limit: int = 100
    ) -> list[dict[str, Any]]:
        """A file's chunks in reading order (position), paged by position."""
        rows = self._rows(
            "SELECT c.id, c.position, c.text, c.token_count, c.page, c.sheet, c.row "
            "FROM chunk_refs r JOIN chunks c ON c.id = r.chunk_id "
            "WHERE r.collection_id = ? AND r.file_id = ? AND c.position > ? "
            "ORDER BY c.position, c.id LIMIT ?",
            [cid, file_id, after, limit],
        )
        return list(rows)

    def chunk_ids_of_files(self, cid: str, file_ids: Iterable[str]) -> set[int]:
        return {
            int(r[0])
            for r in self._read().execute(
                "SELECT chunk_id FROM chunk_refs WHERE collection_id = ? AND file_id IN "
                "(SELECT value FROM json_each(?))",
                (cid, json.dumps(list(file_ids))),
            )
        }

    def vectors(self, cid: str, ids: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of a collection, or of the given chunk ids: what the FAISS index
        is built (or repaired) from."""
        col = self.collection(cid)
        dims = int(col["dimensions"]) if col else 0
        out_ids: list[int] = []
        blobs: list[bytes] = []
        if ids is None:
            cursor = self._read().execute(
                "SELECT id, embedding FROM chunks WHERE collection_id = ? ORDER BY id", (cid,)
            )
        else:
            cursor = self._read().execute(
                "SELECT id, embedding FROM chunks WHERE collection_id = ? AND id IN "
                "(SELECT value FROM json_each(?)) ORDER BY id",
                (cid, json.dumps(sorted(ids))),
            )
        for chunk_id, blob in cursor:
            out_ids.append(chunk_id)
            blobs.append(blob)
        if not out_ids:
            return np.zeros(0, np.int64), np.zeros((0, dims), np.float32)
        mat = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(out_ids), dims)
        return np.asarray(out_ids, dtype=np.int64), mat

    def chunk_ids(self, cid: str) -> set[int]:
        return {
            r[0]
            for r in self._read().execute("SELECT id FROM chunks WHERE collection_id = ?", (cid,))
        }

    def count(self, cid: str) -> int:
        return int(
            self._read()
            .execute("SELECT count(*) FROM chunks WHERE collection_id = ?", (cid,))
            .fetchone()[0]
        )

    def stage_embeddings(self, job_id: str, rows: list[tuple[int, np.ndarray]]) -> None:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(
                    "INSERT OR REPLACE INTO reembed_staging VALUES (?, ?, ?)",
                    [(job_id, i, np.asarray(v, dtype="<f4").tobytes()) for i, v in rows],
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def unstaged_chunks(self, cid: str, job_id: str, limit: int) -> list[tuple[int, str]]:
        return [
            (int(i), t)
            for i, t in self._read().execute(
                "SELECT id, text FROM chunks WHERE collection_id = ? AND id NOT IN "
                "(SELECT chunk_id FROM reembed_staging WHERE job_id = ?) ORDER BY id LIMIT ?",
                (cid, job_id, limit),
            )
        ]

    def staged_count(self, job_id: str) -> int:
        return int(
            self._read()
            .execute("SELECT count(*) FROM reembed_staging WHERE job_id = ?", (job_id,))
            .fetchone()[0]
        )

    def swap_staged(self, cid: str, job_id: str, model: str, dimensions: int) -> None:
        """Move a finished re-embed into place in one transaction."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute(
                    "UPDATE chunks SET embedding = (SELECT s.embedding FROM reembed_staging s "
                    "WHERE s.job_id = ? AND s.chunk_id = chunks.id) WHERE collection_id = ? "
                    "AND id IN (SELECT chunk_id FROM reembed_staging WHERE job_id = ?)",
                    (job_id, cid, job_id),
                )
                self.conn.execute(
                    "UPDATE collections SET embedding_model = ?, dimensions = ? WHERE id = ?",
                    (model, dimensions, cid),
                )
                self.conn.execute("DELETE FROM reembed_staging WHERE job_id = ?", (job_id,))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def drop_staging(self, job_id: str) -> None:
        with self._lock:
            self.conn.execute("DELETE FROM reembed_staging WHERE job_id = ?", (job_id,))

    # -- keyword search ------------------------------------------------------------------

    def _fts(
        self, table: str, match: str, cid: str, k: int, allowed: set[int] | None
    ) -> list[tuple[int, float]]:
        """Top ``k`` (chunk id, BM25) of one FTS index within a collection.

        Fast path: FTS5's own ``ORDER BY rank`` over the whole index (no join while it
        scores), oversampled, then filtered to the collection; when the filter leaves
        too few, the exact join query runs instead (many collections, narrow filters)."""
        conn = self._read()
        limit = max(4 * k, 64)
        top = conn.execute(
            f"SELECT rowid, rank FROM {table} WHERE {table} MATCH ? ORDER BY rank LIMIT ?",
            (match, limit),
        ).fetchall()
        if top:
            owners = dict(
                conn.execute(
                    "SELECT id, collection_id FROM chunks WHERE id IN "
                    "(SELECT value FROM json_each(?))",
                    (json.dumps([r for r, _ in top]),),
                ).fetchall()
            )
            kept = [
                (int(r), -float(rank))
                for r, rank in top
                if owners.get(r) == cid and (allowed is None or r in allowed)
            ]
            if len(kept) >= k or len(top) < limit:
                return kept[:k]
        only = "" if allowed is None else " AND c.id IN (SELECT value FROM json_each(?))"
        extra: tuple[Any, ...] = () if allowed is None else (json.dumps(sorted(allowed)),)
        return [
            (int(r), -float(rank))
            for r, rank in conn.execute(
                f"SELECT c.id, bm25({table}) FROM {table} "
                f"JOIN chunks c ON c.id = {table}.rowid WHERE {table} MATCH ? "
                f"AND c.collection_id = ?{only} ORDER BY bm25({table}) LIMIT ?",
                (match, cid, *extra, k),
            )
        ]

    def keyword_search(
        self, cid: str, query: str, k: int, *, allowed: set[int] | None = None
    ) -> list[tuple[int, float]]:
        """BM25 over words and, for CJK text, over character bigrams; ``allowed`` limits
        the chunks considered (a filter).

        Returns (chunk id, score) with higher = better."""
        if allowed is not None and not allowed:
            return []
        tokens = _TOKEN.findall(query)
        words = [w for w in tokens if w.lower() not in STOPWORDS] or tokens
        if not words:
            return []
        results: dict[int, float] = {}
        word_match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        for chunk_id, score in self._fts("chunks_fts", word_match, cid, k, allowed):
            results[chunk_id] = score
        grams = cjk_bigrams(query).split()
        if grams:
            cjk_match = " OR ".join('"' + g + '"' for g in dict.fromkeys(grams))
            for chunk_id, score in self._fts("chunks_cjk", cjk_match, cid, k, allowed):
                results[chunk_id] = max(results.get(chunk_id, float("-inf")), score)
        return sorted(results.items(), key=lambda kv: -kv[1])[:k]


def cjk_bigrams(text: str) -> str:
    """Overlapping character bigrams of each CJK run, space-separated ("熊猫吃" -> "熊猫 猫吃");
    a lone CJK character stands for itself."""
    grams: list[str] = []
    for run in _CJK_RUN.findall(text):
        grams.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
    return " ".join(grams)


def _decode_vsf(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "attributes": json.loads(row["attributes"] or "{}"),
        "chunking_strategy": json.loads(row["chunking_strategy"] or "{}"),
        "last_error": json.loads(row["last_error"]) if row["last_error"] else None,
        "options": json.loads(row.get("options") or "{}"),
    }


def _statements(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    out: list[str] = []
    buf: list[str] = []
    for line in script.strip().splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined.endswith(";") and sqlite3.complete_statement(joined):
            out.append(joined)
            buf = []
    if "\n".join(buf).strip():
        out.append("\n".join(buf).strip())
    return out
