"""Dense vectors in FAISS: one index per collection, ids = SQLite chunk ids.

The index is derived data. It is saved atomically (temp file + rename) and can always be
rebuilt from the vectors SQLite keeps. Exact inner-product search while a collection is
small; past ``ann_threshold`` vectors an IVF index is trained (on a copy, off the request
path) and swapped in. GPU indexes are used when faiss-gpu and a GPU are present.
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

    def __init__(self, dimensions: int, *, ann_threshold: int = 50_000, nprobe: int = 16) -> None:
        import faiss

        self.dimensions = dimensions
        self.ann_threshold = ann_threshold
        self.nprobe = nprobe
        self._faiss = faiss
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dimensions))
        self._lock = threading.RLock()
        self.kind = "flat"
        # While an ANN index is built off the lock, writes are logged and replayed on it.
        self._building = False
        self._log: list[tuple[str, np.ndarray, np.ndarray | None]] = []

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        arr = np.asarray(ids, dtype=np.int64)
        with self._lock:
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
            return int(self._index.remove_ids(arr))

    @property
    def building(self) -> bool:
        return self._building

    def ids(self) -> set[int]:
        with self._lock:
            inner = self._index
            if self.kind == "flat":
                return {int(i) for i in self._faiss.vector_to_array(inner.id_map)}
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
            if self._index.ntotal == 0:
                return empty
            k = min(k, int(self._index.ntotal))
            if allowed is None:
                scores, ids = self._index.search(q, k)
                return scores, ids
            sel = faiss.IDSelectorBatch(np.fromiter(allowed, dtype=np.int64, count=len(allowed)))
            if self.kind == "flat":
                params: Any = faiss.SearchParameters(sel=sel)
            else:
                params = faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe)
            scores, ids = self._index.search(q, k, params=params)
        return scores, ids

    # -- ANN -----------------------------------------------------------------------------

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of a flat index, read under the lock."""
        with self._lock:
            inner = self._index
            ids = self._faiss.vector_to_array(inner.id_map).astype(np.int64)
            if not len(ids):
                return ids, np.zeros((0, self.dimensions), np.float32)
            return ids, np.asarray(inner.index.reconstruct_n(0, len(ids)), dtype=np.float32)

    def upgrade_to_ann(self) -> bool:
        """Build the IVF index from a snapshot while searches and writes go on against the
        flat index; writes made meanwhile are replayed on the new index before the swap.
        Returns False when there is nothing to do (already ANN, or a build is running)."""
        with self._lock:
            if self.kind != "flat" or self._building:
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

    def build_ann(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        nlist: int | None = None,
        *,
        replay: bool = False,
    ) -> None:
        """Train an IVF index on the given vectors (slow: call off the request path), then
        swap it in under the lock."""
        faiss = self._faiss
        n = len(ids)
        nlist = nlist or max(16, min(65536, int(4 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(self.dimensions)
        ivf = faiss.IndexIVFFlat(quantizer, self.dimensions, nlist, faiss.METRIC_INNER_PRODUCT)
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        train = (
            vecs
            if n <= nlist * 64
            else vecs[np.random.default_rng(0).choice(n, nlist * 64, replace=False)]
        )
        ivf.train(train)
        ivf.nprobe = self.nprobe
        ivf.add_with_ids(vecs, np.asarray(ids, dtype=np.int64))
        with self._lock:
            if replay:
                for op, op_ids, op_vecs in self._log:
                    if op == "add":
                        ivf.add_with_ids(op_vecs, op_ids)
                    else:
                        ivf.remove_ids(op_ids)
            self._index = ivf
            self.kind = "ivf"

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with self._lock:
            self._faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dimensions: int, **kwargs: Any) -> VectorIndex:
        import faiss

        index = cls(dimensions, **kwargs)
        loaded = faiss.read_index(str(path))
        if loaded.d != dimensions:
            raise ValueError(f"{path}: index has {loaded.d} dimensions, expected {dimensions}")
        index._index = loaded
        index.kind = "flat" if isinstance(loaded, faiss.IndexIDMap) else "ivf"
        if index.kind == "ivf":
            faiss.extract_index_ivf(loaded).nprobe = index.nprobe
        return index
