"""The knowledge base as the gateway runs it: embeddings through the served models'
batchers, the configured reranker, and the KB's own settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import numpy as np

from engines.base import Tokenizer
from engines.errors import EngineUnavailableError
from engines.registry import EngineRegistry
from gateway.services.embeddings import EmbeddingService, RerankService
from gateway.settings import Settings
from kb.service import KnowledgeBase, Reranker

__all__ = ["GatewayProvider", "build_knowledge_base", "local_knowledge_base"]


class GatewayProvider:
    """EmbeddingProvider over the registry: the KB shares /v1/embeddings' batching."""

    def __init__(self, registry: EngineRegistry, embeddings: EmbeddingService) -> None:
        self.registry = registry
        self.embeddings = embeddings

    async def embed(self, model: str, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        return await self.embeddings.embed_texts(model, texts)

    def _engine(self, model: str) -> object:
        served = self.registry.resolve(model, "embedding")
        if served.engine is None:
            raise EngineUnavailableError(f"the model {model!r} is not loaded")
        return served.engine

    def tokenizer(self, model: str) -> Tokenizer:
        tok: Tokenizer = self._engine(model).tokenizer  # type: ignore[attr-defined]
        return tok

    def dimensions(self, model: str) -> int:
        served = self.registry.resolve(model, "embedding")
        return int(served.info.dimensions or self._engine(model).dimensions)  # type: ignore[attr-defined]

    def max_tokens(self, model: str) -> int:
        engine = self._engine(model)
        return min(
            int(engine.max_input_tokens),  # type: ignore[attr-defined]
            self.embeddings.limits.max_tokens_per_input,
        )


def _reranker(settings: Settings, rerank: RerankService) -> Reranker | None:
    name = settings.knowledge.rerank_model
    if name is None:
        return None
    if name == "auto":
        configured = [m.id for m in settings.models if m.kind == "rerank"]
        if not configured:
            return None
        name = configured[0]
    model_name = name

    async def score(query: str, docs: list[str]) -> list[float]:
        _, scores, _ = await rerank.scores(model_name, query, docs)
        return scores

    return score


def build_knowledge_base(
    settings: Settings,
    registry: EngineRegistry,
    embeddings: EmbeddingService,
    rerank: RerankService,
) -> KnowledgeBase:
    default = settings.knowledge.embedding_model or next(
        (m.id for m in settings.models if m.kind == "embedding"), None
    )
    return KnowledgeBase(
        settings.data_dir / "kb",
        GatewayProvider(registry, embeddings),
        settings.knowledge,
        default_model=default,
        reranker=_reranker(settings, rerank),
    )


@contextlib.asynccontextmanager
async def local_knowledge_base(
    settings: Settings, *, load_models: bool = True
) -> AsyncIterator[tuple[KnowledgeBase, EngineRegistry]]:
    """The knowledge base in-process, without the HTTP server (CLI, MCP over stdio): the
    engines of ``settings`` loaded (unless ``load_models`` is off), everything closed
    on exit."""
    registry = EngineRegistry(settings)
    if load_models:
        await registry.load()
    kb = build_knowledge_base(
        settings,
        registry,
        EmbeddingService(registry, settings.limits),
        RerankService(registry, settings.limits),
    )
    try:
        yield kb, registry
    finally:
        await kb.stop()
        kb.close()
        await registry.close()
