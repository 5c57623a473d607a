"""Hybrid retrieval: dense (FAISS) and keyword (FTS5 BM25) lists fused by reciprocal rank.

Reciprocal rank fusion needs no score calibration between the two lists, which matters
here: cosine scores and BM25 scores live on unrelated scales, and a dense model trained
on English is weak on Chinese, where the keyword list must carry the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kb.index import VectorIndex
from kb.store import KnowledgeStore

__all__ = ["Hit", "hybrid_search", "rrf"]


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: int
    score: float
    dense_rank: int | None
    keyword_rank: int | None


def rrf(
    lists: Sequence[Sequence[int]], *, k: float = 60.0, weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score(d) = sum_i w_i / (k + rank_i(d)), ranks from 1."""
    weights = weights or [1.0] * len(lists)
    scores: dict[int, float] = {}
    for items, w in zip(lists, weights, strict=True):
        for rank, item in enumerate(items, start=1):
            scores[item] = scores.get(item, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def hybrid_search(
    store: KnowledgeStore,
    index: VectorIndex,
    collection_id: str,
    query: str,
    query_vector: np.ndarray,
    k: int,
    *,
    mode: str = "hybrid",
    candidates: int = 50,
    rrf_k: float = 60.0,
    dense_weight: float = 1.0,
    keyword_weight: float = 1.0,
    allowed: set[int] | None = None,
) -> list[Hit]:
    """The ``k`` best chunks for ``query`` by ``mode``: dense | keyword | hybrid."""
    n = max(k, candidates)
    dense: list[int] = []
    if mode in ("dense", "hybrid"):
        _, ids = index.search(query_vector, n, allowed=allowed)
        dense = [int(i) for i in ids[0] if i >= 0] if ids.size else []
    keyword: list[int] = []
    if mode in ("keyword", "hybrid"):
        keyword = [cid for cid, _ in store.keyword_search(collection_id, query, n, allowed=allowed)]
    d_rank = {c: r for r, c in enumerate(dense, start=1)}
    k_rank = {c: r for r, c in enumerate(keyword, start=1)}
    if mode == "dense":
        fused = [(c, 1.0 / (rrf_k + r)) for c, r in d_rank.items()]
    elif mode == "keyword":
        fused = [(c, 1.0 / (rrf_k + r)) for c, r in k_rank.items()]
    else:
        fused = rrf([dense, keyword], k=rrf_k, weights=[dense_weight, keyword_weight])
    return [Hit(c, s, d_rank.get(c), k_rank.get(c)) for c, s in fused[:k]]
