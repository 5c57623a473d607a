"""Read tools: search, list_vector_stores, list_files, read_chunk."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import BaseModel, Field

from core.tenancy import Principal
from kb.filters import FilterLimits, parse_filter
from kb.retrieval import SearchQuery
from kb.service import KnowledgeBase
from kb.types import Collection, PageRequest, SearchHit
from mcp_server.chunk_ids import ChunkIds
from mcp_server.config import McpSettings
from mcp_server.tools.common import (
    READ_ONLY,
    ChunkInfo,
    Hit,
    caller,
    lookup,
    result,
    tool_errors,
    where,
)

__all__ = ["register", "scoped_stores"]


class SearchOutput(BaseModel):
    query: str
    hits: list[Hit]


class StoreInfo(BaseModel):
    id: str
    name: str | None
    files: int
    chunks: int
    embedding_model: str


class StoresOutput(BaseModel):
    vector_stores: list[StoreInfo]


class FileInfo(BaseModel):
    file_id: str
    filename: str
    status: str
    bytes: int
    attributes: dict[str, Any] = Field(default_factory=dict)
    last_error: str | None = None


class FilesOutput(BaseModel):
    vector_store_id: str
    files: list[FileInfo]


class ChunksOutput(BaseModel):
    vector_store_id: str
    file_id: str
    filename: str
    chunks: list[ChunkInfo]


SEARCH_HELP = (
    "Search the knowledge base. Returns the best passages with file name, page or "
    "sheet/row, relevance score (0-1) and chunk_id (read around it with read_chunk). "
    "`filters` use the OpenAI vector store syntax, e.g. "
    '{"type": "eq", "key": "team", "value": "finance"}.'
)


def register(
    server: MCPServer, kb: KnowledgeBase, cfg: McpSettings, limits: FilterLimits, ids: ChunkIds
) -> None:
    @server.tool(description=SEARCH_HELP, annotations=READ_ONLY)
    async def search(
        ctx: Context,
        query: Annotated[str, Field(description="What to look for, in natural language.")],
        vector_store: Annotated[
            str | None, Field(description="Store id or name; default: all stores.")
        ] = None,
        top_k: Annotated[int, Field(ge=1, le=50, description="How many passages.")] = 5,
        filters: Annotated[
            dict[str, Any] | None, Field(description="Attribute filter (optional).")
        ] = None,
    ) -> Annotated[CallToolResult, SearchOutput]:
        if not query.strip():
            raise ToolError("query must not be empty")
        who = caller(ctx)
        stores = await scoped_stores(kb, cfg, who, [vector_store] if vector_store else None)
        hits: list[SearchHit] = []
        with tool_errors():
            flt = parse_filter(filters, limits=limits) if filters else None
            for col in stores:
                q = SearchQuery((query,), top_k, filter=flt)
                hits.extend((await kb.search(col.id, q, who=who)).hits)
        hits.sort(key=lambda h: -h.score)
        out = [Hit.of(h, ids) for h in hits[:top_k]]
        text = "\n\n".join(
            f"[{i}] {h.filename}{where(h.page, h.sheet, h.row)} (score {h.score:.2f}, "
            f"chunk_id {h.chunk_id})\n{h.text}"
            for i, h in enumerate(out, start=1)
        )
        return result(SearchOutput(query=query, hits=out), text or "No passages found.")

    @server.tool(
        description="List the vector stores: id, name, files, chunks.", annotations=READ_ONLY
    )
    async def list_vector_stores(ctx: Context) -> Annotated[CallToolResult, StoresOutput]:
        infos = []
        for col in await kb.all_stores(who=caller(ctx)):
            view = await kb.view(col)
            infos.append(
                StoreInfo(
                    id=col.id,
                    name=col.name,
                    files=view.stats.file_counts.total,
                    chunks=view.stats.chunk_count,
                    embedding_model=col.embedding_model,
                )
            )
        text = "\n".join(
            f"{s.id}  {s.name or '-'}  files={s.files} chunks={s.chunks}" for s in infos
        )
        return result(StoresOutput(vector_stores=infos), text or "No vector stores.")

    @server.tool(
        description="List the files in a vector store with their status.", annotations=READ_ONLY
    )
    async def list_files(
        ctx: Context,
        vector_store: Annotated[str, Field(description="Store id or name.")],
    ) -> Annotated[CallToolResult, FilesOutput]:
        who = caller(ctx)
        col = await lookup(kb, vector_store, who)
        page = await kb.store_files(col.id, PageRequest(limit=1000, order="asc"), who=who)
        files = [
            FileInfo(
                file_id=sf.file_id,
                filename=sf.filename or sf.file_id,
                status=sf.status,
                bytes=sf.bytes or 0,
                attributes=dict(sf.attributes),
                last_error=sf.last_error.message if sf.last_error else None,
            )
            for sf in page.data
        ]
        text = "\n".join(f"{f.file_id}  {f.status:<11} {f.filename}" for f in files)
        return result(FilesOutput(vector_store_id=col.id, files=files), text or "No files.")

    @server.tool(
        description=(
            "Read a chunk by chunk_id (from search), with up to `neighbours` chunks before "
            "and after it in the same file."
        ),
        annotations=READ_ONLY,
    )
    async def read_chunk(
        ctx: Context,
        chunk_id: Annotated[str, Field(description="A chunk_id from search.", max_length=512)],
        neighbours: Annotated[int, Field(ge=0, le=10, description="Chunks either side.")] = 0,
    ) -> Annotated[CallToolResult, ChunksOutput]:
        who = caller(ctx)
        missing = f"chunk {chunk_id!r} does not exist"
        sealed = ids.open(chunk_id)
        if sealed is None:
            raise ToolError(missing)
        store_id, number = sealed
        with tool_errors(missing):
            rows = await kb.read_chunk(number, neighbours, who=who)
        first = next((r for r in rows if r.id == number), rows[0])
        if first.collection_id != store_id:
            raise ToolError(missing)
        record = await kb.file_record(first.file_id, who=who)
        out = ChunksOutput(
            vector_store_id=first.collection_id,
            file_id=first.file_id,
            filename=record.filename if record else first.file_id,
            chunks=[ChunkInfo.of(r, ids) for r in rows],
        )
        text = "\n\n".join(
            f"{'>> ' if c.chunk_id == chunk_id else ''}chunk {c.chunk_id}"
            f"{where(c.page, c.sheet, c.row)}:\n{c.text}"
            for c in out.chunks
        )
        return result(out, f"{out.filename}\n\n{text}")


async def scoped_stores(
    kb: KnowledgeBase, cfg: McpSettings, who: Principal, refs: list[str] | None
) -> list[Collection]:
    """The stores a call searches: those named, else ``mcp.default_stores`` among those
    ``who`` sees (another project's default store is skipped, not an error), else every
    store ``who`` sees."""
    if refs:
        return [await lookup(kb, r, who) for r in refs]
    mine = await kb.all_stores(who=who)
    if not cfg.default_stores:
        return mine
    wanted = set(cfg.default_stores)
    return [c for c in mine if c.id in wanted or (c.name is not None and c.name in wanted)]
