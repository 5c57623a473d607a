"""The Files API (OpenAI shapes)."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["PURPOSES", "FileObject"]

PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})


class FileObject(msgspec.Struct):
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    object: Literal["file"] = "file"
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None
