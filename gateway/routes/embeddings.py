"""POST /v1/embeddings."""

from __future__ import annotations

from typing import Any

from litestar import Response, post
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody

from gateway.schemas.common import ErrorResponse
from gateway.schemas.embeddings import EmbeddingRequest, EmbeddingResponse
from gateway.state import ctx_of


@post(
    "/v1/embeddings",
    status_code=200,
    responses={
        200: ResponseSpec(
            EmbeddingResponse, description="Embeddings, float or base64", generate_examples=False
        ),
        400: ResponseSpec(ErrorResponse, description="Invalid request", generate_examples=False),
    },
)
async def create_embeddings(state: State, data: JSONBody[EmbeddingRequest]) -> Response[Any]:
    # A local model's answer, or a remote model's as its upstream gave it.
    return Response(await ctx_of(state).embeddings.create(data), status_code=200)


routes = [create_embeddings]
