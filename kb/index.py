"""Dense vectors in FAISS: one index per collection, ids = SQLite chunk ids.

The index is derived data. It is saved atomically (temp file + rename) and can always be
rebuilt from the vectors SQLite keeps. Exact inner-product search (``flat``) while a
collection is small; past ``ann_threshold`` vectors an approximate index is built (on a
snapshot, off the request path, while searches keep using the exact one) and swapped in:
HNSW by default, IVF as a setting. HNSW cannot delete in place, so deletions are
tombstones filtered inside FAISS at search time, and the graph is rebuilt once they pass
a fifth of it. GPU indexes are used for exact search when faiss-gpu and a GPU are present.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VectorIndex", "gpu_available"]


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorIndex:
    """A thread-safe FAISS index over normalised vectors (inner product = cosine)."""

    def __init__(
        self,
        dimensions: int,
        *,
        ann_threshold: int = 50_000,
        ann: str = "hnsw",
        nprobe: int = 32,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 256,
    ) -> None:
        import faiss

        self.dimensions = dimensions
        self.ann_threshold = ann_threshold
        self.ann = ann
        self.nprobe = nprobe
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self._faiss = faiss
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dimensions))
        self._lock = threading.RLock()
        self.kind = "flat"
        self._deleted: set[int] = set()  # HNSW tombstones
        # While an ANN index is built off the lock, writes are logged and replayed on it.
        self._building = False
        self._log: list[tuple[str, np.ndarray, np.ndarray | None]] = []

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._deleted)

    @property
    def building(self) -> bool:
        return self._building

    @property
    def needs_compaction(self) -> bool:
        """Tombstones are over a fifth of an HNSW graph: time to rebuild it."""
        return self.kind == "hnsw" and len(self._deleted) > 0.2 * max(1, self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        arr = np.asarray(ids, dtype=np.int64)
        with self._lock:
            if self.kind == "hnsw" and self._deleted.intersection(arr.tolist()):
                raise ValueError("chunk ids are never reused")
            self._index.add_with_ids(vecs, arr)
            if self._building:
                self._log.append(("add", arr, vecs))

    def remove(self, ids: np.ndarray | list[int]) -> int:
        if len(ids) == 0:
            return 0
        arr = np.asarray(ids, dtype=np.int64)
        with self._lock:
            if self._building:
                self._log.append(("remove", arr, None))
            if self.kind == "hnsw":
                present = self._present(arr)
                self._deleted.update(present)
                return len(present)
            return int(self._index.remove_ids(arr))

    def _present(self, arr: np.ndarray) -> list[int]:
        have = set(self._faiss.vector_to_array(self._index.id_map).tolist())
        return [int(i) for i in arr.tolist() if i in have and i not in self._deleted]

    def ids(self) -> set[int]:
        with self._lock:
            inner = self._index
            if self.kind in ("flat", "hnsw"):
                return set(self._faiss.vector_to_array(inner.id_map).tolist()) - self._deleted
            invlists: Any = self._faiss.extract_index_ivf(inner).invlists
            out: set[int] = set()
            for lst in range(invlists.nlist):
                n = invlists.list_size(lst)
                if n:
                    ptr = invlists.get_ids(lst)
                    out.update(int(x) for x in self._faiss.rev_swig_ptr(ptr, n))
            return out

    def search(
        self, query: np.ndarray, k: int, *, allowed: set[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) for each query row; missing slots have id -1. ``allowed`` limits
        the ids considered (a filter), inside FAISS rather than after it."""
        faiss = self._faiss
        q = np.ascontiguousarray(np.atleast_2d(query), dtype=np.float32)
        empty = np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if allowed is not None and not allowed:
            return empty
        with self._lock:
            if len(self) == 0:
                return empty
            k = min(k, len(self))
            sel: Any = None
            base: Any = None  # an IDSelectorNot points at it: keep it alive
            if allowed is not None:
                keep = allowed - self._deleted if self._deleted else allowed
                if not keep:
                    return empty
                sel = faiss.IDSelectorBatch(np.fromiter(keep, dtype=np.int64, count=len(keep)))
            elif self._deleted:
                gone = np.fromiter(self._deleted, dtype=np.int64, count=len(self._deleted))
                base = faiss.IDSelectorBatch(gone)
                sel = faiss.IDSelectorNot(base)
            if self.kind == "hnsw":
                params: Any = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
                if sel is not None:
                    params.sel = sel
            elif self.kind == "ivf":
                params = faiss.SearchParametersIVF(nprobe=self.nprobe)
                if sel is not None:
                    params.sel = sel
            elif sel is not None:
                params = faiss.SearchParameters(sel=sel)
            else:
                params = None
            scores, ids = self._index.search(q, k, params=params)
        return scores, ids

    # -- ANN -----------------------------------------------------------------------------

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of a flat or HNSW index (tombstones left out), under the lock."""
        with self._lock:
            ids = self._faiss.vector_to_array(self._index.id_map).astype(np.int64)
            if not len(ids):
                return ids, np.zeros((0, self.dimensions), np.float32)
            vecs = np.asarray(self._index.index.reconstruct_n(0, len(ids)), dtype=np.float32)
            if self._deleted:
                keep = ~np.isin(ids, np.fromiter(self._deleted, dtype=np.int64))
                ids, vecs = ids[keep], vecs[keep]
            return ids, vecs

    def upgrade_to_ann(self) -> bool:
        """Build the ANN index from a snapshot while searches and writes go on against the
        current index; writes made meanwhile are replayed on the new one before the swap.
        Also compacts an HNSW graph heavy with tombstones. False when there is nothing to
        do (already ANN and compact, or a build is running)."""
        with self._lock:
            if self._building or (self.kind != "flat" and not self.needs_compaction):
                return False
            if self.kind == "ivf":
                return False
            self._building = True
            self._log = []
            ids, vecs = self.snapshot()
        try:
            self.build_ann(ids, vecs, replay=True)
        finally:
            with self._lock:
                self._building = False
                self._log = []
        return True

    def _new_ann(self, vecs: np.ndarray, nlist: int | None) -> tuple[Any, str]:
        faiss = self._faiss
        n = len(vecs)
        if self.ann == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dimensions, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = self.ef_construction
            hnsw.hnsw.efSearch = self.ef_search
            return faiss.IndexIDMap2(hnsw), "hnsw"
        nlist = nlist or max(16, min(65536, int(4 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(self.dimensions)
        ivf = faiss.IndexIVFFlat(quantizer, self.dimensions, nlist, faiss.METRIC_INNER_PRODUCT)
        train = (
            vecs
            if n <= nlist * 64
            else vecs[np.random.default_rng(0).choice(n, nlist * 64, replace=False)]
        )
        ivf.train(train)
        ivf.nprobe = self.nprobe
        return ivf, "ivf"

    def build_ann(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        nlist: int | None = None,
        *,
        replay: bool = False,
    ) -> None:
        """Build the ANN index over the given vectors (slow: call off the request path),
        then swap it in under the lock."""
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        index, kind = self._new_ann(vecs, nlist)
        index.add_with_ids(vecs, np.asarray(ids, dtype=np.int64))
        with self._lock:
            deleted: set[int] = set()
            if replay:
                for op, op_ids, op_vecs in self._log:
                    if op == "add":
                        index.add_with_ids(op_vecs, op_ids)
                    elif kind == "hnsw":
                        deleted.update(int(i) for i in op_ids)
                    else:
                        index.remove_ids(op_ids)
            self._index = index
            self.kind = kind
            self._deleted = deleted

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with self._lock:
            self._faiss.write_index(self._index, str(tmp))
            # Tombstones live beside the index (ids no longer in SQLite: the load-time
            # check would find them anyway; saving them keeps that cheap).
            gone = np.fromiter(self._deleted, dtype=np.int64, count=len(self._deleted))
        np.save(str(path.with_name(path.name + ".deleted.tmp.npy")), gone)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(path.with_name(path.name + ".deleted.tmp.npy"), _tombstones(path))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dimensions: int, **kwargs: Any) -> VectorIndex:
        import faiss

        index = cls(dimensions, **kwargs)
        loaded = faiss.read_index(str(path))
        if loaded.d != dimensions:
            raise ValueError(f"{path}: index has {loaded.d} dimensions, expected {dimensions}")
        index._index = loaded
        if isinstance(loaded, faiss.IndexIDMap):
            inner: Any = faiss.downcast_index(loaded.index)
            index.kind = "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"
            if index.kind == "hnsw":
                inner.hnsw.efSearch = index.ef_search
                tomb = _tombstones(path)
                if tomb.exists():
                    index._deleted = {int(i) for i in np.load(str(tomb))}
        else:
            index.kind = "ivf"
            faiss.extract_index_ivf(loaded).nprobe = index.nprobe
        return index


def _tombstones(path: Path) -> Path:
    return path.with_name(path.name + ".deleted.npy")
