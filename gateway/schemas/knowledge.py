"""The ``knowledge`` extra of chat and completion requests (``extra_body`` in the SDKs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = ["KnowledgeField"]


class KnowledgeField(msgspec.Struct, forbid_unknown_fields=True):
    vector_store_ids: Annotated[list[str], msgspec.Meta(min_length=1, max_length=1024)] | None = (
        None
    )
    top_k: Annotated[int, msgspec.Meta(ge=1, le=50)] | None = None
    filters: dict[str, Any] | None = None
    rerank: bool | None = None
    score_threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    max_context_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    no_answer: Literal["say so", "answer anyway"] | None = None
    debug: bool | None = None
