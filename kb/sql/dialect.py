"""What the two SQL engines spell differently, so one statement text serves both.

Shared statements are written with ``?`` placeholders; ``Dialect.q`` turns them into the
driver's style. The rest are the few fragments that really differ: list parameters,
"insert unless present", removing a key from a JSON column, a text's size in bytes,
the column that breaks ties between rows created in the same second, and the row lock a
claim takes. Times are computed in Python on both sides (no ``now()``), and no shared
statement needs a boolean literal or a JSON path.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["POSTGRES", "SQLITE", "Dialect"]


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    # The driver's placeholder: sqlite3 takes ``?``, psycopg ``%s``.
    placeholder: str
    # The tie-break after ``created_at`` in every ordering: SQLite's rowid, a serial in
    # PostgreSQL (both grow with insertion).
    tie: str
    # How a claim locks the row it takes: SQLite has one writer, PostgreSQL replicas skip
    # rows another replica is claiming.
    claim_lock: str

    def q(self, sql: str) -> str:
        """A ``?`` statement in this dialect's placeholder style."""
        return _translate(sql, self.placeholder)

    def in_list(self, column: str) -> str:
        """``column`` is one of a list given as one parameter (``list_arg``), of any size."""
        if self.name == "sqlite":
            return f"{column} IN (SELECT value FROM json_each(?))"
        return f"{column} = ANY(?)"

    def list_arg(self, values: Iterable[object]) -> object:
        """The parameter that ``in_list`` reads."""
        if self.name == "sqlite":
            return json.dumps(list(values))
        return list(values)

    def insert_ignore(self, table: str, columns: str, values: str) -> str:
        """An insert that does nothing when the row's key is already there."""
        if self.name == "sqlite":
            return f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({values})"
        return f"INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING"

    def json_without(self, column: str, key: str) -> str:
        """The JSON object in ``column`` without ``key`` (a plain identifier)."""
        if self.name == "sqlite":
            return f"json_remove({column}, '$.{key}')"
        return f"{column} - '{key}'"

    def octet_length(self, expr: str) -> str:
        """The size of a text in UTF-8 bytes."""
        if self.name == "sqlite":
            return f"length(CAST({expr} AS BLOB))"
        return f"octet_length({expr})"


@functools.lru_cache(maxsize=1024)
def _translate(sql: str, placeholder: str) -> str:
    if placeholder == "?":
        return sql
    # psycopg reads ``%`` as the start of a placeholder: a literal one is doubled.
    return sql.replace("%", "%%").replace("?", placeholder)


SQLITE = Dialect("sqlite", placeholder="?", tie="rowid", claim_lock="")
POSTGRES = Dialect("postgres", placeholder="%s", tie="seq", claim_lock=" FOR UPDATE SKIP LOCKED")
