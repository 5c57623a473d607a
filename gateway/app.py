"""The app factory. The lifespan owns the engines (and, in later layers, KB and MCP)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from engines.registry import EngineRegistry
from gateway.errors import exception_handlers
from gateway.metrics import Metrics
from gateway.middleware import AuthMiddleware, MetricsMiddleware
from gateway.routes import (
    chat,
    dify,
    embeddings,
    files,
    health,
    models,
    rerank,
    vector_stores,
)
from gateway.services.chat import ChatService
from gateway.services.embeddings import EmbeddingService, RerankService
from gateway.services.knowledge import build_knowledge_base
from gateway.services.rag import RagService
from gateway.settings import Settings
from gateway.state import AppContext

__all__ = ["create_app"]

log = logging.getLogger("gateway")


def create_app(settings: Settings | None = None, engines: EngineRegistry | None = None) -> Litestar:
    """Build the gateway. ``engines`` may be a registry the caller owns (it is not closed)."""
    settings = settings or Settings()
    metrics = Metrics()
    owns_registry = engines is None
    registry = engines or EngineRegistry(settings, observer=metrics)
    if registry.observer is None:
        registry.observer = metrics
    metrics.attach_engines(registry)
    embedding_service = EmbeddingService(registry, settings.limits)
    rerank_service = RerankService(registry, settings.limits)
    kb = build_knowledge_base(settings, registry, embedding_service, rerank_service)
    metrics.attach_knowledge(kb)
    chat_service = ChatService(registry, settings.chat)
    rag = RagService(kb, settings.profiles, settings.rag)
    chat_service.rag = rag
    mcp_manager: Any = None
    mcp_routes: list[Any] = []
    if settings.mcp.enabled:
        from mcp_server.http import mount
        from mcp_server.server import build_server

        handler, mcp_manager = mount(
            build_server(kb, registry, settings, chat=chat_service), settings.mcp
        )
        mcp_routes.append(handler)
    ctx = AppContext(
        settings=settings,
        registry=registry,
        metrics=metrics,
        embeddings=embedding_service,
        rerank=rerank_service,
        chat=chat_service,
        kb=kb,
        rag=rag,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        loader: asyncio.Task[None] | None = None
        if settings.load_in_background:
            loader = asyncio.get_running_loop().create_task(registry.load(), name="load-engines")
        else:
            await registry.load()
            failed = {m.info.id: m.error for m in registry.models.values() if m.error}
            if failed and settings.strict_startup:
                await registry.stop()
                raise RuntimeError(f"models failed to load: {failed}")

        async def start_kb() -> None:
            # Resumed ingestions need the embedding models: wait for them first.
            if loader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(loader)
            await kb.start()

        kb_starter = asyncio.get_running_loop().create_task(start_kb(), name="start-kb")
        try:
            if mcp_manager is not None:
                async with mcp_manager.run():
                    yield
            else:
                yield
        finally:
            if not kb_starter.done():
                kb_starter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await kb_starter
            await kb.stop()
            if loader is not None and not loader.done():
                loader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loader
            if owns_registry:
                await registry.close()
            else:
                await registry.stop()

    route_handlers: list[Any] = [
        *models.routes,
        *embeddings.routes,
        *rerank.routes,
        *chat.routes,
        *files.routes,
        *vector_stores.routes,
        *dify.routes,
        *mcp_routes,
        *health.routes,
    ]
    app = Litestar(
        route_handlers=route_handlers,
        lifespan=[lifespan],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        middleware=[
            DefineMiddleware(MetricsMiddleware, metrics=metrics),
            DefineMiddleware(AuthMiddleware, api_keys=settings.api_keys),
        ],
        request_max_body_size=settings.limits.max_body_bytes,
        openapi_config=OpenAPIConfig(title="rwkv-rag-gateway", version="0.1.0", path="/schema"),
        debug=False,
    )
    app.state.ctx = ctx
    return app
