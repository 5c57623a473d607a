"""POST /v1/embeddings."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.schemas.common import NonEmptyStr

__all__ = ["EmbeddingObject", "EmbeddingRequest", "EmbeddingResponse", "EmbeddingUsage"]

# Hard ceiling of the decoder; `limits.max_inputs_per_request` is the configured cap.
MAX_INPUTS = 65536


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: NonEmptyStr
    # A string or a list of strings; token-id arrays are refused with a clear 400.
    input: str | Annotated[list[str | int | list[int]], msgspec.Meta(max_length=MAX_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, msgspec.Meta(ge=1)] | None = None
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
