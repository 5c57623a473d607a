"""The knowledge base as the gateway runs it: embeddings through the served models'
batchers, the configured reranker, the configured backend, and the conversion of
search requests into the façade's typed query."""

from __future__ import annotations

from typing import cast

import numpy as np

from core.errors import EngineUnavailableError, InvalidRequestError
from core.types import Tokenizer
from engines.base import Embedder
from engines.registry import EngineRegistry
from gateway.schemas.vector_stores import BatchFile, CreateBatchRequest, SearchRequest
from gateway.services.embeddings import EmbeddingService, RerankService
from gateway.settings import LimitSettings, Settings
from kb.filters import FilterLimits, parse_filter
from kb.ports import Reranker
from kb.retrieval import SearchQuery
from kb.service import BatchItem, KnowledgeBase

__all__ = [
    "GatewayProvider",
    "batch_items",
    "build_knowledge_base",
    "search_query",
]


class GatewayProvider:
    """EmbeddingProvider over the registry: the KB shares /v1/embeddings' batching."""

    def __init__(self, registry: EngineRegistry, embeddings: EmbeddingService) -> None:
        self.registry = registry
        self.embeddings = embeddings

    async def embed(self, model: str, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        return await self.embeddings.embed_texts(model, texts)

    async def embed_sparse(
        self, model: str, texts: list[str]
    ) -> tuple[np.ndarray, list[int], list[dict[int, float]] | None]:
        return await self.embeddings.embed_texts_sparse(model, texts)

    def _engine(self, model: str) -> Embedder:
        served = self.registry.resolve(model, "embedding")
        if served.engine is None:
            raise EngineUnavailableError(f"the model {model!r} is not loaded")
        return cast(Embedder, served.engine)

    def tokenizer(self, model: str) -> Tokenizer:
        return self._engine(model).tokenizer

    def dimensions(self, model: str) -> int:
        served = self.registry.resolve(model, "embedding")
        return int(served.info.dimensions or self._engine(model).dimensions)

    def max_tokens(self, model: str) -> int:
        return min(
            int(self._engine(model).max_input_tokens), self.embeddings.limits.max_tokens_per_input
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
    from kb.service import open_backend

    default = settings.knowledge.embedding_model or next(
        (m.id for m in settings.models if m.kind == "embedding"), None
    )
    backend = open_backend(settings.data_dir / "kb", settings.knowledge)
    return KnowledgeBase(
        backend,
        GatewayProvider(registry, embeddings),
        settings.knowledge,
        default_model=default,
        reranker=_reranker(settings, rerank),
    )


def filter_limits(limits: LimitSettings) -> FilterLimits:
    return FilterLimits(
        max_depth=limits.max_filter_depth, max_conditions=limits.max_filter_conditions
    )


def search_query(req: SearchRequest, limits: LimitSettings) -> SearchQuery:
    """A Vector Stores search request as the façade's query."""
    queries = (req.query,) if isinstance(req.query, str) else tuple(req.query)
    if len(queries) > limits.max_search_queries:
        raise InvalidRequestError(
            f"'query' lists {len(queries)} queries; at most {limits.max_search_queries} "
            "(limits.max_search_queries)",
            param="query",
            code="too_many_queries",
        )
    flt = parse_filter(req.filters, limits=filter_limits(limits)) if req.filters else None
    ranking = req.ranking_options
    weights = None
    if ranking is not None and ranking.hybrid_search is not None:
        weights = (ranking.hybrid_search.embedding_weight, ranking.hybrid_search.text_weight)
    return SearchQuery(
        queries=queries,
        k=req.max_num_results,
        filter=flt,
        rerank=False if ranking is not None and ranking.ranker == "none" else None,
        score_threshold=ranking.score_threshold if ranking is not None else 0.0,
        rewrite_query=req.rewrite_query,
        mode=req.mode,
        model=req.model,
        weights=weights,
    )


def batch_items(req: CreateBatchRequest, limits: LimitSettings) -> list[BatchItem]:
    """The files of a file-batch request: ``file_ids`` (sharing ``attributes``) or ``files``."""
    from gateway.converters import strategy

    if bool(req.file_ids) == bool(req.files):
        raise InvalidRequestError("give either 'file_ids' or 'files'", param="file_ids")
    files: list[BatchFile] = req.files or [
        BatchFile(file_id=f, attributes=req.attributes) for f in req.file_ids or []
    ]
    if len(files) > limits.max_batch_files:
        raise InvalidRequestError(
            f"a batch holds at most {limits.max_batch_files} files (limits.max_batch_files)",
            param="file_ids",
            code="too_many_files",
        )
    return [
        BatchItem(
            f.file_id,
            dict(f.attributes) if f.attributes is not None else None,
            strategy(f.chunking_strategy),
        )
        for f in files
    ]
