"""The ``ask`` tool: a grounded answer with citations from a knowledge profile."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Protocol

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import BaseModel, Field

from mcp_server.tools.common import READ_ONLY, result, tool_errors

__all__ = ["AnswerLike", "Asker", "register"]


class AnswerLike(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def profile(self) -> str: ...
    @property
    def citations(self) -> Sequence[dict[str, Any]]: ...


class Asker(Protocol):
    """What answers questions from the knowledge base (the gateway's chat service)."""

    async def answer(self, question: str, profile: str | None = None) -> AnswerLike: ...


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


def register(server: MCPServer, asker: Asker | None) -> None:
    @server.tool(
        description=(
            "Ask a question and get an answer grounded in the knowledge base, with "
            "numbered citations. `profile` picks a knowledge profile (default: the first)."
        ),
        annotations=READ_ONLY,
    )
    async def ask(
        question: Annotated[str, Field(description="The question.")],
        profile: Annotated[str | None, Field(description="Knowledge profile id.")] = None,
    ) -> Annotated[CallToolResult, AskOutput]:
        if asker is None:
            raise ToolError("no knowledge profile is configured on this server")
        with tool_errors():
            got = await asker.answer(question, profile)
        cites = [
            Citation(
                index=c["index"],
                file_id=c["file_id"],
                filename=c["filename"],
                chunk_id=c["chunk_id"],
                score=c["score"],
                page=c.get("page"),
            )
            for c in got.citations
        ]
        sources = "\n".join(f"[{c.index}] {c.filename} (chunk_id {c.chunk_id})" for c in cites)
        out = AskOutput(answer=got.text, profile=got.profile, citations=cites)
        return result(out, got.text + (f"\n\nSources:\n{sources}" if sources else ""))
