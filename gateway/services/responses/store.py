"""Stored responses (``store: true``) and conversations in one SQLite file beside the
knowledge base: the response object, its input items and the conversation it ends (what
``previous_response_id`` continues), each row owned by a project.

The file uses incremental auto-vacuum, so deleting responses gives their pages back to the
file system (a project's quota counts what it keeps, and the disk should agree).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.tenancy import ADMIN_PROJECT

__all__ = ["Expired", "ResponseStore", "StoredResponse", "dumps"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    previous_response_id TEXT,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    conversation TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    metadata TEXT NOT NULL,
    states TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (updated_at);
CREATE TABLE IF NOT EXISTS conversation_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    id TEXT NOT NULL,
    project TEXT NOT NULL,
    item TEXT NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS conversation_items_id
    ON conversation_items (conversation_id, id);
CREATE INDEX IF NOT EXISTS conversation_items_project ON conversation_items (project);
"""
# Columns added after the first release, with what older rows get.
_ADDED = (
    ("states", "TEXT", None),  # where the conversation's states were kept (JSON)
    ("project", "TEXT", "project"),  # the owner; older rows belong to the admin project
    ("bytes", "INTEGER", "bytes"),  # what the row weighs against its project's quota
)
_FILL_BYTES = (
    "UPDATE responses SET bytes = length(CAST(response AS BLOB)) "
    "+ length(CAST(input_items AS BLOB)) + length(CAST(conversation AS BLOB))"
)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]  # chat messages, this response's output included
    states: dict[str, Any] | None = None  # {"model", "state", "keys"} of its disk states
    project: str = ADMIN_PROJECT


@dataclass(frozen=True)
class Expired:
    """What a retention sweep removed: the rows' ids and the disk states they kept."""

    responses: list[str]
    conversations: list[str]
    states: list[dict[str, Any]]


class ResponseStore:
    """The SQLite file of responses and conversations; blocking calls run in a thread."""

    def __init__(self, path: Path, default_project: str = ADMIN_PROJECT) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA busy_timeout=5000")
        if self.db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            # Only a VACUUM switches an existing file over (a new one costs nothing).
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self.db.execute("VACUUM")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(responses)")}
        for name, kind, fill in _ADDED:
            if name in columns:
                continue
            self.db.execute(f"ALTER TABLE responses ADD COLUMN {name} {kind}")
            if fill == "project":
                self.db.execute("UPDATE responses SET project = ?", (default_project,))
            elif fill == "bytes":
                self.db.execute(_FILL_BYTES)
        self.db.execute("CREATE INDEX IF NOT EXISTS responses_project ON responses (project)")
        self.db.execute("CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at)")
        self.lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    # -- responses -------------------------------------------------------------------------

    def _put(self, stored: StoredResponse) -> None:
        r = stored.response
        texts = (dumps(r), dumps(stored.input_items), dumps(stored.conversation))
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO responses (id, created_at, previous_response_id, "
                "response, input_items, conversation, states, project, bytes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r["id"],
                    int(r.get("created_at") or time.time()),
                    r.get("previous_response_id"),
                    *texts,
                    json.dumps(stored.states) if stored.states is not None else None,
                    stored.project,
                    sum(len(t.encode()) for t in texts),
                ),
            )

    def _get(self, rid: str, visible: str | None) -> StoredResponse | None:
        with self.lock:
            row = self.db.execute(
                "SELECT response, input_items, conversation, states, project FROM responses "
                "WHERE id = ? AND (? IS NULL OR project = ?)",
                (rid, visible, visible),
            ).fetchone()
        if row is None:
            return None
        states = json.loads(row[3]) if row[3] else None
        return StoredResponse(
            json.loads(row[0]), json.loads(row[1]), json.loads(row[2]), states, row[4]
        )

    def _delete(self, rid: str, visible: str | None) -> bool:
        with self.lock:
            cur = self.db.execute(
                "DELETE FROM responses WHERE id = ? AND (? IS NULL OR project = ?)",
                (rid, visible, visible),
            )
            if cur.rowcount:
                self._vacuum()
        return cur.rowcount > 0

    async def put(self, stored: StoredResponse) -> None:
        await self.run(self._put, stored)

    async def get(self, rid: str, visible: str | None = None) -> StoredResponse | None:
        """The response ``rid`` if it belongs to ``visible`` (None: any project)."""
        return await self.run(self._get, rid, visible)

    async def delete(self, rid: str, visible: str | None = None) -> bool:
        return await self.run(self._delete, rid, visible)

    # -- space -----------------------------------------------------------------------------

    def _vacuum(self) -> None:
        """Give freed pages back to the file system (call with the lock held)."""
        # executescript steps the pragma to the end (execute would free one page).
        self.db.executescript("PRAGMA incremental_vacuum;")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _used_bytes(self, project: str) -> int:
        with self.lock:
            (responses,) = self.db.execute(
                "SELECT COALESCE(SUM(bytes), 0) FROM responses WHERE project = ?", (project,)
            ).fetchone()
            (items,) = self.db.execute(
                "SELECT COALESCE(SUM(bytes), 0) FROM conversation_items WHERE project = ?",
                (project,),
            ).fetchone()
        return int(responses) + int(items)

    async def used_bytes(self, project: str) -> int:
        """What ``project`` keeps here: its stored responses and conversation items."""
        return await self.run(self._used_bytes, project)

    def _expire(self, before: float) -> Expired:
        with self.lock:
            responses = self.db.execute(
                "SELECT id, states FROM responses WHERE created_at < ?", (before,)
            ).fetchall()
            conversations = self.db.execute(
                "SELECT id, states FROM conversations WHERE updated_at < ?", (before,)
            ).fetchall()
            states = [json.loads(s) for _, s in responses if s]
            for _, s in conversations:
                states.extend(json.loads(s))
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("DELETE FROM responses WHERE created_at < ?", (before,))
                self.db.execute(
                    "DELETE FROM conversation_items WHERE conversation_id IN "
                    "(SELECT id FROM conversations WHERE updated_at < ?)",
                    (before,),
                )
                self.db.execute("DELETE FROM conversations WHERE updated_at < ?", (before,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            if responses or conversations:
                self._vacuum()
        return Expired([r[0] for r in responses], [c[0] for c in conversations], states)

    async def expire(self, before: float) -> Expired:
        """Delete responses created, and conversations last changed, before ``before``."""
        return await self.run(self._expire, before)

    def close(self) -> None:
        with self.lock:
            self.db.close()
