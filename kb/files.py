"""File objects (the Files API): upload targets, registration, bytes and size limits."""

from __future__ import annotations

import asyncio
import hashlib
import time
import unicodedata
import uuid
from pathlib import Path

from core.errors import NotFoundError, PayloadTooLargeError
from core.tenancy import ADMIN_PROJECT, LOCAL_ADMIN, Principal
from kb.backend import KnowledgeBackend
from kb.config import KnowledgeSettings
from kb.types import FileRecord

__all__ = ["Files", "new_file_id", "safe_filename"]

# A file name is shown in lists, citations and Content-Disposition headers: it keeps no
# control characters (CR/LF would split a header), no path, and a bounded length.
MAX_FILENAME_BYTES = 255


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


def safe_filename(name: str, default: str = "upload.bin") -> str:
    """``name`` without control or format characters, path parts or surrounding space,
    cut to ``MAX_FILENAME_BYTES`` of UTF-8 (``default`` when nothing is left)."""
    cleaned = "".join(
        " " if ch in "\r\n\t" else ch
        for ch in name
        if unicodedata.category(ch)[0] != "C" or ch in "\r\n\t"
    )
    cleaned = " ".join(cleaned.replace("\\", "/").rsplit("/", 1)[-1].split())
    data = cleaned.encode()[:MAX_FILENAME_BYTES]
    cleaned = data.decode("utf-8", "ignore").strip()
    return cleaned if cleaned not in ("", ".", "..") else default


class Files:
    def __init__(self, backend: KnowledgeBackend, settings: KnowledgeSettings) -> None:
        self.backend = backend
        self.settings = settings

    def new_upload(self) -> tuple[str, Path]:
        """A fresh file id and the temporary path an upload streams into."""
        file_id = new_file_id()
        return file_id, self.backend.upload_path(file_id)

    async def register(
        self,
        file_id: str,
        part: Path,
        filename: str,
        purpose: str,
        size: int,
        digest: str,
        source_url: str | None = None,
        project: str = ADMIN_PROJECT,
    ) -> FileRecord:
        """Record a fully written upload (owned by ``project``) and move its bytes into place."""
        record = FileRecord(
            id=file_id,
            filename=safe_filename(filename),
            bytes=size,
            purpose=purpose,
            sha256=digest,
            created_at=int(time.time()),
            source_url=source_url,
            project=project,
        )
        try:
            await asyncio.to_thread(self.backend.add_file, record, part)
        finally:
            part.unlink(missing_ok=True)
        return record

    def check_size(self, size: int, what: str) -> None:
        if size > self.settings.max_upload_bytes:
            raise PayloadTooLargeError(
                f"{what} is larger than {self.settings.max_upload_bytes} bytes "
                "(knowledge.max_upload_bytes)"
            )

    async def add_bytes(
        self,
        data: bytes,
        filename: str,
        purpose: str = "assistants",
        source_url: str | None = None,
        project: str = ADMIN_PROJECT,
    ) -> FileRecord:
        self.check_size(len(data), "the file")
        file_id, part = self.new_upload()
        await asyncio.to_thread(part.write_bytes, data)
        digest = hashlib.sha256(data).hexdigest()
        return await self.register(
            file_id, part, filename, purpose, len(data), digest, source_url, project
        )

    async def add_path(
        self, src: Path, purpose: str = "assistants", project: str = ADMIN_PROJECT
    ) -> FileRecord:
        size = src.stat().st_size
        self.check_size(size, str(src))
        file_id, part = self.new_upload()
        digest = await asyncio.to_thread(_copy, src, part)
        return await self.register(file_id, part, src.name, purpose, size, digest, project=project)

    async def get(self, file_id: str, who: Principal = LOCAL_ADMIN) -> FileRecord:
        """A file ``who`` sees; another project's file is missing, exactly like an unknown id."""
        record = await asyncio.to_thread(self.backend.file, file_id)
        if record is None or not who.sees(record.project):
            raise NotFoundError(f"no file with id {file_id!r}", param="file_id")
        return record


def _copy(src: Path, dst: Path) -> str:
    digest = hashlib.sha256()
    with open(src, "rb") as fh, open(dst, "wb") as out:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()
