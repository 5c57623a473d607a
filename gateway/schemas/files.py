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
    # Absent rather than null: OpenAI's schema types these as integer and string.
    expires_at: int | msgspec.UnsetType = msgspec.UNSET
    status_details: str | msgspec.UnsetType = msgspec.UNSET
