"""The ``ask`` tool: a grounded answer with citations, from a knowledge profile or, when
none is configured, from the stores the server searches, with the first chat model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Protocol

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import BaseModel, Field

from core.tenancy import Principal
from kb.service import KnowledgeBase
from mcp_server.chunk_ids import ChunkIds
from mcp_server.config import McpSettings
from mcp_server.tools.common import READ_ONLY, caller, result, tool_errors
from mcp_server.tools.read import scoped_stores
from rag.service import Citation as SourceCitation

__all__ = ["AnswerLike", "Asker", "register"]


class AnswerLike(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def profile(self) -> str | None: ...
    @property
    def model(self) -> str: ...
    @property
    def citations(self) -> Sequence[SourceCitation]: ...


class Asker(Protocol):
    """What answers questions from the knowledge base (the gateway's chat core)."""

    async def answer(
        self,
        question: str,
        profile: str | None = None,
        *,
        stores: Sequence[str] | None = None,
        who: Principal | None = None,
    ) -> AnswerLike:
        """``stores`` are resolved and searched as ``who``."""
        ...


class Citation(BaseModel):
    index: int
    file_id: str
    filename: str
    chunk_id: str
    score: float
    page: int | None = None


class AskOutput(BaseModel):
    answer: str
    profile: str | None
    model: str
    citations: list[Citation]


def register(
    server: MCPServer, kb: KnowledgeBase, cfg: McpSettings, asker: Asker | None, ids: ChunkIds
) -> None:
    @server.tool(
        description=(
            "Ask a question and get an answer grounded in the knowledge base, with "
            "numbered citations. `profile` picks a knowledge profile (default: the first; "
            "with none configured, the server's stores are searched)."
        ),
        annotations=READ_ONLY,
    )
    async def ask(
        ctx: Context,
        question: Annotated[str, Field(description="The question.")],
        profile: Annotated[str | None, Field(description="Knowledge profile id.")] = None,
    ) -> Annotated[CallToolResult, AskOutput]:
        if asker is None:
            raise ToolError("this server serves no chat model to answer with")
        if not question.strip():
            raise ToolError("question must not be empty")
        who = caller(ctx)
        with tool_errors():
            stores = await scoped_stores(kb, cfg, who, None)
            got = await asker.answer(question, profile, stores=[s.id for s in stores], who=who)
        cites = [
            Citation(
                index=c.index,
                file_id=c.hit.file_id,
                filename=c.hit.filename,
                chunk_id=ids.seal(c.hit.vector_store_id, c.hit.chunk_id),
                score=round(c.hit.score, 6),
                page=c.hit.page,
            )
            for c in got.citations
        ]
        sources = "\n".join(f"[{c.index}] {c.filename} (chunk_id {c.chunk_id})" for c in cites)
        origin = (
            f"profile {got.profile}"
            if got.profile
            else f"{got.model} over {len(stores)} vector store(s)"
        )
        out = AskOutput(answer=got.text, profile=got.profile, model=got.model, citations=cites)
        text = got.text + (f"\n\nSources:\n{sources}" if sources else "")
        return result(out, f"{text}\n\n(answered by {origin})")
