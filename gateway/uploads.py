"""Multipart uploads streamed to disk: never held in memory, cut off at the size limit."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import multipart

from engines.errors import InvalidRequestError, PayloadTooLargeError

__all__ = ["Upload", "receive_upload"]

_MAX_FIELD_BYTES = 64 * 1024


class Upload:
    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self.sha256 = ""


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
    upload = Upload()
    digest = hashlib.sha256()
    fh: Any = None
    current: str | None = None
    buf = bytearray()
    try:
        with multipart.PushMultipartParser(
            params["boundary"], max_segment_count=32, max_header_size=8192
        ) as parser:
            async for chunk in stream:
                for event in parser.parse(chunk):
                    if isinstance(event, multipart.MultipartSegment):
                        current = event.name
                        if current == "file":
                            if fh is not None:
                                raise InvalidRequestError("send one 'file' part", param="file")
                            upload.filename = os.path.basename(event.filename or "upload.bin")
                            fh = open(part_path, "wb")  # noqa: SIM115 - closed below
                        buf.clear()
                    elif event is None:
                        if current != "file" and current is not None:
                            upload.fields[current] = buf.decode("utf-8", "replace")
                        current = None
                    elif current == "file":
                        upload.size += len(event)
                        if upload.size > max_bytes:
                            raise PayloadTooLargeError(
                                f"the file is larger than {max_bytes} bytes "
                                "(knowledge.max_upload_bytes)"
                            )
                        digest.update(event)
                        fh.write(event)
                    else:
                        buf.extend(event)
                        if len(buf) > _MAX_FIELD_BYTES:
                            raise InvalidRequestError(f"form field {current!r} is too large")
        if fh is None:
            raise InvalidRequestError("the upload has no 'file' part", param="file")
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        fh = None
    except multipart.MultipartError as exc:
        if fh is not None:
            fh.close()
        part_path.unlink(missing_ok=True)
        raise InvalidRequestError(f"malformed multipart body: {exc}", param="file") from None
    except BaseException:
        if fh is not None:
            fh.close()
        part_path.unlink(missing_ok=True)
        raise
    upload.sha256 = digest.hexdigest()
    return upload
