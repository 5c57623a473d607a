"""The few calls the shared SQL sections make on a backend's database.

Every statement given here is written with ``?`` placeholders (``Dialect.q`` turns them
into the driver's style); each backend runs them on its own connections, in its own
transactions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from decimal import Decimal

from kb.sql.dialect import Dialect

__all__ = ["Row", "SqlArgs", "SqlPort", "to_int"]

Row = dict[str, object]
SqlArgs = Sequence[object]


class SqlPort(ABC):
    dialect: Dialect

    @abstractmethod
    def rows(self, sql: str, args: SqlArgs = ()) -> list[Row]:
        """A read: every row, as column -> value."""

    @abstractmethod
    def execute(self, sql: str, args: SqlArgs = ()) -> int:
        """One write statement (its own transaction); the number of rows it changed."""

    @abstractmethod
    def write_rows(self, sql: str, args: SqlArgs = ()) -> list[Row]:
        """One write statement with ``RETURNING`` (its own transaction); the rows."""

    @abstractmethod
    def execute_all(self, statements: Sequence[tuple[str, SqlArgs]]) -> None:
        """Several write statements in one transaction: all of them or none."""

    def one(self, sql: str, args: SqlArgs = ()) -> Row | None:
        found = self.rows(sql, args)
        return found[0] if found else None

    def integer(self, sql: str, args: SqlArgs = ()) -> int:
        """The first column of the first row as an int (0 when there is none)."""
        row = self.one(sql, args)
        return to_int(next(iter(row.values()))) if row else 0


def to_int(value: object) -> int:
    """A number from either driver as an int (PostgreSQL sums integers as ``numeric``,
    which arrives as a Decimal); 0 for anything else."""
    return int(value) if isinstance(value, int | float | Decimal) else 0
