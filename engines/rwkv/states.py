"""RWKV states in tiers: device, host, and a disk directory that outlives the process.

The state after "the conversation so far" is a fixed-size set of tensors, so a restart, a
replica or an evicted entry need not re-read a long history: the prefix-state cache
(device, then host memory) writes its turn-boundary states behind to a directory, and a
miss in memory looks there before prefilling.

A file holds one state and names what it belongs to: the model id, a fingerprint of the
weights file, and the State (tuned initial state) it grew from, with its fingerprint. A
state whose header names anything else, whose payload fails its sha256, or that is shorter
than its header says is refused (and removed), never applied. Files are written to a
temporary name, fsynced and renamed, so a process killed while saving leaves either the
whole file or none under the real name. Several processes may share the directory: names
are content keys, and eviction (least recently used, by mtime, within a byte budget and a
retention age) rescans it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.rwkv.blobs import DirBlobs, PostgresBlobs, StateBlobs
from engines.rwkv.cache import CacheEntry, PrefixStateCache

__all__ = [
    "DiskStates",
    "StateIdentity",
    "StateTiers",
    "StateWrite",
    "build_state_tiers",
    "file_fingerprint",
    "prefix_digests",
    "tensors_fingerprint",
]

log = logging.getLogger(__name__)

_MAGIC = b"RWKVSTATE1\n"
_MIB = 2**20


def file_fingerprint(path: Path) -> str:
    """A cheap identity of a weights file: its size and the sha256 of its first and last
    MiB (computed once at load; another file of the same name differs there)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(_MIB))
        if size > _MIB:
            f.seek(max(_MIB, size - _MIB))
            h.update(f.read(_MIB))
    return h.hexdigest()


