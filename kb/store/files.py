"""Files, vector-store files (each one an ingestion job) and file batches in SQLite.

Uploaded bytes live beside the database (``files/<id>``), written by streaming into a
``.part`` file and renamed into place once complete.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from kb.rows import (
    batch_from,
    file_from,
    file_state_fields,
    options_json,
    store_file_from,
    strategy_json,
)
from kb.store.db import Database
from kb.store.paging import paged
from kb.types import Batch, FileRecord, FileStatus, LastError, Page, PageRequest, StoreFile

__all__ = ["FilesMixin"]

# A store file with what the listings show beside it.
_STORE_FILE_SELECT = (
    "v.*, (SELECT filename FROM files f WHERE f.id = v.file_id) AS filename, "
    "(SELECT bytes FROM files f WHERE f.id = v.file_id) AS bytes, "
    "(SELECT count(*) FROM chunk_refs r WHERE r.collection_id = v.collection_id "
    "AND r.file_id = v.file_id) AS chunk_count"
)


class FilesMixin(Database):
    files_dir: Path

    # -- file objects ---------------------------------------------------------------------

    def upload_path(self, file_id: str) -> Path:
        self.files_dir.mkdir(parents=True, exist_ok=True)
        return self.files_dir / f"{file_id}.part"

    def add_file(self, record: FileRecord, source: Path) -> None:
        target = self.files_dir / record.id
        if source.parent == self.files_dir:
            os.replace(source, target)
        else:
            target.write_bytes(source.read_bytes())
        self.execute(
            "INSERT INTO files (id, filename, bytes, purpose, sha256, path, source_url, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                record.id,
                record.filename,
                record.bytes,
                record.purpose,
                record.sha256,
                str(target),
                record.source_url,
                record.created_at,
            ],
        )

    def file(self, file_id: str) -> FileRecord | None:
        row = self.one("SELECT * FROM files WHERE id = ?", [file_id])
        return file_from(row) if row else None

    def list_files(self, purpose: str | None, page: PageRequest) -> Page[FileRecord]:
        where, args = ("purpose = ?", [purpose]) if purpose else ("1 = 1", [])
        return paged(self, "files", "id", where, args, page, file_from)

    def file_path(self, file_id: str) -> Path | None:
        row = self.one("SELECT path FROM files WHERE id = ?", [file_id])
        path = Path(str(row["path"])) if row else None
        return path if path is not None and path.exists() else None

    def read_file(self, file_id: str, block: int = 1 << 20) -> Iterator[bytes]:
        path = self.file_path(file_id)
        if path is None:
            return
        with open(path, "rb") as fh:
            yield from iter(lambda: fh.read(block), b"")

    def delete_file(self, file_id: str) -> None:
        path = self.file_path(file_id)
        self.execute("DELETE FROM files WHERE id = ?", [file_id])
        if path is not None:
            path.unlink(missing_ok=True)

    def stores_with_file(self, file_id: str) -> list[str]:
        return [
            str(r[0])
            for r in self.tuples(
                "SELECT collection_id FROM vector_store_files WHERE file_id = ?", [file_id]
            )
        ]

    # -- vector store files ---------------------------------------------------------------

    def attach(self, sf: StoreFile) -> bool:
        """Add a file to a store as an in-progress ingestion; False if already there."""
        return bool(
            self.execute(
                "INSERT OR IGNORE INTO vector_store_files (collection_id, file_id, status, "
                "attributes, chunking_strategy, batch_id, options, created_at, updated_at) "
                "VALUES (?, ?, 'in_progress', ?, ?, ?, ?, ?, ?)",
                [
                    sf.collection_id,
                    sf.file_id,
                    json.dumps(sf.attributes),
                    json.dumps(strategy_json(sf.chunking_strategy)),
                    sf.batch_id,
                    json.dumps(options_json(sf.options)),
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
            (str(fid), json.loads(str(attrs)))
            for fid, attrs in self.tuples(
                "SELECT file_id, attributes FROM vector_store_files WHERE collection_id = ?",
                [cid],
            )
        ]

    def completed_digests(self, cid: str) -> set[str]:
        """The sha256 of every file a store holds completed (to skip unchanged files)."""
        return {
            str(r[0])
            for r in self.tuples(
                "SELECT f.sha256 FROM vector_store_files v JOIN files f ON f.id = v.file_id "
                "WHERE v.collection_id = ? AND v.status = 'completed'",
                [cid],
            )
        }

    def file_details(
        self, cid: str, file_ids: set[str]
    ) -> dict[str, tuple[str, dict[str, object]]]:
        """(filename, attributes) of some of a store's files (search results)."""
        rows = self.tuples(
            "SELECT v.file_id, v.attributes, f.filename FROM vector_store_files v "
            "LEFT JOIN files f ON f.id = v.file_id WHERE v.collection_id = ? "
            "AND v.file_id IN (SELECT value FROM json_each(?))",
            [cid, json.dumps(sorted(file_ids))],
        )
        return {str(fid): (str(name or fid), json.loads(str(attrs))) for fid, attrs, name in rows}

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
            sets += ", options = json_remove(options, '$.password')"
        self.execute(
            f"UPDATE vector_store_files SET {sets} WHERE collection_id = ? AND file_id = ?",
            [*fields.values(), cid, file_id],
        )

    def set_attributes(self, cid: str, file_id: str, attributes: dict[str, object]) -> None:
        self.execute(
            "UPDATE vector_store_files SET attributes = ?, updated_at = ? "
            "WHERE collection_id = ? AND file_id = ?",
            [json.dumps(attributes), int(time.time()), cid, file_id],
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
        rows = self.write_rows(
            "UPDATE vector_store_files SET lease_owner = ?, lease_until = ?, "
            "attempts = attempts + 1 WHERE rowid = (SELECT rowid FROM vector_store_files "
            "WHERE status = 'in_progress' AND (lease_until IS NULL OR lease_until < ?) "
            "ORDER BY created_at, rowid LIMIT 1) RETURNING collection_id, file_id",
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

    def release_leases(self) -> None:
        """One process owns a SQLite knowledge base: leases left by a previous run are dead."""
        self.execute(
            "UPDATE vector_store_files SET lease_owner = NULL, lease_until = NULL "
            "WHERE lease_owner IS NOT NULL"
        )

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
