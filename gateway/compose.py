"""The composition root: every service of the gateway built from the settings, once, in
one place. The server, the CLI, MCP over stdio and the tests all assemble through here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from chat.core import ChatCore
from engines.registry import EngineRegistry
from gateway.metrics import Metrics
from gateway.quotas.service import (
    Counters,
    MemoryCounters,
    QuotaService,
    SharedCounters,
    StorageMeter,
)
from gateway.services.chat import ChatService
from gateway.services.embeddings import EmbeddingService, RerankService
from gateway.services.knowledge import build_knowledge_base, filter_limits
from gateway.services.responses import ResponsesService, ResponseStore
from gateway.settings import Settings
from gateway.state import AppContext
from kb.quotas import FilesStorageMeter, quota_counters
from kb.service import KnowledgeBase
from rag.catalog import ProfileCatalog
from rag.service import RagService

if TYPE_CHECKING:
    from mcp.server import MCPServer

__all__ = ["compose", "local_context", "mcp_server"]


def compose(
    settings: Settings,
    registry: EngineRegistry | None = None,
    metrics: Metrics | None = None,
    storage_meter: StorageMeter | None = None,
) -> AppContext:
    """Every service for ``settings`` (the engine role gets the model APIs only: no
    knowledge base, no profiles, no Responses API). Engines are not loaded here.
    ``storage_meter`` measures each project's stored bytes for ``quotas.storage_bytes``
    (default: the knowledge base's files, by project)."""
    metrics = metrics or Metrics()
    registry = registry or EngineRegistry(settings.registry_config(), observer=metrics)
    if registry.observer is None:
        registry.observer = metrics
    metrics.attach_engines(registry)
    embeddings = EmbeddingService(registry, settings.limits)
    rerank = RerankService(registry, settings.limits)
    kb: KnowledgeBase | None = None
    rag: RagService | None = None
    profiles = settings.profiles if settings.role == "all" else []
    if settings.role == "all":
        kb = build_knowledge_base(settings, registry, embeddings, rerank)
        metrics.attach_knowledge(kb)
    catalog = ProfileCatalog.build(
        profiles, settings.model_names("chat"), shared=settings.auth.shared_profiles
    )
    if kb is not None:
        rag = RagService(kb, catalog, settings.rag, filter_limits(settings.limits))
    core = ChatCore(registry, settings.chat, catalog, rag)
    responses = None
    store = None
    if kb is not None:
        store = ResponseStore(settings.data_dir / "responses.sqlite3", settings.auth.admin_project)
        responses = ResponsesService(core, store, settings.responses)
    if storage_meter is None and kb is not None:
        storage_meter = FilesStorageMeter(kb, store.used_bytes if store is not None else None)
    quotas = _quotas(settings, kb, metrics, storage_meter)
    if quotas.enabled:
        core.on_generated = quotas.charge_tokens
    return AppContext(
        settings=settings,
        registry=registry,
        metrics=metrics,
        embeddings=embeddings,
        rerank=rerank,
        core=core,
        chat=ChatService(core),
        response_api=responses,
        knowledge=kb,
        rag=rag,
        catalog=catalog,
        quotas=quotas,
    )


def _quotas(
    settings: Settings, kb: KnowledgeBase | None, metrics: Metrics, meter: StorageMeter | None
) -> QuotaService:
    """Quotas counted in the knowledge base's database (shared by the replicas using
    it), or in this process without one."""
    shared = quota_counters(kb) if kb is not None else None
    counters: Counters = SharedCounters(shared) if shared is not None else MemoryCounters()
    return QuotaService(settings.quotas, counters, meter, on_refusal=metrics.quota_refused)


def mcp_server(ctx: AppContext) -> MCPServer:
    """The knowledge tools over ``ctx``'s knowledge base, ``ask`` answered by its core."""
    from mcp_server.chunk_ids import load_key
    from mcp_server.server import build_server

    cfg = ctx.settings.mcp
    given = cfg.chunk_id_key
    key = bytes.fromhex(given.get_secret_value()) if given else load_key(ctx.settings.data_dir)
    return build_server(ctx.kb, cfg, ctx.core, filter_limits(ctx.settings.limits), key)


@contextlib.asynccontextmanager
async def local_context(
    settings: Settings, *, load_models: bool = True
) -> AsyncIterator[AppContext]:
    """The services in-process, without the HTTP server (the CLI, MCP over stdio): the
    engines of ``settings`` loaded (unless ``load_models`` is off), the knowledge base
    opened, everything closed on exit."""
    ctx = compose(settings)
    if load_models:
        await ctx.registry.load()
    try:
        yield ctx
    finally:
        if ctx.knowledge is not None:
            await ctx.knowledge.stop()
            ctx.knowledge.close()
        if ctx.response_api is not None:
            ctx.response_api.store.close()
        await ctx.registry.close()
