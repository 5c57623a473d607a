"""Write tools (only with ``mcp.allow_writes``, limited to ``mcp.writable_stores``):
add_text, ingest_url, web_search_ingest, delete_file."""

from __future__ import annotations

import json
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from core.tenancy import Principal
from kb.service import KnowledgeBase
from kb.types import Collection
from mcp_server.config import McpSettings
from mcp_server.tools.common import FileWritten, caller, lookup, result, tool_errors, written

__all__ = ["register"]

WRITE = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False)


class Deleted(BaseModel):
    vector_store_id: str
    file_id: str
    chunks_removed: int


class WebSearchDone(BaseModel):
    vector_store_id: str
    job_id: str
    status: str
    files: list[str]
    failed: int
    error: str | None = None


def register(server: MCPServer, kb: KnowledgeBase, cfg: McpSettings) -> None:
    async def writable(ref: str, who: Principal) -> Collection:
        """A store ``who`` sees that ``mcp.writable_stores`` lets MCP clients change. The
        list names store ids; a name there allows a store only while no other store,
        in any project, has that name (names are unique only within a project)."""
        col = await lookup(kb, ref, who)
        allowed = cfg.writable_stores
        if not allowed or col.id in allowed:
            return col
        if col.name is not None and col.name in allowed:
            named = [c for c in await kb.all_stores() if c.name == col.name]
            if len(named) == 1:
                return col
        raise ToolError(f"vector store {ref!r} is read-only for MCP clients")

    @server.tool(
        description="Add a text note to a vector store (it is chunked, embedded and indexed).",
        annotations=WRITE,
    )
    async def add_text(
        ctx: Context,
        vector_store: Annotated[str, Field(description="Store id or name.")],
        text: Annotated[str, Field(description="The text to store.")],
        title: Annotated[str | None, Field(description="A file name for it.")] = None,
        attributes: Annotated[
            dict[str, Any] | None, Field(description="Attributes for filters.")
        ] = None,
    ) -> Annotated[CallToolResult, FileWritten]:
        who = caller(ctx)
        col = await writable(vector_store, who)
        if not text.strip():
            raise ToolError("text must not be empty")
        with tool_errors():
            sf = await kb.add_text(
                col.id, text, title=title or "note.txt", attributes=attributes, who=who
            )
        return written(sf, f"{sf.file_id} in {col.name or col.id}")

    @server.tool(
        description="Fetch a public web page into a vector store (private addresses refused).",
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True),
    )
    async def ingest_url(
        ctx: Context,
        vector_store: Annotated[str, Field(description="Store id or name.")],
        url: Annotated[str, Field(description="http(s) URL of the page.")],
    ) -> Annotated[CallToolResult, FileWritten]:
        who = caller(ctx)
        col = await writable(vector_store, who)
        with tool_errors():
            sf = await kb.ingest_url(col.id, url, who=who)
            sf = await kb.wait_file(col.id, sf.file_id, timeout=120, who=who)
        return written(sf, f"{url} -> {sf.file_id}")

    @server.tool(
        description=(
            "Search the web (the server's configured provider) and ingest the results "
            "into a vector store; returns the job once it has finished."
        ),
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True),
    )
    async def web_search_ingest(
        ctx: Context,
        vector_store: Annotated[str, Field(description="Store id or name.")],
        query: Annotated[str, Field(description="What to search the web for.")],
        max_results: Annotated[int | None, Field(description="Results to ingest.", ge=1)] = None,
    ) -> Annotated[CallToolResult, WebSearchDone]:
        who = caller(ctx)
        col = await writable(vector_store, who)
        with tool_errors():
            job = await kb.web_search(col.id, query, max_results=max_results, who=who)
            await kb.web.wait(timeout=300)
            job = await kb.job(col.id, job.id, who=who)
        p = job.params
        out = WebSearchDone(
            vector_store_id=col.id,
            job_id=job.id,
            status=job.status,
            files=[str(f) for f in p.get("files") or [] if f],  # type: ignore[attr-defined]
            failed=len(p.get("failed") or []),  # type: ignore[arg-type]
            error=job.error,
        )
        return result(out, json.dumps(out.model_dump()))

    @server.tool(
        description="Remove a file from a vector store (its chunks leave the index).",
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False),
    )
    async def delete_file(
        ctx: Context,
        vector_store: Annotated[str, Field(description="Store id or name.")],
        file_id: Annotated[str, Field(description="The file id (from list_files).")],
    ) -> Annotated[CallToolResult, Deleted]:
        who = caller(ctx)
        col = await writable(vector_store, who)
        with tool_errors(f"file {file_id!r} is not in vector store {vector_store!r}"):
            removed = await kb.detach(col.id, file_id, who=who)
        out = Deleted(vector_store_id=col.id, file_id=file_id, chunks_removed=removed)
        return result(out, json.dumps(out.model_dump()))
