"""Files, vector-store files (each one an ingestion job, claimed under a lease) and file
batches: the statements both backends run alike. Where a file's bytes live is each
backend's own (``add_file``, ``read_file``)."""

from __future__ import annotations

import time

from kb.rows import (
    batch_from,
    dump_json,
    file_from,
    file_state_fields,
    json_object,
    options_json,
    store_file_from,
    strategy_json,
)
from kb.sql.collections import in_project
from kb.sql.paging import paged
from kb.sql.port import SqlPort
from kb.types import Batch, FileRecord, FileStatus, LastError, Page, PageRequest, StoreFile

__all__ = ["SqlFiles"]

# A store file with what the listings show beside it.
_STORE_FILE_SELECT = (
    "v.*, (SELECT filename FROM files f WHERE f.id = v.file_id) AS filename, "
    "(SELECT bytes FROM files f WHERE f.id = v.file_id) AS bytes, "
    "(SELECT count(*) FROM chunk_refs r WHERE r.collection_id = v.collection_id "
    "AND r.file_id = v.file_id) AS chunk_count"
)


class SqlFiles(SqlPort):
    # -- file objects ---------------------------------------------------------------------

    def file(self, file_id: str) -> FileRecord | None:
        row = self.one("SELECT * FROM files WHERE id = ?", [file_id])
        return file_from(row) if row else None

    def list_files(
        self, purpose: str | None, page: PageRequest, project: str | None = None
    ) -> Page[FileRecord]:
        where, args = in_project(project)
        if purpose:
            where += " AND purpose = ?"
            args.append(purpose)
        return paged(self, "files", "id", where, args, page, file_from)

    def delete_file(self, file_id: str) -> None:
        self.execute("DELETE FROM files WHERE id = ?", [file_id])

    def stores_with_file(self, file_id: str) -> list[str]:
        return [
            str(r["collection_id"])
            for r in self.rows(
                "SELECT collection_id FROM vector_store_files WHERE file_id = ?", [file_id]
            )
        ]

    # -- vector store files ---------------------------------------------------------------

    def attach(self, sf: StoreFile) -> bool:
        """Add a file to a store as an in-progress ingestion; False if already there."""
        return bool(
            self.execute(
                self.dialect.insert_ignore(
                    "vector_store_files",
                    "collection_id, file_id, status, attributes, chunking_strategy, batch_id, "
                    "options, created_at, updated_at",
                    "?, ?, 'in_progress', ?, ?, ?, ?, ?, ?",
                ),
                [
                    sf.collection_id,
                    sf.file_id,
                    dump_json(sf.attributes),
                    dump_json(strategy_json(sf.chunking_strategy)),
                    sf.batch_id,
                    dump_json(options_json(sf.options)),
                    sf.created_at,
                    sf.updated_at,
                ],
            )
        )

    def store_file(self, cid: str, file_id: str) -> StoreFile | None:
        row = self.one(
            f"SELECT {_STORE_FILE_SELECT} FROM vector_store_files v "
            "WHERE collection_id = ? AND file_id = ?",
            [cid, file_id],
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
        where = "collection_id = ?"
        args: list[object] = [cid]
        if status:
            where += " AND status = ?"
            args.append(status)
        if batch_id:
            where += " AND batch_id = ?"
            args.append(batch_id)
        return paged(
            self,
            "vector_store_files v",
            "file_id",
            where,
            args,
            page,
            store_file_from,
            select=_STORE_FILE_SELECT,
        )

    def store_file_attributes(self, cid: str) -> list[tuple[str, dict[str, object]]]:
        """(file id, attributes) of every file of a store: what filters are applied to."""
        return [
            (str(r["file_id"]), json_object(r["attributes"]))
            for r in self.rows(
                "SELECT file_id, attributes FROM vector_store_files WHERE collection_id = ?",
                [cid],
            )
        ]

    def completed_digests(self, cid: str) -> set[str]:
        """The sha256 of every file a store holds completed (to skip unchanged files)."""
        return {
            str(r["sha256"])
            for r in self.rows(
                "SELECT f.sha256 FROM vector_store_files v JOIN files f ON f.id = v.file_id "
                "WHERE v.collection_id = ? AND v.status = 'completed'",
                [cid],
            )
        }

    def file_details(
        self, cid: str, file_ids: set[str]
    ) -> dict[str, tuple[str, dict[str, object]]]:
        """(filename, attributes) of some of a store's files (search results)."""
        rows = self.rows(
            "SELECT v.file_id, v.attributes, f.filename FROM vector_store_files v "
            "LEFT JOIN files f ON f.id = v.file_id WHERE v.collection_id = ? "
            f"AND {self.dialect.in_list('v.file_id')}",
            [cid, self.dialect.list_arg(sorted(file_ids))],
        )
        return {
            str(r["file_id"]): (str(r["filename"] or r["file_id"]), json_object(r["attributes"]))
            for r in rows
        }

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
        sets = ", ".join(f"{k} = ?" for k in fields)
        if clear_secrets:
            sets += f", options = {self.dialect.json_without('options', 'password')}"
        self.execute(
            f"UPDATE vector_store_files SET {sets} WHERE collection_id = ? AND file_id = ?",
            [*fields.values(), cid, file_id],
        )

    def set_attributes(self, cid: str, file_id: str, attributes: dict[str, object]) -> None:
        self.execute(
            "UPDATE vector_store_files SET attributes = ?, updated_at = ? "
            "WHERE collection_id = ? AND file_id = ?",
            [dump_json(attributes), int(time.time()), cid, file_id],
        )

    def set_attempts(self, cid: str, file_id: str, attempts: int) -> None:
        self.execute(
            "UPDATE vector_store_files SET attempts = ? WHERE collection_id = ? AND file_id = ?",
            [attempts, cid, file_id],
        )

    def detach(self, cid: str, file_id: str) -> None:
        self.execute(
            "DELETE FROM vector_store_files WHERE collection_id = ? AND file_id = ?", [cid, file_id]
        )

    def claim(self, owner: str, lease_s: float) -> StoreFile | None:
        """Take the oldest unclaimed (or lease-expired) ingestion, counting the attempt."""
        now = time.time()
        tie = self.dialect.tie
        rows = self.write_rows(
            "UPDATE vector_store_files SET lease_owner = ?, lease_until = ?, "
            f"attempts = attempts + 1 WHERE {tie} = (SELECT {tie} FROM vector_store_files "
            "WHERE status = 'in_progress' AND (lease_until IS NULL OR lease_until < ?) "
            f"ORDER BY created_at, {tie} LIMIT 1{self.dialect.claim_lock}) "
            "RETURNING collection_id, file_id",
            [owner, now + lease_s, now],
        )
        return (
            self.store_file(str(rows[0]["collection_id"]), str(rows[0]["file_id"]))
            if rows
            else None
        )

    def renew(self, cid: str, file_id: str, owner: str, lease_s: float) -> bool:
        """Extend a held lease; False when the job is no longer this owner's or running."""
        return bool(
            self.execute(
                "UPDATE vector_store_files SET lease_until = ? WHERE collection_id = ? "
                "AND file_id = ? AND lease_owner = ? AND status = 'in_progress'",
                [time.time() + lease_s, cid, file_id, owner],
            )
        )

    def in_progress_count(self) -> int:
        return self.integer("SELECT count(*) FROM vector_store_files WHERE status = 'in_progress'")

    # -- batches ------------------------------------------------------------------------

    def add_batch(self, batch: Batch) -> None:
        self.execute(
            "INSERT INTO file_batches (id, collection_id, status, created_at) VALUES (?, ?, ?, ?)",
            [batch.id, batch.collection_id, batch.status, batch.created_at],
        )

    def batch(self, batch_id: str) -> Batch | None:
        row = self.one("SELECT * FROM file_batches WHERE id = ?", [batch_id])
        return batch_from(row) if row else None

    def set_batch_status(self, batch_id: str, status: str) -> None:
        self.execute("UPDATE file_batches SET status = ? WHERE id = ?", [status, batch_id])

    def open_batches(self) -> list[Batch]:
        return [
            batch_from(r)
            for r in self.rows("SELECT * FROM file_batches WHERE status = 'in_progress'")
        ]
