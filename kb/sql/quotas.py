"""Quota counters in the knowledge base's database, so replicas sharing a PostgreSQL
database share their counts: one row per (project, kind, window), bumped by an atomic
upsert that answers the new total.

The table is created on first use (``IF NOT EXISTS``) rather than by a numbered migration:
it holds only short-lived counts, nothing else refers to it, and both engines take the
same statement.
"""

from __future__ import annotations

import threading

from kb.sql.port import SqlPort, to_int

__all__ = ["SqlQuotaCounters"]

_CREATE = (
    "CREATE TABLE IF NOT EXISTS quota_counters ("
    "project TEXT NOT NULL, kind TEXT NOT NULL, window_start BIGINT NOT NULL, "
    "count BIGINT NOT NULL, PRIMARY KEY (project, kind, window_start))"
)
_ADD = (
    "INSERT INTO quota_counters (project, kind, window_start, count) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (project, kind, window_start) "
    "DO UPDATE SET count = quota_counters.count + excluded.count RETURNING count"
)


class SqlQuotaCounters:
    """Per-project counts in fixed windows over a backend's ``SqlPort`` (blocking calls:
    the gateway runs them in worker threads)."""

    def __init__(self, port: SqlPort) -> None:
        self.port = port
        self._ready = False
        self._guard = threading.Lock()

    def _ensure(self) -> None:
        if self._ready:
            return
        with self._guard:
            if not self._ready:
                try:
                    self.port.execute(_CREATE)
                except Exception:  # noqa: BLE001 - another replica created it at the same moment
                    self.port.execute(_CREATE)
                self._ready = True

    def add(self, project: str, kind: str, window: int, amount: int) -> int:
        """Add ``amount`` to the window's count; the count after it."""
        self._ensure()
        rows = self.port.write_rows(_ADD, [project, kind, window, amount])
        return to_int(rows[0]["count"]) if rows else amount

    def get(self, project: str, kind: str, window: int) -> int:
        self._ensure()
        return self.port.integer(
            "SELECT count FROM quota_counters WHERE project = ? AND kind = ? AND window_start = ?",
            [project, kind, window],
        )

    def prune(self, before: int) -> int:
        """Forget windows that started before ``before``; how many rows went."""
        self._ensure()
        return self.port.execute("DELETE FROM quota_counters WHERE window_start < ?", [before])
