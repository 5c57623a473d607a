"""Chat and text completions: request checks (``params``), SSE (``stream``) and the
service that strings retrieval, rendering and generation together (``service``)."""

from gateway.services.chat.service import Answer, ChatService

__all__ = ["Answer", "ChatService"]