def tensors_fingerprint(tensors: Iterable[Any]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def prefix_digests(tokens: list[int], lengths: Iterable[int]) -> dict[int, str]:
    """The sha256 of ``tokens[:n]`` for each n, in one pass over the tokens."""
    wanted = sorted({n for n in lengths if 0 < n <= len(tokens)})
    h = hashlib.sha256()
    out: dict[int, str] = {}
    done = 0
    for n in wanted:
        h.update(b"".join(t.to_bytes(4, "little") for t in tokens[done:n]))
        done = n
        out[n] = h.copy().hexdigest()
    return out


def _tensor_bytes(t: Any) -> bytes:
    import torch

    flat = t.detach().contiguous().reshape(-1).cpu()
    return bytes(flat.view(torch.uint8).numpy().tobytes())


@dataclass(frozen=True)
class StateIdentity:
    """What a stored state belongs to: a state is applied only where all of it matches."""

    model: str
    weights: str
    states: dict[str, str]  # State name ("" for none) -> fingerprint of its tensors


@dataclass
class DiskStats:
    hits: int = 0
    misses: int = 0
    refused: int = 0  # present but unusable: other model/weights/State, corrupt, torn
    saves: int = 0
    dropped: int = 0  # writes skipped because the write-behind queue was full
    evicted: int = 0
    bytes: int = 0
    load_seconds: float = 0.0
    save_seconds: float = 0.0


@dataclass
class StateWrite:
    """A state to save, or (``n_tokens`` -1) a digest to delete, in queue order."""

    state_name: str
    digest: str
    n_tokens: int
    tensors: list[Any] = field(default_factory=list)


class DiskStates:
    """The shared tier of one model's states, over a directory or a PostgreSQL table (safe
    to share between processes and replicas)."""

    def __init__(
        self,
        directory: Path | StateBlobs,
        identity: StateIdentity,
        max_bytes: int,
        retention_s: float,
    ) -> None:
        self.blobs: StateBlobs = DirBlobs(directory) if isinstance(directory, Path) else directory
        self.identity = identity
        self.max_bytes = max_bytes
        self.retention_s = retention_s
        self.stats = DiskStats()
        self._lock = threading.Lock()
        self._rescan()

    def key(self, state_name: str, digest: str) -> str:
        return hashlib.sha256(f"{self.identity.model}\0{state_name}\0{digest}".encode()).hexdigest()

    def exists(self, state_name: str, digest: str) -> bool:
        return self.blobs.exists(self.key(state_name, digest))

    # -- load ------------------------------------------------------------------------------

    def load(
        self, state_name: str, digest: str, n_tokens: int, like: list[Any], device: str
    ) -> tuple[list[Any], Any] | None:
        """The state (shaped and typed like ``like``) and logits stored for this prefix,
        or None; an unusable file is removed so the next save replaces it."""
        key = self.key(state_name, digest)
        start = time.perf_counter()
        raw = self.blobs.read(key)
        if raw is None:
            self.stats.misses += 1
            return None
        try:
            tensors = self._decode(raw, state_name, digest, n_tokens, like, device)
        except (_Refused, ValueError, KeyError, TypeError, RuntimeError, struct.error) as why:
            log.warning("stored state %s refused: %s", key, why)
            self.stats.refused += 1
            self.blobs.delete(key)
            return None
        self.blobs.touch(key)  # least recently used first out
        self.stats.hits += 1
        self.stats.load_seconds += time.perf_counter() - start
        return tensors[:-1], tensors[-1]

    def _verified(
        self, raw: bytes, state_name: str, digest: str, n_tokens: int
    ) -> tuple[dict[str, Any], bytes]:
        """The header and payload of a file that belongs here and is whole."""
        if not raw.startswith(_MAGIC) or len(raw) < len(_MAGIC) + 8:
            raise _Refused("not a state file")
        (hlen,) = struct.unpack_from("<Q", raw, len(_MAGIC))
        body = len(_MAGIC) + 8
        try:
            header = json.loads(raw[body : body + hlen])
        except ValueError as exc:
            raise _Refused("unreadable header") from exc
        if not isinstance(header, dict):
            raise _Refused("unreadable header")
        ident = self.identity
        want = {
            "model": ident.model,
            "weights": ident.weights,
            "state": state_name,
            "state_fingerprint": ident.states.get(state_name),
            "prefix": digest,
            "tokens": n_tokens,
        }
        for key, value in want.items():
            if header.get(key) != value:
                raise _Refused(f"its {key} differs")
        payload = raw[body + hlen :]
        if len(payload) != header.get("payload_bytes"):
            raise _Refused("truncated")
        if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
            raise _Refused("checksum mismatch")
        return header, payload

    def _decode(
        self, raw: bytes, state_name: str, digest: str, n_tokens: int, like: list[Any], device: str
    ) -> list[Any]:
        import torch

        header, payload = self._verified(raw, state_name, digest, n_tokens)
        specs = header.get("tensors", [])
        if len(specs) != len(like) + 1:
            raise _Refused("tensor count differs")
        out: list[Any] = []
        offset = 0
        buf = bytearray(payload)
        for i, spec in enumerate(specs):
            dtype = getattr(torch, str(spec["dtype"]).removeprefix("torch."), None)
            shape = tuple(int(s) for s in spec["shape"])
            if not isinstance(dtype, torch.dtype):
                raise _Refused("unknown dtype")
            if i < len(like) and (dtype != like[i].dtype or shape != tuple(like[i].shape)):
                raise _Refused("tensor shape or dtype differs")
            count = 1
            for s in shape:
                count *= s
            nbytes = count * torch.empty((), dtype=dtype).element_size()
            flat = torch.frombuffer(buf, dtype=torch.uint8, count=nbytes, offset=offset)
            out.append(flat.view(dtype).reshape(shape).to(device, copy=True))
            offset += nbytes
        if offset != len(payload):
            raise _Refused("payload size differs")
        return out

    # -- save ------------------------------------------------------------------------------

    def save(self, item: StateWrite) -> None:
        key = self.key(item.state_name, item.digest)
        if self.blobs.exists(key):  # the same key holds the same state
            self.blobs.touch(key)
            return
        start = time.perf_counter()
        payload = b"".join(_tensor_bytes(t) for t in item.tensors)
        ident = self.identity
        header = json.dumps(
            {
                "model": ident.model,
                "weights": ident.weights,
                "state": item.state_name,
                "state_fingerprint": ident.states.get(item.state_name),
                "prefix": item.digest,
                "tokens": item.n_tokens,
                "tensors": [{"dtype": str(t.dtype), "shape": list(t.shape)} for t in item.tensors],
                "payload_bytes": len(payload),
                "payload_sha256": hashlib.sha256(payload).hexdigest(),
                "created": time.time(),
            },
            sort_keys=True,
        ).encode()
        size = self.blobs.write(key, _MAGIC + struct.pack("<Q", len(header)) + header + payload)
        with self._lock:
            self.stats.saves += 1
            self.stats.bytes += size
            self.stats.save_seconds += time.perf_counter() - start
            over = self.stats.bytes > self.max_bytes
        if over:
            self._rescan()

    def delete(self, state_name: str, digest: str) -> bool:
        return self.blobs.delete(self.key(state_name, digest))

    def _rescan(self) -> None:
        """Drop expired states, then the least recently used past the byte budget."""
        evicted, total = self.blobs.evict(self.max_bytes, self.retention_s)
        with self._lock:
            self.stats.evicted += evicted
            self.stats.bytes = total


class _Refused(Exception):
    pass


class StateTiers:
    """The prefix-state cache (device, host) over an optional disk tier.

    ``lookup`` and ``put`` run on the engine's scheduler thread; disk writes go through a
    bounded write-behind queue to a thread of their own, so saving never stalls a step.
    """

    def __init__(
        self,
        memory: PrefixStateCache,
        disk: DiskStates | None,
        *,
        device: str,
        zero_state: list[Any],
        min_tokens: int = 0,
        queue_size: int = 64,
    ) -> None:
        self.memory = memory
        self.disk = disk
        self.device = device
        self.zero_state = zero_state
        self.min_tokens = min_tokens
        self.hits = 0
        self.misses = 0
        self.hit_tokens = 0
        self.tier_hits = {"device": 0, "host": 0, "disk": 0}
        self._queue: queue.Queue[StateWrite | None] = queue.Queue(maxsize=max(1, queue_size))
        self._writer: threading.Thread | None = None
        if disk is not None:
            self._writer = threading.Thread(
                target=self._write_loop, args=(disk,), name="rwkv-states", daemon=True
            )
            self._writer.start()

    @property
    def bytes(self) -> int:
        return self.memory.bytes

    def tier_bytes(self) -> dict[str, int]:
        return {
            "device": self.memory.bytes,
            "host": self.memory.spilled_bytes,
            "disk": self.disk.stats.bytes if self.disk is not None else 0,
        }

    def __len__(self) -> int:
        return len(self.memory)

    def lookup(
        self,
        state_name: str,
        tokens: list[int],
        boundaries: Iterable[int] = (),
        unlocked: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> tuple[int, CacheEntry | None]:
        """The longest stored prefix of ``tokens`` among memory and, past it, the turn
        boundaries (and the whole prompt) on disk: (its length, entry) or (0, None).
        ``unlocked`` releases the caller's lock while files are read, so a read never
        holds up whoever waits on it (the event loop submitting a request)."""
        n, entry = self.memory.lookup(state_name, tokens)
        if self.disk is not None:
            with unlocked():
                return self._disk_lookup(state_name, tokens, boundaries, n, entry)
        return self._counted(n, entry)

    def _disk_lookup(
        self,
        state_name: str,
        tokens: list[int],
        boundaries: Iterable[int],
        n: int,
        entry: CacheEntry | None,
    ) -> tuple[int, CacheEntry | None]:
        if self.disk is not None:
            candidates = {b for b in boundaries if n < b < len(tokens)} | {len(tokens)}
            candidates = {b for b in candidates if b > n and b >= self.min_tokens}
            digests = prefix_digests(tokens, candidates)
            for b in sorted(candidates, reverse=True):
                if not self.disk.exists(state_name, digests[b]):
                    continue
                got = self.disk.load(state_name, digests[b], b, self.zero_state, self.device)
                if got is None:
                    continue
                state, logits = got
                self.memory.put(state_name, tokens[:b], state, logits)
                self.tier_hits["disk"] += 1
                self.hits += 1
                self.hit_tokens += b
                return b, CacheEntry(state, logits, 0)
        return self._counted(n, entry)

    def _counted(self, n: int, entry: CacheEntry | None) -> tuple[int, CacheEntry | None]:
        if entry is None:
            self.misses += 1
            return 0, None
        self.tier_hits["device" if entry.on_device else "host"] += 1
        self.hits += 1
        self.hit_tokens += n
        return n, entry

    def put(
        self,
        state_name: str,
        tokens: list[int],
        state: list[Any],
        logits: Any,
        persist: bool = True,
    ) -> str | None:
        """Cache the state after ``tokens``; the prefix's digest when it is queued for disk."""
        self.memory.put(state_name, tokens, state, logits)
        if self.disk is None or not persist or not tokens or len(tokens) < self.min_tokens:
            return None
        digest = prefix_digests(tokens, [len(tokens)])[len(tokens)]
        host = [t.to("cpu", copy=True) for t in [*state, logits]]
        try:
            self._queue.put_nowait(StateWrite(state_name, digest, len(tokens), host))
        except queue.Full:
            self.disk.stats.dropped += 1
            return None
        return digest

    def forget(self, state_name: str, digests: Iterable[str]) -> None:
        """Delete these prefixes' disk states, after any of their writes still queued."""
        if self.disk is None:
            return
        for digest in digests:
            self._queue.put(StateWrite(state_name, digest, -1))

    def flush(self) -> None:
        """Wait until every queued write is on disk."""
        if self._writer is not None:
            self._queue.join()

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=60)
            self._writer = None
        if self.disk is not None:
            self.disk.blobs.close()

    def _write_loop(self, disk: DiskStates) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if item.n_tokens < 0:
                    disk.delete(item.state_name, item.digest)
                else:
                    disk.save(item)
            except Exception:  # a failed save loses a cache entry, nothing more
                log.exception("saving a state failed")
            finally:
                self._queue.task_done()


def build_state_tiers(
    memory: PrefixStateCache,
    *,
    model_id: str,
    weights_path: Path,
    initial_states: dict[str, list[Any]],
    zero_state: list[Any],
    device: str,
    options: Any,
    data_dir: Path | None,
    knowledge_dsn: str | None = None,
) -> StateTiers:
    """The engine's state tiers from its options (``options`` is an ``RWKVOptions``); no
    shared tier without a budget, or without a place (a directory: ``state_disk_dir`` or
    the data dir; PostgreSQL: ``state_postgres_dsn`` or the knowledge base's DSN)."""
    blobs: StateBlobs | None = None
    if options.state_disk_bytes > 0:
        if options.state_store == "postgres":
            dsn = options.state_postgres_dsn or knowledge_dsn
            if not dsn:
                raise ValueError(
                    "state_store: postgres needs state_postgres_dsn or a knowledge base on "
                    "PostgreSQL"
                )
            blobs = PostgresBlobs(dsn)
        else:
            directory = options.state_disk_dir
            root = Path(directory).expanduser() if directory else None
            root = root or (data_dir / "states" if data_dir else None)
            blobs = DirBlobs(root) if root is not None else None
    disk = None
    if blobs is not None:
        identity = StateIdentity(
            model=model_id,
            weights=file_fingerprint(weights_path),
            states={name: tensors_fingerprint(t) for name, t in initial_states.items()},
        )
        disk = DiskStates(blobs, identity, options.state_disk_bytes, options.state_retention_s)
    return StateTiers(
        memory,
        disk,
        device=device,
        zero_state=zero_state,
        min_tokens=options.state_disk_min_tokens,
        queue_size=options.state_disk_queue,
    )
