"""An EmbeddingProvider over one local embedding engine (benchmarks, tools, tests)."""

from __future__ import annotations

import asyncio

import numpy as np

from core.types import Tokenizer
from engines.base import ModelInfo

__all__ = ["LocalProvider", "minilm_provider"]


class LocalProvider:
    """Calls the engine directly (no batcher); every model name maps to it."""

    def __init__(self, engine: object, dimensions: int, max_tokens: int = 256) -> None:
        self.engine = engine
        self._dims = dimensions
        self._max = max_tokens

    async def embed(self, model: str, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        out = await asyncio.to_thread(self.engine.encode, texts, self._max)  # type: ignore[attr-defined]
        return out.vectors, out.token_counts

    async def embed_sparse(
        self, model: str, texts: list[str]
    ) -> tuple[np.ndarray, list[int], list[dict[int, float]] | None]:
        out = await asyncio.to_thread(self.engine.encode, texts, self._max)  # type: ignore[attr-defined]
        return out.vectors, out.token_counts, out.sparse

    def tokenizer(self, model: str) -> Tokenizer:
        tok: Tokenizer = self.engine.tokenizer  # type: ignore[attr-defined]
        return tok

    def dimensions(self, model: str) -> int:
        return self._dims

    def max_tokens(self, model: str) -> int:
        return self._max


def minilm_provider() -> LocalProvider:
    from engines.bge import BGEEmbedder
    from engines.paths import resolve_model_path

    engine = BGEEmbedder(
        ModelInfo("all-minilm-l6-v2", "embedding", "bge"),
        resolve_model_path("builtin:all-minilm-l6-v2"),
        {"pooling": "mean"},
    )
    return LocalProvider(engine, 384, 256)
