"""Chunk writes in PostgreSQL: vectors in a ``vector`` column with their size in ``dims``
(one HNSW index per size, kb/pg/db.py), BM25 document lengths beside the generated
``tsvector`` columns, lexical weights in ``chunk_sparse``, and the re-embed swap. Every
write is one transaction, so other replicas see it complete or not at all. Chunk reads
are the shared statements (kb/sql/chunks.py)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from kb.backend import SparseVector
from kb.keywords import cjk_bigrams
from kb.pg.db import Database
from kb.pg.filters import file_scope
from kb.sql.chunks import SqlChunks, content_hash
from kb.types import ChunkRecord

__all__ = ["ChunksMixin", "pg_text", "pg_vector", "token_lengths"]

_WORD = re.compile(r"\w+", re.UNICODE)


def pg_vector(v: np.ndarray) -> str:
    """A vector as pgvector's text input."""
    return "[" + ",".join(f"{float(x):.7g}" for x in np.asarray(v, dtype=np.float32)) + "]"


def pg_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL; extracted text sometimes does (PDFs, binaries)."""
    return value.replace("\x00", "") if "\x00" in value else value


def _opt_text(value: str | None) -> str | None:
    return None if value is None else pg_text(value)


def token_lengths(text: str, cjk: str) -> tuple[int, int]:
    """Tokens in the text and in its CJK bigram column: BM25's document lengths (the
    SQLite index counts them alike)."""
    return len(_WORD.findall(text)), len(cjk.split())


class ChunksMixin(SqlChunks, Database):
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
                text = pg_text(rec.text)
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
                        pg_vector(vec),
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

    def vectors(self, cid: str, ids: set[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        dims = self.dimensions(cid)
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

    def _sparse(
        self, conn: Any, cid: str, query: SparseVector, k: int, files: list[str] | None
    ) -> list[tuple[int, float]]:
        """Chunks by the dot product of their lexical weights with the query's."""
        scope, extra = file_scope(files, "s.chunk_id")
        rows = conn.execute(
            "SELECT s.chunk_id AS id, sum(s.weight * q.w) AS score FROM chunk_sparse s "
            "JOIN unnest(%s::int[], %s::float8[]) AS q(token, w) ON s.token = q.token "
            f"WHERE s.collection_id = %s{scope} GROUP BY s.chunk_id "
            "ORDER BY score DESC, s.chunk_id LIMIT %s",
            [list(query), list(query.values()), cid, *extra, k],
        ).fetchall()
        return [(int(r["id"]), float(r["score"])) for r in rows]

    # -- re-embed staging ---------------------------------------------------------------

    def stage_embeddings(self, job_id: str, rows: list[tuple[int, np.ndarray]]) -> None:
        with self._conn(transaction=True) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO reembed_staging (job_id, chunk_id, embedding) VALUES "
                "(%s, %s, %s::vector) ON CONFLICT (job_id, chunk_id) DO UPDATE SET "
                "embedding = EXCLUDED.embedding",
                [(job_id, i, pg_vector(v)) for i, v in rows],
            )

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
