"""Dify's external knowledge API: POST /retrieval, so Dify can use our vector stores.

Request ``{knowledge_id, query, retrieval_setting{top_k, score_threshold},
metadata_condition?}``; answer ``{records: [{content, score, title, metadata}]}``. Errors
use Dify's shape ``{error_code, error_msg}``: 1001/1002 for auth (in the middleware),
2001 when the knowledge does not exist.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, Response, post
from litestar.datastructures import State

from gateway.services.dify import DifyError, parse_request, records, retrieve
from gateway.state import ctx_of, principal_of


@post("/retrieval", status_code=200)
async def retrieval(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    ctx = ctx_of(state)
    try:
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):
            raise DifyError(400, 400, "the request body is not valid JSON") from None
        req = parse_request(body, ctx.settings.limits.max_filter_conditions)
        cid, outcome = await retrieve(ctx.kb, req, principal_of(request))
    except DifyError as exc:
        return Response({"error_code": exc.code, "error_msg": exc.message}, status_code=exc.status)
    return Response({"records": records(cid, outcome)}, status_code=200)


routes = [retrieval]
