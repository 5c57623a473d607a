"""Streamable HTTP MCP mounted on the gateway: an ASGI route plus the session manager
the app's lifespan must run (without it every request fails)."""

from __future__ import annotations

from typing import Any

from litestar import asgi
from litestar.types import Receive, Scope, Send
from mcp.server import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings

from mcp_server.config import McpSettings

__all__ = ["mount"]


def mount(server: MCPServer, cfg: McpSettings) -> tuple[Any, Any]:
    """(route handler, session manager) for ``cfg.path``."""
    server.streamable_http_app(
        streamable_http_path=cfg.path,
        json_response=cfg.json_response,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=cfg.dns_rebinding_protection,
            allowed_hosts=cfg.allowed_hosts,
            allowed_origins=cfg.allowed_origins,
        ),
    )
    manager = server.session_manager
    app = StreamableHTTPASGIApp(manager)

    @asgi(cfg.path, name="mcp", copy_scope=True)
    async def mcp_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, send)  # type: ignore[arg-type]

    return mcp_endpoint, manager
