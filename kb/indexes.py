"""The FAISS indexes of the SQLite backend: derived data, cached per collection.

At load an index file is compared with SQLite's chunk ids and repaired (missing vectors
added, stale ids removed), or rebuilt when unreadable. Past ``ann_threshold`` vectors (or
when HNSW tombstones pass a fifth of the graph) an approximate index is built in a
background thread from a snapshot while searches go on against the current one; writes
made meanwhile are replayed before the swap. Dirty indexes are saved on ``flush``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from kb.config import KnowledgeSettings
from kb.index import VectorIndex

__all__ = ["IndexManager", "VectorSource"]

log = logging.getLogger(__name__)


class VectorSource(Protocol):
    """Where the vectors come from (the SQLite chunks table)."""

    def vectors(self, cid: str, ids: set[int] | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def chunk_ids(self, cid: str) -> set[int]: ...


class IndexManager:
    def __init__(
        self,
        source: VectorSource,
        directory: Path,
        settings: KnowledgeSettings,
        dimensions: Callable[[str], int | None],
    ) -> None:
        self.source = source
        self.dir = directory
        self.settings = settings
        self._dimensions = dimensions
        self._indexes: dict[str, VectorIndex] = {}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._upgrades: dict[str, threading.Thread] = {}

    def _path(self, cid: str) -> Path:
        return self.dir / f"{cid}.faiss"

    def _new(self, dims: int) -> VectorIndex:
        s = self.settings
        return VectorIndex(
            dims,
            ann_threshold=s.ann_threshold,
            ann=s.ann_index,
            nprobe=s.ann_nprobe,
            hnsw_m=s.hnsw_m,
            ef_construction=s.hnsw_ef_construction,
            ef_search=s.hnsw_ef_search,
        )

    def loaded(self, cid: str) -> VectorIndex | None:
        return self._indexes.get(cid)

    def get(self, cid: str) -> VectorIndex:
        """The collection's index: cached, else loaded and repaired, else rebuilt."""
        with self._lock:
            cached = self._indexes.get(cid)
            if cached is not None:
                return cached
            dims = self._dimensions(cid) or 0
            path = self._path(cid)
            index: VectorIndex | None = None
            if path.exists():
                try:
                    index = VectorIndex.load(path, dims, **self._options())
                    self._repair(cid, index)
                except (OSError, RuntimeError, ValueError):
                    log.exception("index unreadable; rebuilding", extra={"collection": cid})
                    index = None
            if index is None:
                index = self._build(dims, *self.source.vectors(cid))
                index.save(path)
            self._indexes[cid] = index
            return index

    def _options(self) -> dict[str, object]:
        s = self.settings
        return {
            "ann_threshold": s.ann_threshold,
            "ann": s.ann_index,
            "nprobe": s.ann_nprobe,
            "hnsw_m": s.hnsw_m,
            "ef_construction": s.hnsw_ef_construction,
            "ef_search": s.hnsw_ef_search,
        }

    def _repair(self, cid: str, index: VectorIndex) -> None:
        have = index.ids()
        truth = self.source.chunk_ids(cid)
        stale, missing = have - truth, truth - have
        if not stale and not missing:
            return
        log.warning(
            "index disagrees with SQLite; repairing",
            extra={"collection": cid, "missing": len(missing), "stale": len(stale)},
        )
        index.remove(sorted(stale))
        index.add(*self.source.vectors(cid, missing))
        index.save(self._path(cid))

    def _build(self, dims: int, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        index = self._new(dims)
        if len(ids) >= self.settings.ann_threshold:
            index.build_ann(ids, vectors)
        else:
            index.add(ids, vectors)
        return index

    def rebuild(self, cid: str) -> VectorIndex:
        dims = self._dimensions(cid) or 0
        index = self._build(dims, *self.source.vectors(cid))
        index.save(self._path(cid))
        with self._lock:
            self._indexes[cid] = index
            self._dirty.discard(cid)
        return index

    def added(self, cid: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        index = self.get(cid)
        index.add(ids, vectors)
        self._changed(cid, index)

    def removed(self, cid: str, ids: list[int]) -> None:
        index = self.get(cid)
        index.remove(ids)
        self._changed(cid, index)

    def _changed(self, cid: str, index: VectorIndex) -> None:
        with self._lock:
            self._dirty.add(cid)
        self._maybe_upgrade(cid, index)

    def drop(self, cid: str) -> None:
        with self._lock:
            self._indexes.pop(cid, None)
            self._dirty.discard(cid)
        self._path(cid).unlink(missing_ok=True)
        self._path(cid).with_name(f"{cid}.faiss.deleted.npy").unlink(missing_ok=True)

    def forget(self, cid: str) -> None:
        """Drop the cached index (it is reloaded or rebuilt on next use)."""
        with self._lock:
            self._indexes.pop(cid, None)

    def _maybe_upgrade(self, cid: str, index: VectorIndex) -> None:
        due = (
            index.kind == "flat" and len(index) >= self.settings.ann_threshold
        ) or index.needs_compaction
        with self._lock:
            if not due or cid in self._upgrades:
                return
            thread = threading.Thread(
                target=self._upgrade, args=(cid, index), name=f"kb-ann-{cid}", daemon=True
            )
            self._upgrades[cid] = thread
        thread.start()

    def _upgrade(self, cid: str, index: VectorIndex) -> None:
        try:
            started = time.perf_counter()
            if index.upgrade_to_ann():
                with self._lock:
                    self._dirty.add(cid)
                log.info(
                    "index switched to %s",
                    index.kind,
                    extra={
                        "collection": cid,
                        "vectors": len(index),
                        "seconds": round(time.perf_counter() - started, 2),
                    },
                )
        except Exception:  # a failed build leaves the exact index serving; say why
            log.exception("ANN index build failed", extra={"collection": cid})
        finally:
            with self._lock:
                self._upgrades.pop(cid, None)

    def wait_upgrades(self, timeout: float = 3600.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._upgrades.values())
            if not threads or time.monotonic() > deadline:
                return
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))

    @property
    def upgrading(self) -> bool:
        return bool(self._upgrades)

    def flush(self) -> None:
        """Save every index changed since it was last saved."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            for cid in dirty:
                index = self._indexes.get(cid)
                if index is not None and not index.building:
                    index.save(self._path(cid))
                elif index is not None:
                    self._dirty.add(cid)
