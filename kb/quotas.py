"""What the gateway's quotas read from the knowledge base: the shared counters table and
the bytes each project stores.

Both reach the backend only through the shared SQL port (``kb.sql``), never through the
knowledge base's service, so they work on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import asyncio

from kb.service import KnowledgeBase
from kb.sql.port import SqlPort
from kb.sql.quotas import SqlQuotaCounters

__all__ = ["FilesStorageMeter", "quota_counters"]


_HAS_PROJECT = {
    "sqlite": "SELECT count(*) AS n FROM pragma_table_info('files') WHERE name = 'project'",
    "postgres": (
        "SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = 'files' AND column_name = 'project'"
    ),
}


def _port(kb: KnowledgeBase) -> SqlPort | None:
    backend = kb.backend
    return backend if isinstance(backend, SqlPort) else None


def quota_counters(kb: KnowledgeBase) -> SqlQuotaCounters | None:
    """Counters in ``kb``'s database (None for a backend without the shared SQL port)."""
    port = _port(kb)
    return SqlQuotaCounters(port) if port is not None else None


class FilesStorageMeter:
    """A project's stored bytes: the sizes of its uploaded files (``files.bytes`` grouped by
    ``files.project``). Without a ``project`` column the files cannot be told apart by
    project, and ``available`` says so."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self._has_project: bool | None = None

    def _probe(self) -> bool:
        port = _port(self.kb)
        if port is None:
            return False
        sql = _HAS_PROJECT.get(port.dialect.name)
        return sql is not None and port.integer(sql) > 0

    async def available(self) -> bool:
        if self._has_project is None:
            self._has_project = await asyncio.to_thread(self._probe)
        return self._has_project

    async def used(self, project: str) -> int:
        port = _port(self.kb)
        if port is None or not await self.available():
            return 0
        return await asyncio.to_thread(
            port.integer,
            "SELECT coalesce(sum(bytes), 0) AS n FROM files WHERE project = ?",
            [project],
        )
