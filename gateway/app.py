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
from gateway.routes import chat, embeddings, health, models, rerank
from gateway.services.chat import ChatService
from gateway.services.embeddings import EmbeddingService, RerankService
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
    ctx = AppContext(
        settings=settings,
        registry=registry,
        metrics=metrics,
        embeddings=EmbeddingService(registry, settings.limits),
        rerank=RerankService(registry, settings.limits),
        chat=ChatService(registry, settings.chat),
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
        try:
            yield
        finally:
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
