"""The app factory. The lifespan owns the engines, the knowledge base, the MCP session
manager and the stored responses' retention sweep, and closes all of them on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

from engines.registry import EngineRegistry
from gateway.auth import KeyTable
from gateway.compose import compose, mcp_server
from gateway.errors import exception_handlers
from gateway.logging import logging_config
from gateway.middleware import (
    AuthMiddleware,
    ConsoleHeadersMiddleware,
    JsonGuardMiddleware,
    MetricsMiddleware,
    RequestLogMiddleware,
)
from gateway.quotas import QuotaMiddleware, StorageMeter
from gateway.routes import (
    chat,
    conversations,
    dify,
    embeddings,
    files,
    health,
    models,
    rerank,
    responses,
    vector_stores,
)
from gateway.settings import Settings
from gateway.state import AppContext

__all__ = ["create_app"]

log = logging.getLogger("gateway")


@dataclass
class _Lifespan:
    """Loads the engines (in the background unless told not to), starts the knowledge base
    once the embedding models are there, runs the MCP session manager, and stops it all."""

    ctx: AppContext
    owns_registry: bool
    mcp_manager: Any = None

    async def _load(self) -> asyncio.Task[None] | None:
        registry, settings = self.ctx.registry, self.ctx.settings
        if settings.load_in_background:
            return asyncio.get_running_loop().create_task(registry.load(), name="load-engines")
        await registry.load()
        failed = {m.info.id: m.error for m in registry.models.values() if m.error}
        if failed and settings.strict_startup:
            await registry.stop()
            raise RuntimeError(f"models failed to load: {failed}")
        return None

    @contextlib.asynccontextmanager
    async def __call__(self, app: Litestar) -> AsyncIterator[None]:
        ctx = self.ctx
        log.info(
            "data directory: %s",
            ctx.settings.data_dir,
            extra={"data_dir": str(ctx.settings.data_dir)},
        )
        loader = await self._load()
        if ctx.quotas is not None:
            await ctx.quotas.start()

        kb = ctx.knowledge

        async def start_kb() -> None:
            # Resumed ingestions need the embedding models: wait for them first.
            if loader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(loader)
            if kb is not None:
                await kb.start()

        kb_starter = asyncio.get_running_loop().create_task(start_kb(), name="start-kb")
        sweeper = None
        if ctx.response_api is not None:
            sweeper = asyncio.get_running_loop().create_task(
                ctx.response_api.sweep_forever(), name="responses-retention"
            )
        try:
            if self.mcp_manager is not None:
                async with self.mcp_manager.run():
                    yield
            else:
                yield
        finally:
            await _cancel(sweeper)
            await _cancel(kb_starter)
            if kb is not None:
                await kb.stop()
            await _cancel(loader)
            if self.owns_registry:
                await ctx.registry.close()
            else:
                await ctx.registry.stop()
            if kb is not None:
                kb.close()
            if ctx.response_api is not None:
                ctx.response_api.store.close()


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _openapi() -> tuple[OpenAPIConfig, list[Any]]:
    """The OpenAPI document and Swagger UI, its assets served from the installed
    swagger-ui-bundle package (no CDN: the docs work offline)."""
    from swagger_ui_bundle import swagger_ui_path

    assets = create_static_files_router(
        path="/schema/assets",
        directories=[str(swagger_ui_path)],
        include_in_schema=False,
        cache_control=None,
        name="swagger-assets",
    )
    swagger = SwaggerRenderPlugin(
        js_url="/schema/assets/swagger-ui-bundle.js",
        css_url="/schema/assets/swagger-ui.css",
        standalone_preset_js_url="/schema/assets/swagger-ui-standalone-preset.js",
        path="/swagger",
        favicon="<link rel='icon' type='image/png' href='/schema/assets/favicon-32x32.png'>",
    )
    config = OpenAPIConfig(
        title="rwkv-rag-gateway", version="0.1.0", path="/schema", render_plugins=[swagger]
    )
    return config, [assets]


def create_app(
    settings: Settings | None = None,
    engines: EngineRegistry | None = None,
    *,
    storage_meter: StorageMeter | None = None,
) -> Litestar:
    """Build the gateway. ``engines`` may be a registry the caller owns (it is not closed);
    ``storage_meter`` measures each project's stored bytes for the storage quota."""
    settings = settings or Settings()
    ctx = compose(settings, engines, storage_meter=storage_meter)
    metrics = ctx.metrics
    lifespan = _Lifespan(ctx, owns_registry=engines is None)
    route_handlers: list[Any] = [
        *models.routes,
        *embeddings.routes,
        *rerank.routes,
        *chat.routes,
        *health.routes,
    ]
    full = settings.role == "all"
    if full:
        route_handlers += [
            *responses.routes,
            *conversations.routes,
            *files.routes,
            *vector_stores.routes,
            *dify.routes,
        ]
    if full and settings.mcp.enabled:
        from mcp_server.http import mount

        handler, lifespan.mcp_manager = mount(mcp_server(ctx), settings.mcp)
        route_handlers.append(handler)
    if full and settings.ui.enabled:
        from gateway.routes import ui

        route_handlers.extend(ui.routes(settings.ui.cache_max_age_s))
    console_headers: list[tuple[bytes, bytes]] = []
    if full and settings.ui.enabled:
        from gateway.routes.ui import SECURITY_HEADERS

        console_headers = SECURITY_HEADERS
    openapi, doc_routes = _openapi()
    limits = settings.limits
    keys = KeyTable(settings.auth, settings.api_keys)
    projects = keys.projects | {p.project for p in settings.profiles if p.project}
    app = Litestar(
        route_handlers=[*route_handlers, *doc_routes],
        lifespan=[lifespan],
        exception_handlers=exception_handlers,
        middleware=[
            RequestLogMiddleware,
            DefineMiddleware(ConsoleHeadersMiddleware, headers=console_headers),
            DefineMiddleware(MetricsMiddleware, metrics=metrics, projects=projects),
            DefineMiddleware(AuthMiddleware, keys=keys),
            DefineMiddleware(
                JsonGuardMiddleware,
                max_depth=limits.max_json_depth,
                max_bytes=limits.max_body_bytes,
            ),
            DefineMiddleware(QuotaMiddleware, quotas=ctx.quotas),
        ],
        request_max_body_size=limits.max_body_bytes,
        openapi_config=openapi,
        logging_config=logging_config(settings.log_level, settings.log_json),
        debug=False,
    )
    app.state.ctx = ctx
    return app
