"""POST /v1/conversations and its items: the request bodies (OpenAI's Conversations API).
Conversations and items are built as JSON objects by the service."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from gateway.schemas.common import Metadata

__all__ = ["ConversationCreate", "ConversationUpdate", "ItemsCreate"]

# The request bound; the service enforces `responses.max_items_per_request` below it.
_MAX_ITEMS = 1000
Items = Annotated[list[dict[str, Any]], msgspec.Meta(max_length=_MAX_ITEMS)]


class ConversationCreate(msgspec.Struct, kw_only=True):
    metadata: Metadata | None = None  # 16 keys of 64 characters, values of 512
    items: Items | None = None


class ConversationUpdate(msgspec.Struct, kw_only=True):
    metadata: Metadata | None


class ItemsCreate(msgspec.Struct, kw_only=True):
    items: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1, max_length=_MAX_ITEMS)]
