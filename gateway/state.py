"""What the app's lifespan owns, reachable from handlers as ``app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.datastructures import State

from engines.registry import EngineRegistry
from gateway.metrics import Metrics
from gateway.services.chat import ChatService
from gateway.services.embeddings import EmbeddingService, RerankService
from gateway.services.responses import ResponsesService
from gateway.settings import Settings
from kb.service import KnowledgeBase
from rag.catalog import ProfileCatalog
from rag.service import RagService

__all__ = ["AppContext", "ctx_of"]


@dataclass
class AppContext:
    settings: Settings
    registry: EngineRegistry
    metrics: Metrics
    embeddings: EmbeddingService
    rerank: RerankService
    chat: ChatService
    responses: ResponsesService
    kb: KnowledgeBase
    rag: RagService
    catalog: ProfileCatalog


def ctx_of(state: State) -> AppContext:
    ctx: AppContext = state.ctx
    return ctx
