"""LRU cache of RWKV states after token prefixes, bounded in bytes.

RWKV's state has a constant size, so the state after a prefix (system prompt, the
conversation so far) is a small, exact summary of it: a request that extends a cached
prefix prefills only the rest.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = ["CacheEntry", "PrefixStateCache"]


@dataclass
class CacheEntry:
    state: list[Any]
    logits: Any
    nbytes: int


def _nbytes(tensors: list[Any]) -> int:
    return sum(int(t.numel()) * int(t.element_size()) for t in tensors)


class PrefixStateCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.hit_tokens = 0
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], CacheEntry] = OrderedDict()
        self._lengths: dict[str, dict[int, int]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, state_name: str, tokens: list[int]) -> tuple[int, CacheEntry | None]:
        """The longest cached prefix of ``tokens``: (its length, entry) or (0, None)."""
        with self._lock:
            lengths = sorted(self._lengths.get(state_name, {}), reverse=True)
            for n in lengths:
                if n > len(tokens):
                    continue
                key = (state_name, tuple(tokens[:n]))
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    self.hit_tokens += n
                    return n, entry
            self.misses += 1
            return 0, None

    def put(self, state_name: str, tokens: list[int], state: list[Any], logits: Any) -> None:
        if self.max_bytes <= 0 or not tokens:
            return
        copied = [t.clone() for t in state]
        nbytes = _nbytes(copied) + _nbytes([logits])
        if nbytes > self.max_bytes:
            return
        key = (state_name, tuple(tokens))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            self._entries[key] = CacheEntry(copied, logits.clone(), nbytes)
            lengths = self._lengths.setdefault(state_name, {})
            lengths[len(tokens)] = lengths.get(len(tokens), 0) + 1
            self.bytes += nbytes
            while self.bytes > self.max_bytes and self._entries:
                (name, old), entry = self._entries.popitem(last=False)
                self.bytes -= entry.nbytes
                counts = self._lengths[name]
                counts[len(old)] -= 1
                if counts[len(old)] == 0:
                    del counts[len(old)]
