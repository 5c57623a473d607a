"""Context of the request being served, readable by any package without the gateway."""

from __future__ import annotations

import contextvars

__all__ = ["request_id"]

# The id of the request being served: in every record logged while serving it, and sent
# on to upstream servers (X-Request-Id) so their logs name the same request.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
