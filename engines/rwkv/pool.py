"""A device-resident pool of per-sequence rows: one tensor per state part (and per sampler
field), ``[capacity, ...]``, allocated once. A sequence owns a row; the rows in use are
kept at the front (0..n-1), so a batched step runs on plain views ``t[:n]`` and a CUDA
graph captured for a bucket size reads and writes the same memory every time. When a
sequence leaves, the last row moves into its place: one row copy per leave, never a
re-stack of every sequence at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["RowPool"]


class RowPool:
    def __init__(self, capacity: int, tensors: dict[str, Any]) -> None:
        """``tensors``: name -> a tensor whose first dimension is ``capacity``."""
        for name, t in tensors.items():
            if t.shape[0] != capacity:
                raise ValueError(f"{name}: first dimension {t.shape[0]} != {capacity}")
        self.capacity = capacity
        self.tensors = tensors
        self.owners: list[Any] = []
        # Called with (owner, new row) when a row moves (its owner must update its index).
        self.on_move: Callable[[Any, int], None] | None = None

    def __len__(self) -> int:
        return len(self.owners)

    @property
    def free(self) -> int:
        return self.capacity - len(self.owners)

    def view(self, name: str, n: int | None = None) -> Any:
        t = self.tensors[name]
        return t[: len(self.owners) if n is None else n]

    def alloc(self, owner: Any) -> int:
        if len(self.owners) >= self.capacity:
            raise RuntimeError("the pool is full")
        self.owners.append(owner)
        return len(self.owners) - 1

    def release(self, row: int) -> None:
        """Free ``row``; the last row moves into it (its owner is told)."""
        last = len(self.owners) - 1
        if not 0 <= row <= last:
            raise IndexError(row)
        if row != last:
            for t in self.tensors.values():
                t[row].copy_(t[last])
            moved = self.owners[last]
            self.owners[row] = moved
            if self.on_move is not None:
                self.on_move(moved, row)
        self.owners.pop()

    def write(self, row: int, values: dict[str, Any]) -> None:
        for name, value in values.items():
            self.tensors[name][row].copy_(value)

    def read(self, row: int, names: list[str]) -> list[Any]:
        return [self.tensors[name][row].clone() for name in names]
