"""The MCP server: knowledge tools for assistants, thin adapters over kb/ and the RAG chat.

``build_server(kb, engines, settings)`` returns an ``mcp.server.MCPServer``. Read tools:
search, list_vector_stores, list_files, read_chunk, ask. Write tools (add_text,
ingest_url, delete_file) exist only when ``mcp.allow_writes`` is on, limited to
``mcp.writable_stores`` when that is set. Failures a model should read (an unknown store,
a bad filter, a refused URL) are ``ToolError``s, never protocol errors.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from engines.errors import APIError
from engines.registry import EngineRegistry
from gateway.settings import Settings
from kb.service import KnowledgeBase, SearchResult

__all__ = ["build_server"]

INSTRUCTIONS = (
    "Knowledge tools over this gateway's vector stores. Use `search` to find passages "
    "(each hit has a chunk_id; `read_chunk` reads around it), `list_vector_stores` and "
    "`list_files` to see what is there, and `ask` for a grounded answer with citations."
)


class Hit(BaseModel):
    chunk_id: int
    vector_store_id: str
    file_id: str
    filename: str
    score: float
    text: str
    page: int | None = None
    sheet: str | None = None
    row: int | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


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


class ChunkInfo(BaseModel):
    chunk_id: int
    position: int
    text: str
    page: int | None = None
    sheet: str | None = None
    row: int | None = None


class ChunksOutput(BaseModel):
    vector_store_id: str
    file_id: str
    filename: str
    chunks: list[ChunkInfo]


class Citation(BaseModel):
    index: int
    file_id: str
    filename: str
    chunk_id: int
    score: float
    page: int | None = None


class AskOutput(BaseModel):
    answer: str
    profile: str
    citations: list[Citation]


class FileWritten(BaseModel):
    vector_store_id: str
    file_id: str
    status: str
    last_error: str | None = None


class Deleted(BaseModel):
    vector_store_id: str
    file_id: str
    chunks_removed: int


def _result(structured: BaseModel, text: str) -> CallToolResult:
    """Readable text for the model plus the structured result for programs."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured.model_dump(mode="json"),
    )


def _written(row: dict[str, Any], what: str) -> CallToolResult:
    """The result of a write tool from the vector store file it produced."""
    err = (row["last_error"] or {}).get("message")
    out = FileWritten(
        vector_store_id=row["collection_id"],
        file_id=row["file_id"],
        status=row["status"],
        last_error=err,
    )
    return _result(out, f"{row['status']}: {what}" + (f" ({err})" if err else ""))


def _where(h: Hit | ChunkInfo) -> str:
    if h.page is not None:
        return f", page {h.page}"
    if h.sheet is not None:
        return f", sheet {h.sheet} row {h.row}"
    return ""


