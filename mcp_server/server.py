"""The MCP server: knowledge tools for assistants, a thin adapter over the knowledge base.

``build_server(kb, cfg, asker)`` returns an ``mcp.server.MCPServer``. Read tools: search,
list_vector_stores, list_files, read_chunk, ask. Write tools (add_text, ingest_url,
delete_file) exist only when ``mcp.allow_writes`` is on, limited to ``mcp.writable_stores``
when that is set. Failures a model should read (an unknown store, a bad filter, a refused
URL) are ``ToolError``s, never protocol errors. ``asker`` answers ``ask`` (the gateway
passes its chat core); the server imports nothing of the gateway. Every tool runs as the
caller's principal (``tools.common.caller``) and sees only its projects' stores.
"""

from __future__ import annotations

from mcp.server import MCPServer

from kb.filters import FilterLimits
from kb.service import KnowledgeBase
from mcp_server.chunk_ids import ChunkIds
from mcp_server.config import McpSettings
from mcp_server.tools import ask, read, write
from mcp_server.tools.ask import Asker

__all__ = ["Asker", "build_server"]

INSTRUCTIONS = (
    "Knowledge tools over this gateway's vector stores. Use `search` to find passages "
    "(each hit has a chunk_id; `read_chunk` reads around it), `list_vector_stores` and "
    "`list_files` to see what is there, and `ask` for a grounded answer with citations."
)


def build_server(
    kb: KnowledgeBase,
    cfg: McpSettings | None = None,
    asker: Asker | None = None,
    filter_limits: FilterLimits | None = None,
    chunk_id_key: bytes | None = None,
) -> MCPServer:
    """``chunk_id_key`` seals the chunk ids clients see (``mcp_server.chunk_ids``); without
    one they are valid for this process only."""
    cfg = cfg or McpSettings()
    server = MCPServer(name="rwkv-rag-gateway", instructions=INSTRUCTIONS, version="0.1.0")
    ids = ChunkIds(chunk_id_key)
    read.register(server, kb, cfg, filter_limits or FilterLimits(), ids)
    ask.register(server, kb, cfg, asker, ids)
    if cfg.allow_writes:
        write.register(server, kb, cfg)
    return server
