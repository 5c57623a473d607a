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
        self._migrate()

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
        self.conn.close()

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
        rows = list(self.db.query("SELECT * FROM collections WHERE id = ?", [cid]))
        return rows[0] if rows else None

    def delete_collection(self, cid: str) -> None:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("DELETE FROM chunks WHERE collection_id = ?", (cid,))
            self.conn.execute("DELETE FROM collections WHERE id = ?", (cid,))
            self.conn.execute("COMMIT")

    # -- chunks --------------------------------------------------------------------------

    def add_chunks(
        self, cid: str, records: list[ChunkRecord], vectors: np.ndarray
    ) -> list[tuple[int, int]]:
        """Insert in one transaction; returns (row index, chunk id) of each *new* chunk.

        A chunk whose text already exists in the collection is skipped (dedupe)."""
        added: list[tuple[int, int]] = []
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for i, (rec, vec) in enumerate(zip(records, vectors, strict=True)):
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
                            content_hash(rec.text),
                            cjk_bigrams(rec.text),
                            json.dumps(rec.attributes),
                            np.asarray(vec, dtype="<f4").tobytes(),
                        ),
                    )
                    if cur.rowcount:
                        added.append((i, int(cur.lastrowid or 0)))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return added

    def delete_file_chunks(self, cid: str, file_id: str) -> list[int]:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            ids = [
                r[0]
                for r in self.conn.execute(
                    "SELECT id FROM chunks WHERE collection_id = ? AND file_id = ?", (cid, file_id)
                )
            ]
            self.conn.execute(
                "DELETE FROM chunks WHERE collection_id = ? AND file_id = ?", (cid, file_id)
            )
            self.conn.execute("COMMIT")
        return ids

    def chunks(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        ids = list(ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.query(
            f"SELECT id, collection_id, file_id, position, text, token_count, page, sheet, row, "
            f"attributes FROM chunks WHERE id IN ({marks})",
            ids,
        )
        return {r["id"]: {**r, "attributes": json.loads(r["attributes"])} for r in rows}

    def vectors(self, cid: str) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) of a collection: what the FAISS index is rebuilt from."""
        col = self.collection(cid)
        dims = int(col["dimensions"]) if col else 0
        ids: list[int] = []
        blobs: list[bytes] = []
        for chunk_id, blob in self.conn.execute(
            "SELECT id, embedding FROM chunks WHERE collection_id = ? ORDER BY id", (cid,)
        ):
            ids.append(chunk_id)
            blobs.append(blob)
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, dims), np.float32)
        mat = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), dims)
        return np.asarray(ids, dtype=np.int64), mat

    def chunk_ids(self, cid: str) -> set[int]:
        return {
            r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE collection_id = ?", (cid,))
        }

    def count(self, cid: str) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM chunks WHERE collection_id = ?", (cid,)
            ).fetchone()[0]
        )

    # -- keyword search ------------------------------------------------------------------

    def keyword_search(self, cid: str, query: str, k: int) -> list[tuple[int, float]]:
        """BM25 over words and, for CJK text, over character bigrams.

        Returns (chunk id, score) with higher = better."""
        tokens = _TOKEN.findall(query)
        words = [w for w in tokens if w.lower() not in STOPWORDS] or tokens
        if not words:
            return []
        results: dict[int, float] = {}
        word_match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        for chunk_id, rank in self.conn.execute(
            "SELECT c.id, bm25(chunks_fts) FROM chunks_fts "
            "JOIN chunks c ON c.id = chunks_fts.rowid WHERE chunks_fts MATCH ? "
            "AND c.collection_id = ? ORDER BY bm25(chunks_fts) LIMIT ?",
            (word_match, cid, k),
        ):
            results[int(chunk_id)] = -float(rank)
        grams = cjk_bigrams(query).split()
        if grams:
            cjk_match = " OR ".join('"' + g + '"' for g in dict.fromkeys(grams))
            for chunk_id, rank in self.conn.execute(
                "SELECT c.id, bm25(chunks_cjk) FROM chunks_cjk "
                "JOIN chunks c ON c.id = chunks_cjk.rowid WHERE chunks_cjk MATCH ? "
                "AND c.collection_id = ? ORDER BY bm25(chunks_cjk) LIMIT ?",
                (cjk_match, cid, k),
            ):
                cid_ = int(chunk_id)
                results[cid_] = max(results.get(cid_, float("-inf")), -float(rank))
        return sorted(results.items(), key=lambda kv: -kv[1])[:k]


def cjk_bigrams(text: str) -> str:
    """Overlapping character bigrams of each CJK run, space-separated ("熊猫吃" -> "熊猫 猫吃");
    a lone CJK character stands for itself."""
    grams: list[str] = []
    for run in _CJK_RUN.findall(text):
        grams.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
    return " ".join(grams)


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
