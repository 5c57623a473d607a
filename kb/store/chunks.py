"""Chunks with their vectors, chunk ownership and re-embed staging in SQLite.

Chunks are keyed by a content hash within a collection, so re-ingesting the same text is
a no-op: a chunk whose text is already stored gets one more owner (``chunk_refs``) and
leaves only with its last owner.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from kb.rows import chunk_from
from kb.store.db import Database, json_list
from kb.store.keyword import cjk_bigrams
from kb.types import ChunkRecord, ChunkView

__all__ = ["ChunksMixin", "content_hash"]

_CHUNK_COLUMNS = (
    "id, collection_id, file_id, position, text, token_count, page, sheet, row, heading"
)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


class ChunksMixin(Database):
    def existing_hashes(self, cid: str, hashes: list[str]) -> set[str]:
        """Which of ``hashes`` the collection already holds (to skip embedding them)."""
        if not hashes:
            return set()
        return {
            str(r[0])
            for r in self.tuples(
                "SELECT content_hash FROM chunks WHERE collection_id = ? AND content_hash IN "
                "(SELECT value FROM json_each(?))",
                [cid, json_list(hashes)],
            )
        }

    def insert_chunks(
        self, cid: str, records: list[ChunkRecord], vectors: np.ndarray
    ) -> list[tuple[int, int]]:
        """Insert in one transaction; (row index, chunk id) of each *new* chunk."""
        added: list[tuple[int, int]] = []
        with self.transaction() as conn:
            for i, (rec, vec) in enumerate(zip(records, vectors, strict=True)):
                digest = content_hash(rec.text)
                cur = conn.execute(
                    "INSERT OR IGNORE INTO chunks (collection_id, file_id, position, text, "
                    "token_count, page, sheet, row, content_hash, cjk, attributes, embedding, "
                    "heading) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?)",
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
                        np.asarray(vec, dtype="<f4").tobytes(),
                        rec.heading,
                    ),
                )
                if cur.rowcount:
                    chunk_id = int(cur.lastrowid or 0)
                    added.append((i, chunk_id))
                else:
                    chunk_id = int(
                        conn.execute(
                            "SELECT id FROM chunks WHERE collection_id = ? AND content_hash = ?",
                            (cid, digest),
                        ).fetchone()[0]
                    )
                conn.execute(
                    "INSERT OR IGNORE INTO chunk_refs (chunk_id, collection_id, file_id) "
                    "VALUES (?, ?, ?)",
                    (chunk_id, cid, rec.file_id),
                )
        return added

    def insert_sparse(self, cid: str, rows: list[tuple[int, dict[int, float]]]) -> None:
        """Lexical weights of new chunks (BGE-M3's sparse head)."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO chunk_sparse (collection_id, token, chunk_id, weight) "
                "VALUES (?, ?, ?, ?)",
                [(cid, int(t), c, float(w)) for c, lex in rows for t, w in lex.items()],
            )

    def sparse_search(
        self, cid: str, query: dict[int, float], k: int, *, allowed: set[int] | None
    ) -> list[tuple[int, float]]:
        """Chunks by the dot product of their lexical weights with the query's."""
        scope = "" if allowed is None else " AND s.chunk_id IN (SELECT value FROM json_each(?))"
        params: list[object] = [json.dumps({str(t): w for t, w in query.items()}), cid]
        if allowed is not None:
            params.append(json_list(allowed))
        rows = self.tuples(
            "SELECT s.chunk_id, SUM(s.weight * q.value) AS score FROM chunk_sparse s "
            "JOIN json_each(?) q ON s.token = CAST(q.key AS INTEGER) "
            f"WHERE s.collection_id = ?{scope} GROUP BY s.chunk_id "
            "ORDER BY score DESC, s.chunk_id LIMIT ?",
            [*params, k],
        )
        return [(int(str(c)), float(str(s))) for c, s in rows]

    def remove_file_chunks(self, cid: str, file_id: str) -> list[int]:
        """Drop the file's ownership of its chunks; the ids of chunks no file owns any more
        (deleted from SQLite and both FTS indexes)."""
        with self.transaction() as conn:
            owned = [
                int(r[0])
                for r in conn.execute(
                    "SELECT chunk_id FROM chunk_refs WHERE collection_id = ? AND file_id = ?",
                    (cid, file_id),
                )
            ]
            conn.execute(
                "DELETE FROM chunk_refs WHERE collection_id = ? AND file_id = ?", (cid, file_id)
            )
            orphans: list[int] = []
            for chunk_id in owned:
                other = conn.execute(
                    "SELECT file_id FROM chunk_refs WHERE chunk_id = ? LIMIT 1", (chunk_id,)
                ).fetchone()
                if other is None:
                    orphans.append(chunk_id)
                else:
                    conn.execute(
                        "UPDATE chunks SET file_id = ? WHERE id = ? AND file_id = ?",
                        (other[0], chunk_id, file_id),
                    )
            conn.execute(
                "DELETE FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
                (json_list(orphans),),
            )
        return orphans

    def chunks(self, ids: list[int]) -> dict[int, ChunkView]:
        if not ids:
            return {}
        rows = self.rows(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
            [json_list(ids)],
        )
        return {int(r["id"]): chunk_from(r) for r in rows}  # type: ignore[call-overload]

    def chunk_owners(self, ids: list[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for chunk_id, file_id in self.tuples(
            "SELECT chunk_id, file_id FROM chunk_refs WHERE chunk_id IN "
            "(SELECT value FROM json_each(?)) ORDER BY rowid",
            [json_list(ids)],
        ):
            out.setdefault(int(str(chunk_id)), []).append(str(file_id))
        return out

    def file_chunks(self, cid: str, file_id: str, after: int, limit: int) -> list[ChunkView]:
        """A file's chunks in reading order, paged by position."""
        rows = self.rows(
            "SELECT c.id, r.collection_id, r.file_id, c.position, c.text, c.token_count, "
            "c.page, c.sheet, c.row, c.heading FROM chunk_refs r JOIN chunks c "
            "ON c.id = r.chunk_id WHERE r.collection_id = ? AND r.file_id = ? "
            "AND c.position > ? ORDER BY c.position, c.id LIMIT ?",
            [cid, file_id, after, limit],
        )
        return [chunk_from(r) for r in rows]

    def chunk_ids_of_files(self, cid: str, file_ids: set[str]) -> set[int]:
        return {
            int(str(r[0]))
            for r in self.tuples(
                "SELECT chunk_id FROM chunk_refs WHERE collection_id = ? AND file_id IN "
                "(SELECT value FROM json_each(?))",
                [cid, json_list(file_ids)],
            )
        }

    def vectors(self, cid: str, ids: set[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of a collection, or of the given chunk ids: what the FAISS index
        is built (or repaired) from."""
        dims = self.integer("SELECT dimensions FROM collections WHERE id = ?", [cid])
        if ids is None:
            rows = self.tuples(
                "SELECT id, embedding FROM chunks WHERE collection_id = ? ORDER BY id", [cid]
            )
        else:
            rows = self.tuples(
                "SELECT id, embedding FROM chunks WHERE collection_id = ? AND id IN "
                "(SELECT value FROM json_each(?)) ORDER BY id",
                [cid, json_list(sorted(ids))],
            )
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, dims), np.float32)
        mat = np.frombuffer(b"".join(r[1] for r in rows if isinstance(r[1], bytes)), dtype="<f4")
        return np.asarray([r[0] for r in rows], dtype=np.int64), mat.reshape(len(rows), dims)

    def chunk_ids(self, cid: str) -> set[int]:
        return {
            int(str(r[0]))
            for r in self.tuples("SELECT id FROM chunks WHERE collection_id = ?", [cid])
        }

    def count(self, cid: str) -> int:
        return self.integer("SELECT count(*) FROM chunks WHERE collection_id = ?", [cid])

    def file_usage_bytes(self, cid: str, file_id: str) -> int:
        return self.integer(
            "SELECT coalesce(sum(length(CAST(c.text AS BLOB))), 0) FROM chunk_refs r "
            "JOIN chunks c ON c.id = r.chunk_id WHERE r.collection_id = ? AND r.file_id = ?",
            [cid, file_id],
        )

    # -- re-embed staging ---------------------------------------------------------------

    def stage_embeddings(self, job_id: str, rows: list[tuple[int, np.ndarray]]) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO reembed_staging VALUES (?, ?, ?)",
                [(job_id, i, np.asarray(v, dtype="<f4").tobytes()) for i, v in rows],
            )

    def unstaged_chunks(self, cid: str, job_id: str, limit: int) -> list[tuple[int, str]]:
        return [
            (int(str(i)), str(t))
            for i, t in self.tuples(
                "SELECT id, text FROM chunks WHERE collection_id = ? AND id NOT IN "
                "(SELECT chunk_id FROM reembed_staging WHERE job_id = ?) ORDER BY id LIMIT ?",
                [cid, job_id, limit],
            )
        ]

    def staged_count(self, job_id: str) -> int:
        return self.integer("SELECT count(*) FROM reembed_staging WHERE job_id = ?", [job_id])

    def swap_staged_rows(self, cid: str, job_id: str, model: str, dimensions: int) -> None:
        """Move a finished re-embed into place in one transaction."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE chunks SET embedding = (SELECT s.embedding FROM reembed_staging s "
                "WHERE s.job_id = ? AND s.chunk_id = chunks.id) WHERE collection_id = ? "
                "AND id IN (SELECT chunk_id FROM reembed_staging WHERE job_id = ?)",
                (job_id, cid, job_id),
            )
            conn.execute(
                "UPDATE collections SET embedding_model = ?, dimensions = ? WHERE id = ?",
                (model, dimensions, cid),
            )
            # The old model's lexical weights mean nothing to the new one.
            conn.execute("DELETE FROM chunk_sparse WHERE collection_id = ?", (cid,))
            conn.execute("DELETE FROM reembed_staging WHERE job_id = ?", (job_id,))

    def drop_staging(self, job_id: str) -> None:
        self.execute("DELETE FROM reembed_staging WHERE job_id = ?", [job_id])
