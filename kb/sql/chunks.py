"""Chunk reads, chunk ownership and re-embed staging reads: the statements both backends
run alike. Writing chunks (and their vectors) is each backend's own.

Chunks are keyed by a content hash within a collection, so re-ingesting the same text is
a no-op: a chunk whose text is already stored gets one more owner (``chunk_refs``) and
leaves only with its last owner.
"""

from __future__ import annotations

import hashlib

from kb.rows import chunk_from
from kb.sql.port import SqlPort, to_int
from kb.types import ChunkView

__all__ = ["SqlChunks", "content_hash"]

_CHUNK_COLUMNS = (
    "c.id, c.collection_id, c.file_id, c.position, c.text, c.token_count, c.page, c.sheet, "
    'c."row", c.heading'
)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


class SqlChunks(SqlPort):
    def existing_hashes(self, cid: str, hashes: list[str]) -> set[str]:
        """Which of ``hashes`` the collection already holds (to skip embedding them)."""
        if not hashes:
            return set()
        return {
            str(r["content_hash"])
            for r in self.rows(
                "SELECT content_hash FROM chunks WHERE collection_id = ? AND "
                f"{self.dialect.in_list('content_hash')}",
                [cid, self.dialect.list_arg(hashes)],
            )
        }

    def chunks(self, ids: list[int]) -> dict[int, ChunkView]:
        if not ids:
            return {}
        rows = self.rows(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks c WHERE {self.dialect.in_list('c.id')}",
            [self.dialect.list_arg(ids)],
        )
        return {to_int(r["id"]): chunk_from(r) for r in rows}

    def chunk_owners(self, ids: list[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for r in self.rows(
            f"SELECT chunk_id, file_id FROM chunk_refs WHERE {self.dialect.in_list('chunk_id')} "
            f"ORDER BY {self.dialect.tie}",
            [self.dialect.list_arg(ids)],
        ):
            out.setdefault(to_int(r["chunk_id"]), []).append(str(r["file_id"]))
        return out

    def file_chunks(self, cid: str, file_id: str, after: int, limit: int) -> list[ChunkView]:
        """A file's chunks in reading order, paged by position."""
        rows = self.rows(
            "SELECT c.id, r.collection_id, r.file_id, c.position, c.text, c.token_count, "
            'c.page, c.sheet, c."row", c.heading FROM chunk_refs r JOIN chunks c '
            "ON c.id = r.chunk_id WHERE r.collection_id = ? AND r.file_id = ? "
            "AND c.position > ? ORDER BY c.position, c.id LIMIT ?",
            [cid, file_id, after, limit],
        )
        return [chunk_from(r) for r in rows]

    def count(self, cid: str) -> int:
        return self.integer("SELECT count(*) FROM chunks WHERE collection_id = ?", [cid])

    def file_usage_bytes(self, cid: str, file_id: str) -> int:
        return self.integer(
            f"SELECT coalesce(sum({self.dialect.octet_length('c.text')}), 0) FROM chunk_refs r "
            "JOIN chunks c ON c.id = r.chunk_id WHERE r.collection_id = ? AND r.file_id = ?",
            [cid, file_id],
        )

    def dimensions(self, cid: str) -> int:
        """The size of a collection's vectors (0 when there is no such collection)."""
        return self.integer("SELECT dimensions FROM collections WHERE id = ?", [cid])

    # -- re-embed staging ---------------------------------------------------------------

    def unstaged_chunks(self, cid: str, job_id: str, limit: int) -> list[tuple[int, str]]:
        return [
            (to_int(r["id"]), str(r["text"]))
            for r in self.rows(
                "SELECT id, text FROM chunks c WHERE collection_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM reembed_staging s WHERE s.job_id = ? AND s.chunk_id = c.id) "
                "ORDER BY id LIMIT ?",
                [cid, job_id, limit],
            )
        ]

    def staged_count(self, job_id: str) -> int:
        return self.integer("SELECT count(*) FROM reembed_staging WHERE job_id = ?", [job_id])

    def drop_staging(self, job_id: str) -> None:
        self.execute("DELETE FROM reembed_staging WHERE job_id = ?", [job_id])