def build_server(
    kb: KnowledgeBase,
    engines: EngineRegistry,
    settings: Settings,
    *,
    chat: Any = None,
) -> MCPServer:
    """The MCP server over ``kb``; ``chat`` is the gateway's ChatService (built from
    ``engines`` when not given) for ``ask``."""
    cfg = settings.mcp
    server = MCPServer(name="rwkv-rag-gateway", instructions=INSTRUCTIONS, version="0.1.0")
    if chat is None:
        from gateway.services.chat import ChatService
        from gateway.services.rag import RagService

        chat = ChatService(engines, settings.chat)
        chat.rag = RagService(kb, settings.profiles, settings.rag)

    def store(name: str) -> dict[str, Any]:
        try:
            return kb.collection_by_name(name)
        except APIError:
            known = ", ".join(c["name"] or c["id"] for c in kb.collections()) or "none"
            raise ToolError(
                f"vector store {name!r} does not exist (known stores: {known})"
            ) from None

    def writable(name: str) -> dict[str, Any]:
        col = store(name)
        allowed = cfg.writable_stores
        if allowed and col["id"] not in allowed and col["name"] not in allowed:
            raise ToolError(f"vector store {name!r} is read-only for MCP clients")
        return col

    def hit(r: SearchResult) -> Hit:
        return Hit(
            chunk_id=r.chunk_id,
            vector_store_id=r.vector_store_id,
            file_id=r.file_id,
            filename=r.filename,
            score=round(r.score, 4),
            text=r.text,
            page=r.page,
            sheet=r.sheet,
            row=r.row,
            attributes=r.attributes,
        )

    read_only = ToolAnnotations(readOnlyHint=True, openWorldHint=False)

    @server.tool(
        description=(
            "Search the knowledge base. Returns the best passages with file name, page or "
            "sheet/row, relevance score (0-1) and chunk_id (read around it with read_chunk). "
            "`filters` use the OpenAI vector store syntax, e.g. "
            '{"type": "eq", "key": "team", "value": "finance"}.'
        ),
        annotations=read_only,
    )
    async def search(
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
        if vector_store:
            stores = [store(vector_store)]
        elif cfg.default_stores:
            stores = [store(s) for s in cfg.default_stores]
        else:
            stores = kb.collections()
        results: list[SearchResult] = []
        try:
            for col in stores:
                results.extend((await kb.search(col["id"], query, top_k, filters=filters)).results)
        except APIError as exc:
            raise ToolError(exc.message) from None
        results.sort(key=lambda r: -r.score)
        hits = [hit(r) for r in results[:top_k]]
        text = "\n\n".join(
            f"[{i}] {h.filename}{_where(h)} (score {h.score:.2f}, chunk_id {h.chunk_id})\n{h.text}"
            for i, h in enumerate(hits, start=1)
        )
        return _result(SearchOutput(query=query, hits=hits), text or "No passages found.")

    @server.tool(
        description="List the vector stores: id, name, files, chunks.", annotations=read_only
    )
    async def list_vector_stores() -> Annotated[CallToolResult, StoresOutput]:
        infos = [
            StoreInfo(
                id=c["id"],
                name=c["name"],
                files=kb.store.file_counts(c["id"])["total"],
                chunks=kb.store.count(c["id"]),
                embedding_model=c["embedding_model"],
            )
            for c in kb.collections()
        ]
        text = "\n".join(
            f"{s.id}  {s.name or '-'}  files={s.files} chunks={s.chunks}" for s in infos
        )
        return _result(StoresOutput(vector_stores=infos), text or "No vector stores.")

    @server.tool(
        description="List the files in a vector store with their status.", annotations=read_only
    )
    async def list_files(
        vector_store: Annotated[str, Field(description="Store id or name.")],
    ) -> Annotated[CallToolResult, FilesOutput]:
        col = store(vector_store)
        files = []
        for r in kb.store.store_files(col["id"]):
            f = kb.store.file(r["file_id"]) or {}
            files.append(
                FileInfo(
                    file_id=r["file_id"],
                    filename=f.get("filename", r["file_id"]),
                    status=r["status"],
                    bytes=int(f.get("bytes", 0)),
                    attributes=r["attributes"],
                    last_error=(r["last_error"] or {}).get("message"),
                )
            )
        text = "\n".join(f"{f.file_id}  {f.status:<11} {f.filename}" for f in files)
        return _result(FilesOutput(vector_store_id=col["id"], files=files), text or "No files.")

    @server.tool(
        description=(
            "Read a chunk by chunk_id (from search), with up to `neighbours` chunks before "
            "and after it in the same file."
        ),
        annotations=read_only,
    )
    async def read_chunk(
        chunk_id: Annotated[int, Field(description="A chunk_id from search.")],
        neighbours: Annotated[int, Field(ge=0, le=10, description="Chunks either side.")] = 0,
    ) -> Annotated[CallToolResult, ChunksOutput]:
        try:
            rows = kb.read_chunk(chunk_id, neighbours)
        except APIError:
            raise ToolError(f"chunk {chunk_id} does not exist") from None
        first = rows[0]
        f = kb.store.file(first["file_id"]) or {}
        chunks = [
            ChunkInfo(
                chunk_id=r["id"],
                position=r["position"],
                text=r["text"],
                page=r["page"],
                sheet=r["sheet"],
                row=r["row"],
            )
            for r in rows
        ]
        out = ChunksOutput(
            vector_store_id=first["collection_id"],
            file_id=first["file_id"],
            filename=f.get("filename", first["file_id"]),
            chunks=chunks,
        )
        text = "\n\n".join(
            f"{'>> ' if c.chunk_id == chunk_id else ''}chunk {c.chunk_id}{_where(c)}:\n{c.text}"
            for c in chunks
        )
        return _result(out, f"{out.filename}\n\n{text}")

    @server.tool(
        description=(
            "Ask a question and get an answer grounded in the knowledge base, with "
            "numbered citations. `profile` picks a knowledge profile (default: the first)."
        ),
        annotations=read_only,
    )
    async def ask(
        question: Annotated[str, Field(description="The question.")],
        profile: Annotated[str | None, Field(description="Knowledge profile id.")] = None,
    ) -> Annotated[CallToolResult, AskOutput]:
        from gateway.schemas_chat import ChatCompletionRequest, ChatMessage

        if not settings.profiles:
            raise ToolError("no knowledge profile is configured on this server")
        name = profile or settings.profiles[0].id
        if name not in {p.id for p in settings.profiles}:
            known = ", ".join(p.id for p in settings.profiles)
            raise ToolError(f"profile {name!r} does not exist (profiles: {known})")
        req = ChatCompletionRequest(
            model=name, messages=[ChatMessage(role="user", content=question)]
        )
        try:
            result = await chat.chat(req)
        except APIError as exc:
            raise ToolError(exc.message) from None
        answer = result.choices[0].message.content or ""
        raw = result.citations if isinstance(result.citations, list) else []
        cites = [
            Citation(
                index=c["index"],
                file_id=c["file_id"],
                filename=c["filename"],
                chunk_id=c["chunk_id"],
                score=c["score"],
                page=c.get("page"),
            )
            for c in raw
        ]
        sources = "\n".join(f"[{c.index}] {c.filename} (chunk_id {c.chunk_id})" for c in cites)
        out = AskOutput(answer=answer, profile=name, citations=cites)
        return _result(out, answer + (f"\n\nSources:\n{sources}" if sources else ""))

    if not cfg.allow_writes:
        return server

    write = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False)

    @server.tool(
        description="Add a text note to a vector store (it is chunked, embedded and indexed).",
        annotations=write,
    )
    async def add_text(
        vector_store: Annotated[str, Field(description="Store id or name.")],
        text: Annotated[str, Field(description="The text to store.")],
        title: Annotated[str | None, Field(description="A file name for it.")] = None,
        attributes: Annotated[
            dict[str, Any] | None, Field(description="Attributes for filters.")
        ] = None,
    ) -> Annotated[CallToolResult, FileWritten]:
        col = writable(vector_store)
        if not text.strip():
            raise ToolError("text must not be empty")
        try:
            row = await kb.add_text(
                col["id"], text, title=title or "note.txt", attributes=attributes
            )
        except APIError as exc:
            raise ToolError(exc.message) from None
        return _written(row, f"{row['file_id']} in {col['name'] or col['id']}")

    @server.tool(
        description="Fetch a public web page into a vector store (private addresses refused).",
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True),
    )
    async def ingest_url(
        vector_store: Annotated[str, Field(description="Store id or name.")],
        url: Annotated[str, Field(description="http(s) URL of the page.")],
    ) -> Annotated[CallToolResult, FileWritten]:
        col = writable(vector_store)
        try:
            row = await kb.ingest_url(col["id"], url)
            row = await kb.wait_file(col["id"], row["file_id"], timeout=120)
        except APIError as exc:
            raise ToolError(exc.message) from None
        return _written(row, f"{url} -> {row['file_id']}")

    @server.tool(
        description="Remove a file from a vector store (its chunks leave the index).",
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False),
    )
    async def delete_file(
        vector_store: Annotated[str, Field(description="Store id or name.")],
        file_id: Annotated[str, Field(description="The file id (from list_files).")],
    ) -> Annotated[CallToolResult, Deleted]:
        col = writable(vector_store)
        try:
            removed = await kb.detach(col["id"], file_id)
        except APIError:
            raise ToolError(f"file {file_id!r} is not in vector store {vector_store!r}") from None
        out = Deleted(vector_store_id=col["id"], file_id=file_id, chunks_removed=removed)
        return _result(out, json.dumps(out.model_dump()))

    return server
