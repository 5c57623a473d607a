"""Multipart uploads streamed to disk: never held in memory, cut off at the size limit."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import multipart
from litestar import Request

from core.errors import InvalidRequestError, PayloadTooLargeError
from gateway.schemas.files import PURPOSES
from gateway.state import principal_of
from kb.service import KnowledgeBase
from kb.types import FileRecord

__all__ = ["Upload", "receive_file", "receive_upload"]

_MAX_FIELD_BYTES = 64 * 1024


class Upload:
    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self.sha256 = ""


class _Receiver:
    """The parser's events -> the ``file`` part on disk, other fields as small strings."""

    def __init__(self, part_path: Path, max_bytes: int) -> None:
        self.upload = Upload()
        self.part_path = part_path
        self.max_bytes = max_bytes
        self.digest = hashlib.sha256()
        self.fh: Any = None
        self.current: str | None = None
        self.buf = bytearray()

    def segment(self, event: multipart.MultipartSegment) -> None:
        self.current = event.name
        if self.current == "file":
            if self.fh is not None:
                raise InvalidRequestError("send one 'file' part", param="file")
            self.upload.filename = os.path.basename(event.filename or "upload.bin")
            self.fh = open(self.part_path, "wb")  # noqa: SIM115 - closed by finish/abort
        self.buf.clear()

    def end(self) -> None:
        if self.current != "file" and self.current is not None:
            self.upload.fields[self.current] = self.buf.decode("utf-8", "replace")
        self.current = None

    def data(self, chunk: bytes) -> None:
        if self.current == "file":
            self.upload.size += len(chunk)
            if self.upload.size > self.max_bytes:
                raise PayloadTooLargeError(
                    f"the file is larger than {self.max_bytes} bytes (knowledge.max_upload_bytes)"
                )
            self.digest.update(chunk)
            self.fh.write(chunk)
            return
        self.buf.extend(chunk)
        if len(self.buf) > _MAX_FIELD_BYTES:
            raise InvalidRequestError(f"form field {self.current!r} is too large")

    def finish(self) -> Upload:
        if self.fh is None:
            raise InvalidRequestError("the upload has no 'file' part", param="file")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.fh = None
        self.upload.sha256 = self.digest.hexdigest()
        return self.upload

    def abort(self) -> None:
        if self.fh is not None:
            self.fh.close()
        self.part_path.unlink(missing_ok=True)


async def receive_upload(
    content_type: str, stream: AsyncIterator[bytes], part_path: Path, max_bytes: int
) -> Upload:
    """Parse a multipart body: the ``file`` part goes to ``part_path`` (deleted again on any
    error), other fields are collected as small strings."""
    mime, params = multipart.parse_options_header(content_type or "")
    if mime != "multipart/form-data" or not params.get("boundary"):
        raise InvalidRequestError(
            "upload files as multipart/form-data with a 'file' part", param="file"
        )
    rx = _Receiver(part_path, max_bytes)
    try:
        with multipart.PushMultipartParser(
            params["boundary"], max_segment_count=32, max_header_size=8192
        ) as parser:
            async for chunk in stream:
                for event in parser.parse(chunk):
                    if isinstance(event, multipart.MultipartSegment):
                        rx.segment(event)
                    elif event is None:
                        rx.end()
                    else:
                        rx.data(event)
        return rx.finish()
    except multipart.MultipartError as exc:
        rx.abort()
        raise InvalidRequestError(f"malformed multipart body: {exc}", param="file") from None
    except BaseException:
        rx.abort()
        raise


async def receive_file(kb: KnowledgeBase, request: Request[Any, Any, Any]) -> FileRecord:
    """A Files API upload: the ``file`` part streamed to disk under the upload limit, its
    ``purpose`` checked, then registered with the knowledge base."""
    file_id, part = kb.new_upload()
    upload = await receive_upload(
        request.headers.get("content-type", ""),
        request.stream(),
        part,
        kb.settings.max_upload_bytes,
    )
    purpose = upload.fields.get("purpose", "").strip()
    if purpose not in PURPOSES:
        part.unlink(missing_ok=True)
        raise InvalidRequestError(
            f"'purpose' must be one of {sorted(PURPOSES)}; got {purpose!r}", param="purpose"
        )
    name = upload.filename or "upload.bin"
    return await kb.register_upload(
        file_id, part, name, purpose, upload.size, upload.sha256, who=principal_of(request)
    )
