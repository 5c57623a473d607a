"""What the app's lifespan owns, reachable from handlers as ``app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.datastructures import State

from chat.core import ChatCore
from core.errors import NotFoundError
from core.tenancy import LOCAL_ADMIN, Principal
from engines.registry import EngineRegistry
from gateway.metrics import Metrics
from gateway.quotas.service import QuotaService
from gateway.services.chat import ChatService
from gateway.services.embeddings import EmbeddingService, RerankService
from gateway.services.responses import ResponsesService
from gateway.settings import Settings
from kb.service import KnowledgeBase
from rag.catalog import ProfileCatalog
from rag.service import RagService

__all__ = ["AppContext", "ctx_of", "principal_of"]


@dataclass
class AppContext:
    settings: Settings
    registry: EngineRegistry
    metrics: Metrics
    embeddings: EmbeddingService
    rerank: RerankService
    core: ChatCore
    chat: ChatService
    response_api: ResponsesService | None  # None in the engine role
    knowledge: KnowledgeBase | None  # None in the engine role
    rag: RagService | None
    catalog: ProfileCatalog
    quotas: QuotaService | None = None

    @property
    def responses(self) -> ResponsesService:
        if self.response_api is None:
            raise NotFoundError("this server runs the engine role: it has no Responses API")
        return self.response_api

    @property
    def kb(self) -> KnowledgeBase:
        if self.knowledge is None:
            raise NotFoundError("this server runs the engine role: it has no knowledge base")
        return self.knowledge


def ctx_of(state: State) -> AppContext:
    ctx: AppContext = state.ctx
    return ctx


def principal_of(request: Request[Any, Any, Any]) -> Principal:
    """Who the request runs as (set by the auth middleware; the local admin without keys)."""
    found = request.scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else LOCAL_ADMIN
