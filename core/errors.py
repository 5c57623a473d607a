"""The one error hierarchy. Domain code raises these; the gateway renders them.

Each class carries its HTTP status, OpenAI error ``type`` and ``code`` as class attributes,
so no caller maps errors by message text.
"""

from __future__ import annotations

import errno

__all__ = [
    "APIError",
    "AuthenticationError",
    "ContextLengthError",
    "EngineError",
    "EngineUnavailableError",
    "InsufficientStorageError",
    "InvalidRequestError",
    "LoopDetectedError",
    "ModelNotFoundError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QueueFullError",
    "QuotaExceededError",
    "StorageUnavailableError",
    "UpstreamStatusError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "is_disk_full",
]


class APIError(Exception):
    status_code: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        # Extra response headers (Retry-After).
        self.headers: dict[str, str] = {}

    def to_dict(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(APIError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_value"


class ContextLengthError(InvalidRequestError):
    code = "context_length_exceeded"


class AuthenticationError(APIError):
    status_code = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(APIError):
    """A route for admins only (never for another project's object: that is a 404)."""

    status_code = 403
    type = "invalid_request_error"
    code = "insufficient_permissions"


class NotFoundError(APIError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class PayloadTooLargeError(APIError):
    status_code = 413
    type = "invalid_request_error"
    code = "request_too_large"


class QueueFullError(APIError):
    status_code = 429
    type = "rate_limit_error"
    code = "queue_full"


class QuotaExceededError(APIError):
    """A project's storage allowance is used up (OpenAI's ``insufficient_quota``)."""

    status_code = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class EngineUnavailableError(APIError):
    status_code = 503
    type = "server_error"
    code = "engine_unavailable"


class StorageUnavailableError(APIError):
    """The knowledge base's database cannot be reached (it is retried on the next call)."""

    status_code = 503
    type = "server_error"
    code = "knowledge_base_unavailable"


class InsufficientStorageError(APIError):
    """The disk (or the database's) is full: nothing was stored, what was stored is kept."""

    status_code = 507
    type = "server_error"
    code = "insufficient_storage"


_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk or a quota is full: an OS write,
    SQLite's SQLITE_FULL, PostgreSQL's disk_full."""
    seen: BaseException | None = exc
    for _ in range(8):  # a bounded walk of the cause chain
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(seen, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if getattr(seen, "sqlstate", None) == _PG_DISK_FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class EngineError(APIError):
    status_code = 500
    type = "server_error"
    code = "engine_error"


class UpstreamUnavailableError(EngineUnavailableError):
    """No upstream of a remote model can take the request now."""

    code = "upstreams_unavailable"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class UpstreamTimeoutError(APIError):
    status_code = 504
    type = "server_error"
    code = "upstream_timeout"


class LoopDetectedError(APIError):
    """A request that came back to a gateway it already went through, or through too many."""

    status_code = 508
    type = "server_error"
    code = "loop_detected"


class UpstreamStatusError(APIError):
    """An upstream's own error answer, passed on with its status and OpenAI-shaped body."""

    def __init__(self, status: int, error: dict[str, object]) -> None:
        super().__init__(str(error.get("message") or f"the upstream answered {status}"))
        self.status_code = status
        fallback = "server_error" if status >= 500 else "invalid_request_error"
        self.type = str(error.get("type") or fallback)
        code, param = error.get("code"), error.get("param")
        self.code = None if code is None else str(code)
        self.param = None if param is None else str(param)
