"""Stored responses (``store: true``): the response object, its input items and the
conversation it ends (what ``previous_response_id`` continues), in SQLite beside the
knowledge base."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ResponseStore", "StoredResponse"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    previous_response_id TEXT,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    conversation TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]  # chat messages, this response's output included


class ResponseStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def _put(self, stored: StoredResponse) -> None:
        r = stored.response
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                (
                    r["id"],
                    int(r.get("created_at") or time.time()),
                    r.get("previous_response_id"),
                    json.dumps(r, ensure_ascii=False),
                    json.dumps(stored.input_items, ensure_ascii=False),
                    json.dumps(stored.conversation, ensure_ascii=False),
                ),
            )

    def _get(self, rid: str) -> StoredResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response, input_items, conversation FROM responses WHERE id = ?", (rid,)
            ).fetchone()
        if row is None:
            return None
        return StoredResponse(json.loads(row[0]), json.loads(row[1]), json.loads(row[2]))

    def _delete(self, rid: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM responses WHERE id = ?", (rid,))
        return cur.rowcount > 0

    async def put(self, stored: StoredResponse) -> None:
        await asyncio.to_thread(self._put, stored)

    async def get(self, rid: str) -> StoredResponse | None:
        return await asyncio.to_thread(self._get, rid)

    async def delete(self, rid: str) -> bool:
        return await asyncio.to_thread(self._delete, rid)

    def close(self) -> None:
        with self._lock:
            self._db.close()
