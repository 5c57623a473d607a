"""GET /health (503 while loading or unhealthy) and GET /metrics (Prometheus text, for
admin keys)."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State

from core.errors import PermissionDeniedError
from gateway.state import ctx_of, principal_of


@get("/health", sync_to_thread=False)
def health(state: State) -> Response[dict[str, Any]]:
    ctx = ctx_of(state)
    reg = ctx.registry
    models = {
        m.info.id: {
            "status": m.status,
            "healthy": m.healthy,
            **({"error": m.error} if m.error else {}),
            **(
                {"last_error": m.batcher.last_error}
                if m.batcher is not None and m.batcher.last_error and not m.batcher.healthy
                else {}
            ),
        }
        for m in reg.models.values()
    }
    if not reg.ready:
        failed = any(m.status == "failed" for m in reg.models.values())
        status = "failed" if failed and reg.loaded else "loading"
    else:
        status = "ok" if reg.healthy else "unhealthy"
    code = 200 if status == "ok" else 503
    return Response({"status": status, "models": models}, status_code=code)


@get("/metrics", media_type="text/plain; version=0.0.4")
async def metrics(state: State, request: Request[Any, Any, Any]) -> Response[bytes]:
    # Its series name every project's stores and models: a member key may not read them.
    if not principal_of(request).is_admin:
        raise PermissionDeniedError("/metrics is for admin keys (auth.keys role: admin)")
    body = await asyncio.to_thread(ctx_of(state).metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4")


routes = [health, metrics]
