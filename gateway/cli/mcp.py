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
    from gateway.compose import local_context, mcp_server
    from gateway.settings import load_settings

    settings = load_settings(config)
    # Chat models are loaded only when a profile needs one (for `ask`), or, with no
    # profile, the first chat model (`ask` then searches the stores with it).
    needed = {p.model for p in settings.profiles}
    needed |= {settings.aliases.get(n, n) for n in needed}
    chat_models = [m.id for m in settings.models if m.kind == "chat"]
    if not settings.profiles and chat_models:
        needed.add(chat_models[0])
    models = [m for m in settings.models if m.kind != "chat" or m.id in needed]
    settings = settings.model_copy(update={"models": models})
    async with local_context(settings) as ctx:
        await ctx.kb.start()
        await mcp_server(ctx).run_stdio_async()


def _cmd(args: argparse.Namespace) -> int:
    from gateway.logging import configure_logging

    configure_logging("WARNING", True)
    asyncio.run(_serve_stdio(args.config))
    return 0


def register(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("mcp", help="serve the knowledge tools over MCP stdio")
    add_config(p)
    p.set_defaults(func=_cmd)
