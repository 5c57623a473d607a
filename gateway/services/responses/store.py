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
# Added later: where the conversation's states were kept (JSON), for deletion.
_STATES_COLUMN = "ALTER TABLE responses ADD COLUMN states TEXT"


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]  # chat messages, this response's output included
    states: dict[str, Any] | None = None  # {"model", "state", "keys"} of its disk states


class ResponseStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        if "states" not in columns:
            self._db.execute(_STATES_COLUMN)
        self._lock = threading.Lock()

    def _put(self, stored: StoredResponse) -> None:
        r = stored.response
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (id, created_at, previous_response_id, "
                "response, input_items, conversation, states) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    r["id"],
                    int(r.get("created_at") or time.time()),
                    r.get("previous_response_id"),
                    json.dumps(r, ensure_ascii=False),
                    json.dumps(stored.input_items, ensure_ascii=False),
                    json.dumps(stored.conversation, ensure_ascii=False),
                    json.dumps(stored.states) if stored.states is not None else None,
                ),
            )

    def _get(self, rid: str) -> StoredResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response, input_items, conversation, states FROM responses WHERE id = ?",
                (rid,),
            ).fetchone()
        if row is None:
            return None
        states = json.loads(row[3]) if row[3] else None
        return StoredResponse(json.loads(row[0]), json.loads(row[1]), json.loads(row[2]), states)

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
