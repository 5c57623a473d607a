"""POST /v1/rerank (Cohere/Jina shape)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.schemas.embeddings import MAX_INPUTS

__all__ = ["RerankDocument", "RerankRequest", "RerankResponse", "RerankResult", "RerankUsage"]


class RerankDocument(msgspec.Struct):
    text: str


class RerankRequest(msgspec.Struct, kw_only=True):
    query: Annotated[str, msgspec.Meta(min_length=1)]
    documents: Annotated[
        list[str | RerankDocument], msgspec.Meta(min_length=1, max_length=MAX_INPUTS)
    ]
    model: str | None = None
    top_n: Annotated[int, msgspec.Meta(ge=1)] | None = None
    return_documents: bool = False


class RerankResult(msgspec.Struct, omit_defaults=True):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(msgspec.Struct):
    total_tokens: int


class RerankResponse(msgspec.Struct):
    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage
    object: Literal["rerank"] = "rerank"
