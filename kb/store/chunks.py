"""Chunk writes in SQLite: vectors as little-endian float32 blobs (FAISS is built from
them), lexical weights in ``chunk_sparse``, and the re-embed swap. Chunk reads are the
shared statements (kb/sql/chunks.py)."""

from __future__ import annotations

import json

import numpy as np

from kb.keywords import cjk_bigrams
from kb.sql.chunks import SqlChunks, content_hash
from kb.store.db import Database, json_list
from kb.types import ChunkRecord

__all__ = ["ChunksMixin", "content_hash"]


class ChunksMixin(SqlChunks, Database):
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
        dims = self.dimensions(cid)
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

    # -- re-embed staging ---------------------------------------------------------------

    def stage_embeddings(self, job_id: str, rows: list[tuple[int, np.ndarray]]) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO reembed_staging VALUES (?, ?, ?)",
                [(job_id, i, np.asarray(v, dtype="<f4").tobytes()) for i, v in rows],
            )

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
