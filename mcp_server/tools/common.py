"""What every tool group shares: output models, the one translator from the knowledge
base's errors to ``ToolError`` (which the model reads), and store lookup."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from core.errors import APIError, NotFoundError
from kb.service import KnowledgeBase
from kb.types import ChunkView, Collection, SearchHit, StoreFile

__all__ = [
    "READ_ONLY",
    "ChunkInfo",
    "FileWritten",
    "Hit",
    "lookup",
    "result",
    "tool_errors",
    "where",
    "written",
]

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


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

    @classmethod
    def of(cls, h: SearchHit) -> Hit:
        return cls(
            chunk_id=h.chunk_id,
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
    chunk_id: int
    position: int
    text: str
    page: int | None = None
    sheet: str | None = None
    row: int | None = None

    @classmethod
    def of(cls, c: ChunkView) -> ChunkInfo:
        return cls(
            chunk_id=c.id, position=c.position, text=c.text, page=c.page, sheet=c.sheet, row=c.row
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


async def lookup(kb: KnowledgeBase, ref: str) -> Collection:
    """A store by id or name; an unknown one is a tool error that does not list the others."""
    with tool_errors(f"vector store {ref!r} does not exist (list_vector_stores shows the stores)"):
        return await kb.collection(ref)


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
