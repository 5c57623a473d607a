"""Where the shared tier of RWKV states keeps its bytes: a directory, or a PostgreSQL table.

A blob is one whole state file (header + payload, see ``engines.rwkv.states``) under a
content key. Both stores write atomically, so a reader sees the whole blob or none: the
directory by writing a temporary file, fsyncing and renaming it; PostgreSQL by a single
``INSERT`` in its own transaction. Several processes and replicas may share either one.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

__all__ = ["DirBlobs", "PostgresBlobs", "StateBlobs"]

_SUFFIX = ".rwkvstate"
_TMP = ".tmp"
# A temporary file older than this belongs to a writer that died (a live one renames
# within seconds); younger ones may be another process's write in flight.
_STALE_TMP_S = 3600.0


class StateBlobs(Protocol):
    """Whole-or-nothing bytes under content keys, least recently used first out."""

    def read(self, key: str) -> bytes | None: ...
    def exists(self, key: str) -> bool: ...
    def touch(self, key: str) -> None: ...
    def write(self, key: str, data: bytes) -> int: ...
    def delete(self, key: str) -> bool: ...
    def evict(self, max_bytes: int, retention_s: float) -> tuple[int, int]:
        """Drop blobs unused past ``retention_s`` (0: none), then the least recently used
        past ``max_bytes``; returns (evicted, bytes kept)."""
        ...

    def describe(self) -> str: ...
    def close(self) -> None: ...


class DirBlobs:
    """Files ``<key[:2]>/<key>.rwkvstate`` under a directory; least recently used by mtime."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}{_SUFFIX}"

    def describe(self) -> str:
        return str(self.directory)

    def close(self) -> None:
        pass

    def read(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except OSError:
            return None

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def touch(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.path(key))

    def write(self, key: str, data: bytes) -> int:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}{_TMP}")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return len(data)

    def delete(self, key: str) -> bool:
        try:
            self.path(key).unlink()
        except OSError:
            return False
        return True

    def evict(self, max_bytes: int, retention_s: float) -> tuple[int, int]:
        # The directory may be shared, so it is listed afresh each time.
        now = time.time()
        evicted = 0
        files: list[tuple[float, int, Path]] = []
        for p in self.directory.rglob("*"):
            try:
                st = p.stat()
            except OSError:
                continue
            if not p.is_file():
                continue
            if p.name.endswith(_TMP):
                if now - st.st_mtime > _STALE_TMP_S:
                    with contextlib.suppress(OSError):
                        p.unlink()
                continue
            if not p.name.endswith(_SUFFIX):
                continue
            if retention_s and now - st.st_mtime > retention_s:
                with contextlib.suppress(OSError):
                    p.unlink()
                    evicted += 1
                continue
            files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files):
            if total <= max_bytes:
                break
            with contextlib.suppress(OSError):
                p.unlink()
                evicted += 1
            total -= size
        return evicted, total


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rwkv_states (
    key TEXT PRIMARY KEY,
    bytes BIGINT NOT NULL,
    used_at DOUBLE PRECISION NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS rwkv_states_used ON rwkv_states (used_at);
"""
# Serialises concurrent first-time schema creation across replicas.
_SCHEMA_LOCK = 0x52574B56  # "RWKV"


class PostgresBlobs:
    """A table ``rwkv_states`` in a PostgreSQL database (the knowledge base's, by default)."""

    def __init__(self, dsn: str, timeout_s: float = 10.0) -> None:
        import psycopg

        self._psycopg = psycopg
        self._dsn = dsn
        self._timeout = timeout_s
        self._local = threading.local()
        self._open: list[Any] = []
        self._open_lock = threading.Lock()
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(_SCHEMA)

    def describe(self) -> str:
        from psycopg.conninfo import conninfo_to_dict

        # Host, port and database only: never the password.
        parts = conninfo_to_dict(self._dsn)
        where = f"{parts.get('host', '')}:{parts.get('port', '')}/{parts.get('dbname', '')}"
        return f"postgresql://{where}"

    def _connect(self) -> Any:
        return self._psycopg.connect(self._dsn, autocommit=True, connect_timeout=int(self._timeout))

    def _conn(self) -> Any:
        """One connection per thread (the tier's writer thread and the loading threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._connect()
            self._local.conn = conn
            with self._open_lock:
                self._open.append(conn)
        return conn

    def close(self) -> None:
        with self._open_lock:
            opened, self._open = self._open, []
        for conn in opened:
            conn.close()

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        try:
            return self._conn().execute(sql, params)
        except self._psycopg.OperationalError:
            # A dropped connection is retried once on a fresh one.
            self._local.conn = None
            return self._conn().execute(sql, params)

    def read(self, key: str) -> bytes | None:
        row = self._run("SELECT data FROM rwkv_states WHERE key = %s", (key,)).fetchone()
        return bytes(row[0]) if row is not None else None

    def exists(self, key: str) -> bool:
        return self._run("SELECT 1 FROM rwkv_states WHERE key = %s", (key,)).fetchone() is not None

    def touch(self, key: str) -> None:
        self._run("UPDATE rwkv_states SET used_at = %s WHERE key = %s", (time.time(), key))

    def write(self, key: str, data: bytes) -> int:
        self._run(
            "INSERT INTO rwkv_states (key, bytes, used_at, data) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET used_at = EXCLUDED.used_at",
            (key, len(data), time.time(), data),
        )
        return len(data)

    def delete(self, key: str) -> bool:
        return bool(self._run("DELETE FROM rwkv_states WHERE key = %s", (key,)).rowcount)

    def evict(self, max_bytes: int, retention_s: float) -> tuple[int, int]:
        evicted = 0
        if retention_s:
            evicted += self._run(
                "DELETE FROM rwkv_states WHERE used_at < %s", (time.time() - retention_s,)
            ).rowcount
        # The newest rows whose running total fits the budget stay; the rest go.
        evicted += self._run(
            "DELETE FROM rwkv_states WHERE key IN (SELECT key FROM (SELECT key, "
            "SUM(bytes) OVER (ORDER BY used_at DESC, key) AS running FROM rwkv_states) t "
            "WHERE running > %s)",
            (max_bytes,),
        ).rowcount
        row = self._run("SELECT COALESCE(SUM(bytes), 0) FROM rwkv_states").fetchone()
        return evicted, int(row[0])
