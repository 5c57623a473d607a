"""LRU cache of RWKV states after token prefixes, bounded in bytes on the device and on
the host.

RWKV's state has a constant size, so the state after a prefix (a system prompt, the
conversation so far) is a small, exact summary of it: a request that extends a cached
prefix prefills only the rest. Hot entries stay on the model's device; past
``max_bytes`` the least recently used ones spill to host memory (pinned when on CUDA) up
to ``host_bytes``, and are dropped past that. A hit on a spilled entry is copied back.
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
    on_device: bool = True


def _nbytes(tensors: list[Any]) -> int:
    return sum(int(t.numel()) * int(t.element_size()) for t in tensors)


class PrefixStateCache:
    def __init__(self, max_bytes: int, host_bytes: int = 0) -> None:
        self.max_bytes = max_bytes
        self.host_bytes = host_bytes
        self.bytes = 0  # on the device
        self.spilled_bytes = 0  # on the host
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
            for n in sorted(self._lengths.get(state_name, {}), reverse=True):
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
        if (self.max_bytes <= 0 and self.host_bytes <= 0) or not tokens:
            return
        nbytes = _nbytes(state) + _nbytes([logits])
        if nbytes > max(self.max_bytes, self.host_bytes):
            return
        key = (state_name, tuple(tokens))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            on_device = nbytes <= self.max_bytes
            copied = [t.clone() if on_device else _to_host(t) for t in state]
            logits_copy = logits.clone() if on_device else _to_host(logits)
            self._entries[key] = CacheEntry(copied, logits_copy, nbytes, on_device)
            lengths = self._lengths.setdefault(state_name, {})
            lengths[len(tokens)] = lengths.get(len(tokens), 0) + 1
            if on_device:
                self.bytes += nbytes
            else:
                self.spilled_bytes += nbytes
            self._evict()

    def _evict(self) -> None:
        """Spill the coldest device entries to the host, then drop the coldest host ones."""
        for entry in list(self._entries.values()):
            if self.bytes <= self.max_bytes:
                break
            if entry.on_device:
                entry.state = [_to_host(t) for t in entry.state]
                entry.logits = _to_host(entry.logits)
                entry.on_device = False
                self.bytes -= entry.nbytes
                self.spilled_bytes += entry.nbytes
        for key, entry in list(self._entries.items()):
            if self.spilled_bytes <= self.host_bytes:
                break
            if not entry.on_device:
                self._drop(key, entry)

    def _drop(self, key: tuple[str, tuple[int, ...]], entry: CacheEntry) -> None:
        del self._entries[key]
        self.spilled_bytes -= entry.nbytes
        name, toks = key
        counts = self._lengths[name]
        counts[len(toks)] -= 1
        if counts[len(toks)] == 0:
            del counts[len(toks)]


def _to_host(t: Any) -> Any:
    if t.device.type == "cpu":
        return t.clone()
    host = t.to("cpu", copy=True)
    return host.pin_memory() if t.device.type == "cuda" else host
