"""A pool of PostgreSQL connections in autocommit, the schema migrated on first use, and
one HNSW index per vector size in use.

An unreachable database is a 503 (``StorageUnavailableError``) on the request that met
it, and a log line; the pool reconnects by itself when it is back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from core.errors import InsufficientStorageError, StorageUnavailableError, is_disk_full
from kb.config import KnowledgeSettings
from kb.pg.schema import MIGRATIONS
from kb.sql.dialect import POSTGRES
from kb.sql.port import Row, SqlArgs, SqlPort

__all__ = ["Database", "redact_dsn"]

log = logging.getLogger(__name__)


def redact_dsn(dsn: str) -> str:
    """The DSN without its password (for logs and errors)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - an unparsable DSN is shown as nothing
        return "<dsn>"
    if "password" in parts:
        parts["password"] = "***"  # noqa: S105 - the mask shown instead of it
    return make_conninfo(**{k: str(v) for k, v in parts.items()})


class Database(SqlPort):
    """Connections, transactions and migrations; the backend's parts build on it.

    The shared statements (kb/sql/) come through the port's methods with ``?``
    placeholders; this backend's own statements use psycopg's ``%s`` through ``_rows``,
    ``_one``, ``_int``, ``_exec`` and ``_conn``."""

    dialect = POSTGRES

    def __init__(self, dsn: str, settings: KnowledgeSettings | None = None) -> None:
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.settings = settings or KnowledgeSettings()
        pg = self.settings.postgres
        self.dsn_shown = redact_dsn(dsn)
        self._timeout = pg.connect_timeout_s
        self._part = pg.file_part_bytes
        self.pool = ConnectionPool(
            dsn,
            min_size=pg.pool_min_size,
            max_size=pg.pool_max_size,
            timeout=pg.connect_timeout_s,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": max(1, math.ceil(pg.connect_timeout_s)),
                "options": f"-c statement_timeout={int(pg.statement_timeout_s * 1000)}",
            },
            open=False,
            name="rwkv-rag-kb",
        )
        self.pool.open(wait=False)
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._indexed_dims: set[int] = set()

    # -- connections --------------------------------------------------------------------

    @contextlib.contextmanager
    def _conn(self, *, transaction: bool = False) -> Iterator[Any]:
        import psycopg
        import psycopg_pool

        try:
            self._ensure_schema()
            with self.pool.connection(timeout=self._timeout) as conn:
                if transaction:
                    with conn.transaction():
                        yield conn
                else:
                    yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError) as exc:
            if is_disk_full(exc):
                raise InsufficientStorageError(
                    "the knowledge base's database is out of disk space; nothing was stored"
                ) from exc
            log.error(
                "knowledge base database unreachable",
                extra={"dsn": self.dsn_shown, "error": type(exc).__name__},
            )
            raise StorageUnavailableError(
                "the knowledge base's database is unreachable; try again shortly"
            ) from None

    def _ensure_schema(self) -> None:
        if self._migrated:
            return
        with self._migrate_lock:
            if self._migrated:
                return
            with self.pool.connection(timeout=self._timeout) as raw, raw.transaction():
                conn: Any = raw
                # One replica migrates at a time; the others wait here, then see it done.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('rwkv-rag-kb-migrate'))")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY, "
                    "applied_at BIGINT NOT NULL)"
                )
                done = {r["id"] for r in conn.execute("SELECT id FROM _migrations").fetchall()}
                for number, sql in enumerate(MIGRATIONS, start=1):
                    if number not in done:
                        conn.execute(sql)
                        conn.execute(
                            "INSERT INTO _migrations VALUES (%s, %s)", (number, int(time.time()))
                        )
                dims = conn.execute("SELECT DISTINCT dimensions FROM collections").fetchall()
            self._migrated = True
            for row in dims:
                self._ensure_index(int(row["dimensions"]))

    def _ensure_index(self, dims: int) -> None:
        """The HNSW index over vectors of ``dims`` dimensions (one per size in use)."""
        if dims in self._indexed_dims or not 1 <= dims <= 16000:
            return
        s = self.settings
        with self.pool.connection(timeout=self._timeout) as conn, conn.transaction():
            # Building over existing rows (a re-embed to a new size, a bulk load) may take
            # minutes: no statement timeout, and memory enough to build in one pass.
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS chunks_hnsw_{dims} ON chunks USING hnsw "
                f"((embedding::vector({dims})) vector_ip_ops) "
                f"WITH (m = {int(s.hnsw_m)}, ef_construction = {int(s.hnsw_ef_construction)}) "
                f"WHERE dims = {dims}"
            )
        self._indexed_dims.add(dims)

    # -- this backend's own statements (``%s``) -------------------------------------------

    def _rows(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return list(conn.execute(sql, args).fetchall())

    def _one(self, sql: str, args: Any = ()) -> dict[str, Any] | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def _int(self, sql: str, args: Any = ()) -> int:
        row = self._one(sql, args)
        return int(next(iter(row.values())) or 0) if row else 0

    def _exec(self, sql: str, args: Any = ()) -> int:
        with self._conn() as conn:
            return int(conn.execute(sql, args).rowcount)

    # -- the shared statements (``?``) ----------------------------------------------------

    def rows(self, sql: str, args: SqlArgs = ()) -> list[Row]:
        return self._rows(self.dialect.q(sql), args)

    def execute(self, sql: str, args: SqlArgs = ()) -> int:
        return self._exec(self.dialect.q(sql), args)

    def write_rows(self, sql: str, args: SqlArgs = ()) -> list[Row]:
        return self._rows(self.dialect.q(sql), args)

    def execute_all(self, statements: Sequence[tuple[str, SqlArgs]]) -> None:
        with self._conn(transaction=True) as conn:
            for sql, args in statements:
                conn.execute(self.dialect.q(sql), args)
