"""Chat completions and completions on the wire: requests as chat-core commands
(``commands``), generations as JSON or SSE (``stream``), the service between (``service``)."""

from gateway.services.chat.service import ChatService

__all__ = ["ChatService"]
