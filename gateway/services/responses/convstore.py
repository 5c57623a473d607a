"""Conversations and their items, in the stored responses' SQLite file.

A conversation keeps its items in the order they were added (``seq``), the project that
owns it, and the disk states the responses that continued it saved (deleted with it). A
conversation another project owns is answered as missing.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.services.responses.store import ResponseStore, dumps

__all__ = ["ConversationStore", "ItemPage", "StoredConversation"]

Json = dict[str, Any]


@dataclass(frozen=True)
class StoredConversation:
    id: str
    project: str
    created_at: int
    metadata: dict[str, str]
    states: list[Json]

    def public(self) -> Json:
        """The conversation object of the API."""
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class ItemPage:
    data: list[Json]
    has_more: bool


_PAGE = {
    False: "SELECT item FROM conversation_items WHERE conversation_id = ? AND seq > ? "
    "ORDER BY seq ASC LIMIT ?",
    True: "SELECT item FROM conversation_items WHERE conversation_id = ? AND seq < ? "
    "ORDER BY seq DESC LIMIT ?",
}


def _fresh_id(item: Json) -> str:
    prefix = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}
    return f"{prefix.get(str(item.get('type')), 'item')}_{uuid.uuid4().hex}"


class ConversationStore:
    """Conversation rows over the response store's connection and lock."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store
        self.db = store.db
        self.lock = store.lock

    def _row(self, cid: str, visible: str | None) -> StoredConversation | None:
        row = self.db.execute(
            "SELECT id, project, created_at, metadata, states FROM conversations "
            "WHERE id = ? AND (? IS NULL OR project = ?)",
            (cid, visible, visible),
        ).fetchone()
        if row is None:
            return None
        return StoredConversation(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]))

    def _insert_items(self, cid: str, project: str, items: list[Json]) -> list[Json]:
        """Append ``items`` (an id already in the conversation is replaced by a new one)."""
        out = []
        for item in items:
            item = dict(item)
            while True:
                text = dumps(item)
                try:
                    self.db.execute(
                        "INSERT INTO conversation_items (conversation_id, id, project, item, "
                        "bytes) VALUES (?, ?, ?, ?, ?)",
                        (cid, item["id"], project, text, len(text.encode())),
                    )
                    break
                except sqlite3.IntegrityError:
                    item["id"] = _fresh_id(item)
            out.append(item)
        return out

    def _touch(self, cid: str, states: list[Json] | None = None) -> None:
        if states is None:
            self.db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?", (time.time(), cid)
            )
        else:
            self.db.execute(
                "UPDATE conversations SET updated_at = ?, states = ? WHERE id = ?",
                (time.time(), json.dumps(states), cid),
            )

    # -- blocking operations (run through ``ResponseStore.run``) -----------------------------

    def create(self, cid: str, project: str, metadata: dict[str, str], items: list[Json]) -> Json:
        now = time.time()
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute(
                    "INSERT INTO conversations (id, project, created_at, updated_at, metadata) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (cid, project, int(now), now, dumps(metadata)),
                )
                self._insert_items(cid, project, items)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return StoredConversation(cid, project, int(now), metadata, []).public()

    def get(self, cid: str, visible: str | None) -> StoredConversation | None:
        with self.lock:
            return self._row(cid, visible)

    def update(self, cid: str, visible: str | None, metadata: dict[str, str]) -> Json | None:
        with self.lock:
            found = self._row(cid, visible)
            if found is None:
                return None
            self.db.execute(
                "UPDATE conversations SET metadata = ?, updated_at = ? WHERE id = ?",
                (dumps(metadata), time.time(), cid),
            )
        return StoredConversation(
            found.id, found.project, found.created_at, metadata, found.states
        ).public()

    def delete(self, cid: str, visible: str | None) -> StoredConversation | None:
        with self.lock:
            found = self._row(cid, visible)
            if found is None:
                return None
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("DELETE FROM conversation_items WHERE conversation_id = ?", (cid,))
                self.db.execute("DELETE FROM conversations WHERE id = ?", (cid,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.store._vacuum()
        return found

    def append(
        self, cid: str, visible: str | None, items: list[Json], state: Json | None = None
    ) -> list[Json] | None:
        """Add ``items`` at the end; ``state``: the disk states a response saved."""
        with self.lock:
            found = self._row(cid, visible)
            if found is None:
                return None
            self.db.execute("BEGIN IMMEDIATE")
            try:
                added = self._insert_items(cid, found.project, items)
                self._touch(cid, [*found.states, state] if state else None)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return added

    def items(self, cid: str, visible: str | None) -> list[Json] | None:
        """Every item, oldest first."""
        with self.lock:
            if self._row(cid, visible) is None:
                return None
            rows = self.db.execute(
                "SELECT item FROM conversation_items WHERE conversation_id = ? ORDER BY seq",
                (cid,),
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def page(
        self, cid: str, visible: str | None, after: str | None, limit: int, order: str
    ) -> ItemPage | None:
        """``limit`` items after the item ``after`` in ``order``; None: no conversation;
        a KeyError: no item ``after``."""
        with self.lock:
            if self._row(cid, visible) is None:
                return None
            desc = order == "desc"
            start = -1 if not desc else 2**62  # before the first, after the last
            if after is not None:
                row = self.db.execute(
                    "SELECT seq FROM conversation_items WHERE conversation_id = ? AND id = ?",
                    (cid, after),
                ).fetchone()
                if row is None:
                    raise KeyError(after)
                start = row[0]
            rows = self.db.execute(_PAGE[desc], (cid, start, limit + 1)).fetchall()
        data = [json.loads(r[0]) for r in rows]
        return ItemPage(data[:limit], len(data) > limit)

    def item(self, cid: str, visible: str | None, item_id: str) -> Json | None:
        """The item, or None; a LookupError when the conversation itself is missing."""
        with self.lock:
            if self._row(cid, visible) is None:
                raise LookupError(cid)
            row = self.db.execute(
                "SELECT item FROM conversation_items WHERE conversation_id = ? AND id = ?",
                (cid, item_id),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def delete_item(self, cid: str, visible: str | None, item_id: str) -> Json | None:
        """The conversation after the delete, or None when the item is missing; a
        LookupError when the conversation itself is."""
        with self.lock:
            found = self._row(cid, visible)
            if found is None:
                raise LookupError(cid)
            cur = self.db.execute(
                "DELETE FROM conversation_items WHERE conversation_id = ? AND id = ?",
                (cid, item_id),
            )
            if not cur.rowcount:
                return None
            self._touch(cid)
            self.store._vacuum()
        return found.public()
