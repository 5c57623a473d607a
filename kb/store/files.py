"""Files in SQLite: uploaded bytes live beside the database (``files/<id>``), written by
streaming into a ``.part`` file and renamed into place once complete. The rows, store
files and batches are the shared statements (kb/sql/files.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from kb.sql.files import SqlFiles
from kb.store.db import Database
from kb.types import FileRecord

__all__ = ["FilesMixin"]


class FilesMixin(SqlFiles, Database):
    files_dir: Path

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
            "created_at, project) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                record.id,
                record.filename,
                record.bytes,
                record.purpose,
                record.sha256,
                str(target),
                record.source_url,
                record.created_at,
                record.project,
            ],
        )

    def replace_file(self, record: FileRecord, source: Path) -> None:
        target = self.files_dir / record.id
        os.replace(source, target)
        self.execute(
            "UPDATE files SET filename = ?, bytes = ?, sha256 = ?, path = ? WHERE id = ?",
            [record.filename, record.bytes, record.sha256, str(target), record.id],
        )

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
        super().delete_file(file_id)
        if path is not None:
            path.unlink(missing_ok=True)

    def release_leases(self) -> None:
        """One process owns a SQLite knowledge base: leases left by a previous run are dead."""
        self.execute(
            "UPDATE vector_store_files SET lease_owner = NULL, lease_until = NULL "
            "WHERE lease_owner IS NOT NULL"
        )
