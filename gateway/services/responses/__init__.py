"""The Responses API (``/v1/responses``) over the chat service."""

from gateway.services.responses.service import ResponsesService
from gateway.services.responses.store import ResponseStore

__all__ = ["ResponseStore", "ResponsesService"]
