"""What the gateway's quotas read from the knowledge base: the shared counters table and
the bytes each project stores.

Both reach the backend only through the shared SQL port (``kb.sql``), never through the
knowledge base's service, so they work on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from kb.service import KnowledgeBase
from kb.sql.port import SqlPort
from kb.sql.quotas import SqlQuotaCounters

__all__ = ["FilesStorageMeter", "quota_counters"]


def _port(kb: KnowledgeBase) -> SqlPort | None:
    backend = kb.backend
    return backend if isinstance(backend, SqlPort) else None


def quota_counters(kb: KnowledgeBase) -> SqlQuotaCounters | None:
    """Counters in ``kb``'s database (None for a backend without the shared SQL port)."""
    port = _port(kb)
    return SqlQuotaCounters(port) if port is not None else None


class FilesStorageMeter:
    """A project's stored bytes in the knowledge base: its uploaded files (``files.bytes``)
    and what ingestion stored for its stores (chunks with their vectors, the store files'
    ``usage_bytes``). ``elsewhere`` adds what is kept outside it (stored responses)."""

    def __init__(
        self, kb: KnowledgeBase, elsewhere: Callable[[str], Awaitable[int]] | None = None
    ) -> None:
        self.kb = kb
        self.elsewhere = elsewhere

    async def used(self, project: str) -> int:
        port = _port(self.kb)
        total = 0
        if port is not None:
            total += await asyncio.to_thread(
                port.integer,
                "SELECT coalesce(sum(bytes), 0) AS n FROM files WHERE project = ?",
                [project],
            )
            total += await asyncio.to_thread(
                port.integer,
                "SELECT coalesce(sum(f.usage_bytes), 0) AS n FROM vector_store_files f "
                "JOIN collections c ON c.id = f.collection_id WHERE c.project = ?",
                [project],
            )
        if self.elsewhere is not None:
            total += await self.elsewhere(project)
        return total
