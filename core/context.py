"""Context of the request being served, readable by any package without the gateway."""

from __future__ import annotations

import contextvars
import secrets

__all__ = ["HOPS_HEADER", "hops", "instance_id", "request_id"]

# The id of the request being served: in every record logged while serving it, and sent
# on to upstream servers (X-Request-Id) so their logs name the same request.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# This process among gateways: a gateway that forwards a request appends it to the hop
# list, so one that meets its own id again (an upstream url pointing back at a gateway of
# the chain) refuses instead of fanning the request out into nested copies of itself.
instance_id: str = secrets.token_hex(8)

HOPS_HEADER = "x-rwkv-rag-hops"

# The gateways the request being served already went through (its X-RWKV-RAG-Hops).
hops: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("hops", default=())
