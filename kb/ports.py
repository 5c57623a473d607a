"""What the knowledge base needs from the outside: embeddings (the gateway's batched
embedding service in production, an engine directly in tools and tests) and, optionally,
a reranker. Defined here so the knowledge base depends on no server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import numpy as np

from core.types import Tokenizer

__all__ = ["EmbeddingProvider", "Progress", "Reranker", "SparseEmbeddingProvider", "embed_both"]

# (query, documents) -> one relevance score in [0, 1] per document.
Reranker = Callable[[str, list[str]], Awaitable[list[float]]]
# (vector store id, file id, chunks done, chunks total)
Progress = Callable[[str, str, int, int], None]


class EmbeddingProvider(Protocol):
    async def embed(self, model: str, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Normalised vectors ``[len(texts), d]`` and each text's token count."""
        ...

    def tokenizer(self, model: str) -> Tokenizer: ...

    def dimensions(self, model: str) -> int: ...

    def max_tokens(self, model: str) -> int | None:
        """The most tokens the model reads per input (None: no known limit)."""
        ...


@runtime_checkable
class SparseEmbeddingProvider(Protocol):
    """A provider that also returns a model's lexical weights (BGE-M3's sparse head)."""

    async def embed_sparse(
        self, model: str, texts: list[str]
    ) -> tuple[np.ndarray, list[int], list[dict[int, float]] | None]: ...


async def embed_both(
    provider: EmbeddingProvider, model: str, texts: list[str]
) -> tuple[np.ndarray, list[dict[int, float]] | None]:
    """Vectors and, when the provider and model have them, lexical weights."""
    if isinstance(provider, SparseEmbeddingProvider):
        vectors, _, sparse = await provider.embed_sparse(model, texts)
        return vectors, sparse
    vectors, _ = await provider.embed(model, texts)
    return vectors, None
