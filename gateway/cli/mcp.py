"""`rwkv-rag mcp`: the knowledge tools over stdio (Claude Desktop, Cursor), no HTTP server.

stdout carries the protocol: logs go to stderr, and the rwkv package's banners are
already kept off stdout by the engine loader.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["register"]


async def _serve_stdio(config: str | None) -> None:
    from gateway.services.chat import ChatService
    from gateway.services.knowledge import filter_limits, local_knowledge_base
    from gateway.settings import load_settings
    from mcp_server.server import build_server
    from rag.catalog import ProfileCatalog
    from rag.service import RagService

    settings = load_settings(config)
    # Chat models are loaded only when a profile needs one (for `ask`).
    needed = {p.model for p in settings.profiles}
    needed |= {settings.aliases.get(n, n) for n in needed}
    models = [m for m in settings.models if m.kind != "chat" or m.id in needed]
    settings = settings.model_copy(update={"models": models})
    catalog = ProfileCatalog.build(settings.profiles, settings.model_names("chat"))
    async with local_knowledge_base(settings) as (kb, registry):
        await kb.start()
        rag = RagService(kb, catalog, settings.rag, filter_limits(settings.limits))
        chat = ChatService(registry, settings.chat, catalog, rag)
        await build_server(kb, settings.mcp, chat).run_stdio_async()


def _cmd(args: argparse.Namespace) -> int:
    from gateway.logging import configure_logging

    configure_logging("WARNING", True)
    asyncio.run(_serve_stdio(args.config))
    return 0


def register(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("mcp", help="serve the knowledge tools over MCP stdio")
    add_config(p)
    p.set_defaults(func=_cmd)
