"""What every tool group shares: output models, the one translator from the knowledge
base's errors to ``ToolError`` (which the model reads), who a call runs as, and store
lookup.

Every tool runs as the caller's principal: over Streamable HTTP the gateway's auth
middleware has put it in the request's ASGI scope (``scope["state"]["principal"]``);
over stdio (no HTTP request) it is the local admin. Chunk ids on the wire are sealed
tokens (``mcp_server.chunk_ids``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from core.errors import APIError, NotFoundError
from core.tenancy import LOCAL_ADMIN, Principal
from kb.service import KnowledgeBase
from kb.types import ChunkView, Collection, SearchHit, StoreFile
from mcp_server.chunk_ids import ChunkIds

__all__ = [
    "READ_ONLY",
    "ChunkInfo",
    "FileWritten",
    "Hit",
    "caller",
    "lookup",
    "result",
    "tool_errors",
    "where",
    "written",
]

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


class Hit(BaseModel):
    chunk_id: str
    vector_store_id: str
    file_id: str
    filename: str
    score: float
    text: str
    page: int | None = None
    sheet: str | None = None
    row: int | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, h: SearchHit, ids: ChunkIds) -> Hit:
        return cls(
            chunk_id=ids.seal(h.vector_store_id, h.chunk_id),
            vector_store_id=h.vector_store_id,
            file_id=h.file_id,
            filename=h.filename,
            score=round(h.score, 4),
            text=h.text,
            page=h.page,
            sheet=h.sheet,
            row=h.row,
            attributes=dict(h.attributes),
        )


class ChunkInfo(BaseModel):
    chunk_id: str
    position: int
    text: str
    page: int | None = None
    sheet: str | None = None
    row: int | None = None

    @classmethod
    def of(cls, c: ChunkView, ids: ChunkIds) -> ChunkInfo:
        return cls(
            chunk_id=ids.seal(c.collection_id, c.id),
            position=c.position,
            text=c.text,
            page=c.page,
            sheet=c.sheet,
            row=c.row,
        )


class FileWritten(BaseModel):
    vector_store_id: str
    file_id: str
    status: str
    last_error: str | None = None


@contextlib.contextmanager
def tool_errors(what: str | None = None) -> Iterator[None]:
    """Knowledge-base errors as tool errors; ``what`` names the missing thing on a 404."""
    try:
        yield
    except NotFoundError as exc:
        raise ToolError(what or exc.message) from None
    except APIError as exc:
        raise ToolError(exc.message) from None


# Where the gateway's auth middleware keeps the request's principal in the ASGI scope.
_STATE_KEY = "principal"


def caller(ctx: Context) -> Principal:
    """The principal a tool call runs as: the HTTP request's (set by the gateway's auth
    middleware), or the local admin over stdio, where there is no HTTP request."""
    try:
        request = ctx.request_context.request
    except ValueError:  # called outside a request (a tool invoked in-process)
        return LOCAL_ADMIN
    if request is None:
        return LOCAL_ADMIN
    scope = getattr(request, "scope", None)
    state = scope.get("state") if isinstance(scope, dict) else None
    found = state.get(_STATE_KEY) if isinstance(state, dict) else None
    if isinstance(found, Principal):
        return found
    # An HTTP request that did not come through the gateway's auth runs as nobody.
    raise ToolError("this request carries no authenticated caller")


async def lookup(kb: KnowledgeBase, ref: str, who: Principal) -> Collection:
    """A store ``who`` sees by id or name; an unknown one (or another project's) is a tool
    error that does not list the others."""
    with tool_errors(f"vector store {ref!r} does not exist (list_vector_stores shows the stores)"):
        return await kb.collection(ref, who=who)


def result(structured: BaseModel, text: str) -> CallToolResult:
    """Readable text for the model plus the structured result for programs."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured.model_dump(mode="json"),
    )


def written(sf: StoreFile, what: str) -> CallToolResult:
    """The result of a write tool from the vector store file it produced."""
    err = sf.last_error.message if sf.last_error else None
    out = FileWritten(
        vector_store_id=sf.collection_id, file_id=sf.file_id, status=sf.status, last_error=err
    )
    return result(out, f"{sf.status}: {what}" + (f" ({err})" if err else ""))


def where(page: int | None, sheet: str | None, row: int | None) -> str:
    if page is not None:
        return f", page {page}"
    if sheet is not None:
        return f", sheet {sheet} row {row}"
    return ""
