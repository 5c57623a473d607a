"""Shapes shared by every API surface."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "Attributes",
    "DeletedObject",
    "ErrorBody",
    "ErrorResponse",
    "ListPage",
    "Metadata",
    "NonEmptyStr",
]

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
# OpenAI's attribute limits: at most 16 keys of <= 64 characters, string values <= 512.
AttributeKey = Annotated[str, msgspec.Meta(max_length=64)]
AttributeValue = Annotated[str, msgspec.Meta(max_length=512)] | int | float | bool
Attributes = Annotated[dict[AttributeKey, AttributeValue], msgspec.Meta(max_length=16)]
Metadata = Annotated[
    dict[AttributeKey, Annotated[str, msgspec.Meta(max_length=512)]], msgspec.Meta(max_length=16)
]


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class DeletedObject(msgspec.Struct):
    id: str
    object: str
    deleted: bool = True


class ListPage(msgspec.Struct):
    """A page of a list endpoint (OpenAI's cursor paging)."""

    data: list[Any]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: Literal["list"] = "list"
