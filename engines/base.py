"""Engine protocols over plain dataclasses. Nothing here imports torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from core.types import Tokenizer

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Embedder", "EmbeddingBatch", "ModelInfo", "RerankScores", "Reranker", "Tokenizer"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What /v1/models shows about a model."""

    id: str
    kind: str
    engine: str
    owned_by: str = "rwkv-rag-gateway"
    created: int = 0
    dimensions: int | None = None
    max_input_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EmbeddingBatch:
    """Normalised float32 vectors, one row per input, with each input's token count."""

    vectors: np.ndarray
    token_counts: list[int]
    # BGE-M3's lexical weights (token id -> weight) per input; None for other models.
    sparse: list[dict[int, float]] | None = None


@dataclass(frozen=True, slots=True)
class RerankScores:
    scores: list[float]
    token_counts: list[int]


@runtime_checkable
class Embedder(Protocol):
    """Synchronous embedding of a batch. Callers batch; engines only compute."""

    info: ModelInfo
    dimensions: int
    max_input_tokens: int
    tokenizer: Tokenizer

    def embed(self, texts: list[str]) -> np.ndarray:
        """Normalised float32 matrix ``[len(texts), dimensions]``."""
        ...

    def encode(self, texts: list[str], max_tokens: int) -> EmbeddingBatch:
        """Vectors of texts truncated to ``max_tokens``, with each one's token count."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Reranker(Protocol):
    """Synchronous relevance scores for (query, document) pairs, each in [0, 1]."""

    info: ModelInfo
    max_input_tokens: int
    tokenizer: Tokenizer

    def score(self, pairs: list[tuple[str, str]]) -> list[float]: ...

    def score_pairs(self, pairs: list[tuple[str, str]], max_tokens: int) -> RerankScores:
        """Scores of pairs truncated to ``max_tokens``, with each pair's token count."""
        ...

    def close(self) -> None: ...
