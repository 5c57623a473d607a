"""One SQLite file in WAL mode: a locked writer connection, one reader per thread.

The writer is used only under ``lock``; reads go through one connection per thread, so
searches run beside an ingestion's write transaction (WAL) and never see a half-written
batch. Migrations are numbered and applied in order at open.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from kb.sql.dialect import SQLITE
from kb.sql.port import Row, SqlArgs, SqlPort
from kb.store.schema import MIGRATIONS

__all__ = ["Database", "Row", "json_list", "statements"]


class Database(SqlPort):
    """Connections, transactions and migrations; the store's parts build on it."""

    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        self.conn = conn
        self.lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        # Reads in flight (close waits for them: closing a connection another thread is
        # using would crash the process).
        self._inflight = 0
        self._idle = threading.Condition()
        self._closed = False
        self._migrate()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._idle:
            if self._closed:
                raise RuntimeError("the knowledge base is closed")
            self._inflight += 1
        try:
            yield self._read()
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def _read(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn = conn
            with self.lock:
                self._readers.append(conn)
        return conn

    def rows(self, sql: str, args: SqlArgs = ()) -> list[Row]:
        with self._reading() as conn:
            cur = conn.execute(sql, tuple(args))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def tuples(self, sql: str, args: SqlArgs = ()) -> list[tuple[object, ...]]:
        with self._reading() as conn:
            return [tuple(r) for r in conn.execute(sql, tuple(args)).fetchall()]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the knowledge base is closed")

    def execute(self, sql: str, args: SqlArgs = ()) -> int:
        """One write statement (its own transaction); the number of rows it changed."""
        with self.lock:
            self._check_open()
            return int(self.conn.execute(sql, tuple(args)).rowcount)

    def write_rows(self, sql: str, args: SqlArgs = ()) -> list[Row]:
        """One write statement with RETURNING, under the writer lock."""
        with self.lock:
            self._check_open()
            cur = self.conn.execute(sql, tuple(args))
            cols = [d[0] for d in cur.description or ()]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def execute_all(self, statements: Sequence[tuple[str, SqlArgs]]) -> None:
        with self.transaction() as conn:
            for sql, args in statements:
                conn.execute(sql, tuple(args))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside ``BEGIN IMMEDIATE``; rolled back on any error."""
        with self.lock:
            self._check_open()
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self.lock:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations "
                "(id INTEGER PRIMARY KEY, applied_at INTEGER)"
            )
            done = {r[0] for r in self.conn.execute("SELECT id FROM _migrations")}
            for number, sql in enumerate(MIGRATIONS, start=1):
                if number in done:
                    continue
                with self.transaction() as conn:
                    for statement in statements(sql):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO _migrations VALUES (?, ?)", (number, int(time.time()))
                    )

    def close(self) -> None:
        with self._idle:
            self._closed = True
            self._idle.wait_for(lambda: self._inflight == 0, timeout=30)
        with self.lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
            self.conn.close()
        self._local = threading.local()


def json_list(values: Iterable[object]) -> str:
    """A JSON array for ``IN (SELECT value FROM json_each(?))``: one parameter, any size."""
    return json.dumps(list(values))


def statements(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    out: list[str] = []
    buf: list[str] = []
    for line in script.strip().splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined.endswith(";") and sqlite3.complete_statement(joined):
            out.append(joined)
            buf = []
    if "\n".join(buf).strip():
        out.append("\n".join(buf).strip())
    return out
