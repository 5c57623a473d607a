"""POST /v1/rerank (also /rerank and /v2/rerank): Cohere/Jina request and response shape."""

from __future__ import annotations

from litestar import post
from litestar.datastructures import State
from litestar.params import JSONBody

from gateway.schemas.rerank import RerankRequest, RerankResponse
from gateway.state import ctx_of


@post(["/v1/rerank", "/rerank", "/v2/rerank"], status_code=200)
async def rerank(state: State, data: JSONBody[RerankRequest]) -> RerankResponse:
    return await ctx_of(state).rerank.rerank(data)


routes = [rerank]
