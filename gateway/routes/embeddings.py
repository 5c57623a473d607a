"""POST /v1/embeddings."""

from __future__ import annotations

from litestar import post
from litestar.datastructures import State
from litestar.params import JSONBody

from gateway.schemas.embeddings import EmbeddingRequest, EmbeddingResponse
from gateway.state import ctx_of


@post("/v1/embeddings", status_code=200)
async def create_embeddings(state: State, data: JSONBody[EmbeddingRequest]) -> EmbeddingResponse:
    return await ctx_of(state).embeddings.create(data)


routes = [create_embeddings]
