"""Files in PostgreSQL: uploaded bytes are ``bytea`` parts in ``file_parts``, so every
replica reads every file and a backup of the database is a backup of everything. The
rows, store files and batches are the shared statements (kb/sql/files.py); ingestion
jobs are claimed with ``FOR UPDATE SKIP LOCKED`` and a lease, so a job whose replica died
is taken over when its lease runs out."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from core.errors import StorageUnavailableError
from kb.filters import Filter
from kb.pg.chunks import pg_text
from kb.pg.db import Database
from kb.pg.filters import compile_filter
from kb.sql.files import SqlFiles
from kb.types import FileRecord, StoreFile

__all__ = ["FilesMixin"]


class FilesMixin(SqlFiles, Database):
    # Where uploads stream to before they go into the database, and local copies live.
    _tmp: Path

    def upload_path(self, file_id: str) -> Path:
        return self._tmp / f"{file_id}.part"

    def add_file(self, record: FileRecord, source: Path) -> None:
        with self._conn(transaction=True) as conn:
            conn.execute(
                "INSERT INTO files (id, filename, bytes, purpose, sha256, source_url, "
                "created_at, project) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    record.id,
                    pg_text(record.filename),
                    record.bytes,
                    record.purpose,
                    record.sha256,
                    record.source_url,
                    record.created_at,
                    record.project,
                ),
            )
            with open(source, "rb") as fh:
                for part, data in enumerate(iter(lambda: fh.read(self._part), b"")):
                    conn.execute(
                        "INSERT INTO file_parts (file_id, part, data) VALUES (%s, %s, %s)",
                        (record.id, part, data),
                    )
        if source.parent == self._tmp:
            source.unlink(missing_ok=True)

    def replace_file(self, record: FileRecord, source: Path) -> None:
        with self._conn(transaction=True) as conn:
            conn.execute(
                "UPDATE files SET filename = %s, bytes = %s, sha256 = %s WHERE id = %s",
                (pg_text(record.filename), record.bytes, record.sha256, record.id),
            )
            conn.execute("DELETE FROM file_parts WHERE file_id = %s", (record.id,))
            with open(source, "rb") as fh:
                for part, data in enumerate(iter(lambda: fh.read(self._part), b"")):
                    conn.execute(
                        "INSERT INTO file_parts (file_id, part, data) VALUES (%s, %s, %s)",
                        (record.id, part, data),
                    )
        source.unlink(missing_ok=True)

    def read_file(self, file_id: str, block: int = 1 << 20) -> Iterator[bytes]:
        parts = self._int("SELECT count(*) FROM file_parts WHERE file_id = %s", (file_id,))
        for part in range(parts):
            row = self._one(
                "SELECT data FROM file_parts WHERE file_id = %s AND part = %s", (file_id, part)
            )
            if row is not None:
                yield bytes(row["data"])

    @contextlib.contextmanager
    def local_copy(self, file_id: str) -> Iterator[Path | None]:
        if self.file(file_id) is None:
            yield None
            return
        fd, name = tempfile.mkstemp(prefix=f"{file_id}-", dir=self._tmp)
        path = Path(name)
        try:
            with open(fd, "wb") as fh:
                for block in self.read_file(file_id):
                    fh.write(block)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def claim(self, owner: str, lease_s: float) -> StoreFile | None:
        try:
            return super().claim(owner, lease_s)
        except StorageUnavailableError:
            return None  # the worker idles and asks again

    def renew(self, cid: str, file_id: str, owner: str, lease_s: float) -> bool:
        try:
            return super().renew(cid, file_id, owner, lease_s)
        except StorageUnavailableError:
            return True  # keep working; the lease check after the job decides

    def matching_files(self, cid: str, flt: Filter) -> set[str]:
        compiled = compile_filter(flt)
        if compiled is None:  # Dify's text operators: evaluated here
            return {fid for fid, attrs in self.store_file_attributes(cid) if flt.matches(attrs)}
        sql, args = compiled
        rows = self._rows(
            f"SELECT file_id FROM vector_store_files WHERE collection_id = %s AND {sql}",
            [cid, *args],
        )
        return {str(r["file_id"]) for r in rows}
