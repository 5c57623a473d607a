"""Wire types, named as in the OpenAI (and Cohere/Jina rerank) specs.

Engines and kb never see these; converters live in the services at the edge.
Unknown request fields are accepted (clients send vendor extras).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "EmbeddingObject",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingUsage",
    "ErrorBody",
    "ErrorResponse",
    "Model",
    "ModelList",
    "RerankDocument",
    "RerankRequest",
    "RerankResponse",
    "RerankResult",
    "RerankUsage",
]


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class Model(msgspec.Struct, omit_defaults=True):
    id: str
    created: int
    owned_by: str
    object: Literal["model"] = "model"
    # Extras the OpenAI schema lacks: what the model does and how it is served.
    kind: str | None = None
    capabilities: list[str] | None = None
    engine: str | None = None
    dimensions: int | None = None
    max_input_tokens: int | None = None
    rerank: str | None = None
    status: str | None = None
    aliases: list[str] | None = None
    details: dict[str, Any] | None = None


class ModelList(msgspec.Struct):
    data: list[Model]
    object: Literal["list"] = "list"


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str
    # str | list[str]; token-id arrays are refused with a clear 400 by the service.
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class EmbeddingObject(msgspec.Struct):
    index: int
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(msgspec.Struct):
    data: list[EmbeddingObject]
    model: str
    usage: EmbeddingUsage
    object: Literal["list"] = "list"


class RerankDocument(msgspec.Struct):
    text: str


class RerankRequest(msgspec.Struct, kw_only=True):
    query: str
    documents: list[str | RerankDocument]
    model: str | None = None
    top_n: int | None = None
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
