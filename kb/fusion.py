"""Hybrid retrieval: dense (FAISS) and keyword (FTS5 BM25) lists, fused.

Cosine and BM25 scores live on unrelated scales, and a dense model trained on English is
weak on Chinese, where the keyword list must carry the result. The default fusion
(``relative``) normalises each list's scores to [0, 1] and takes their weighted sum, so a
list that is confident (a clear gap between its top hit and the rest) outweighs one that
is not; reciprocal rank fusion (``rrf``) and distribution-based normalisation (``dbsf``)
are settings. On our evaluation sets (bench/kb_eval.py) relative fusion is never worse
than the better of dense and BM25 on recall@5, where RRF was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Hit", "bm25_confidence", "convex_fusion", "fuse", "rrf", "score_fusion"]

# The BM25 score (FTS5, higher = better) that reads as an even-odds match.
BM25_HALF = 4.0


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: int
    score: float
    dense_rank: int | None
    keyword_rank: int | None
    dense_score: float | None = None
    keyword_score: float | None = None
    fused_score: float | None = None
    sparse_score: float | None = None


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


def fuse(
    dense: list[tuple[int, float]],
    keyword: list[tuple[int, float]],
    k: int,
    *,
    dense_weight: float = 1.0,
    keyword_weight: float = 1.0,
    fusion: str = "relative",
    rrf_k: float = 60.0,
    sparse: list[tuple[int, float]] | None = None,
    sparse_weight: float = 1.0,
    dense_calibrated: list[tuple[int, float]] | None = None,
    convex_alpha: float = 0.5,
    bm25_half: float = BM25_HALF,
) -> list[Hit]:
    """The ``k`` best chunks of the candidate lists (any may be empty): dense, BM25 and,
    for BGE-M3 stores, the lexical (sparse) list. ``dense_calibrated``: the dense list's
    scores on an absolute [0, 1] scale (the probe's), read by ``convex`` fusion."""
    sparse = sparse or []
    d_rank = {c: r for r, (c, _) in enumerate(dense, start=1)}
    k_rank = {c: r for r, (c, _) in enumerate(keyword, start=1)}
    d_score, k_score, s_score = dict(dense), dict(keyword), dict(sparse)
    if fusion == "rrf":
        lists = [[c for c, _ in dense], [c for c, _ in keyword], [c for c, _ in sparse]]
        weights = [dense_weight, keyword_weight, sparse_weight if sparse else 0.0]
        fused = rrf(lists, k=rrf_k, weights=weights)
        top = sum(weights) / (rrf_k + 1) or 1.0
        fused = [(c, s / top) for c, s in fused]
    elif fusion == "convex":
        fused = convex_fusion(
            dense_calibrated if dense_calibrated is not None else dense,
            keyword,
            alpha=convex_alpha,
            half=bm25_half,
            dense_weight=dense_weight,
            keyword_weight=keyword_weight,
            sparse=sparse,
            sparse_weight=sparse_weight,
        )
    else:
        fused = score_fusion(
            dense, keyword, dense_weight, keyword_weight, fusion, sparse, sparse_weight
        )
    # Fused scores say how a hit ranks against the others, not whether any is relevant:
    # scale them by the strongest absolute evidence found (the best cosine similarity, a
    # saturated BM25 score), so an off-topic query scores low across the board.
    evidence = max(
        max((s for _, s in dense), default=0.0) if dense_weight else 0.0,
        bm25_confidence(keyword[0][1]) if keyword and keyword_weight else 0.0,
    )
    scale = min(1.0, max(0.0, evidence))
    return [
        Hit(
            c,
            s * scale,
            d_rank.get(c),
            k_rank.get(c),
            d_score.get(c),
            k_score.get(c),
            s,
            s_score.get(c),
        )
        for c, s in fused[:k]
    ]


def bm25_confidence(score: float, half: float = BM25_HALF) -> float:
    """A BM25 score squashed into [0, 1): ``half`` maps to 0.5."""
    return score / (score + half) if score > 0 else 0.0


def convex_fusion(
    dense: list[tuple[int, float]],
    keyword: list[tuple[int, float]],
    *,
    alpha: float,
    half: float,
    dense_weight: float = 1.0,
    keyword_weight: float = 1.0,
    sparse: list[tuple[int, float]] | None = None,
    sparse_weight: float = 1.0,
) -> list[tuple[int, float]]:
    """A convex combination of absolute scores: ``alpha`` x the dense list's calibrated
    score (in [0, 1]) + ``1 - alpha`` x the saturated BM25 score, each list's share
    scaled by its weight and the total renormalised to [0, 1]; a chunk absent from a
    list scores 0 there. Unlike min-max fusion a chunk's fused score does not depend on
    the other hits, so a list whose best hit is weak cannot look confident. The sparse
    list (BGE-M3), on no fixed scale, joins min-max normalised."""
    a = alpha * dense_weight if dense else 0.0
    b = (1.0 - alpha) * keyword_weight if keyword else 0.0
    sp = _normalise(sparse or [], "relative")
    c = (1.0 - alpha) * sparse_weight if sp else 0.0
    total = (a + b + c) or 1.0
    scores: dict[int, float] = {}
    for cid, s in dense:
        scores[cid] = a * min(1.0, max(0.0, s)) / total
    for cid, s in keyword:
        scores[cid] = scores.get(cid, 0.0) + b * bm25_confidence(s, half) / total
    for cid, s in sp.items():
        scores[cid] = scores.get(cid, 0.0) + c * s / total
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def _normalise(items: list[tuple[int, float]], how: str) -> dict[int, float]:
    if not items:
        return {}
    vals = np.array([s for _, s in items], dtype=np.float64)
    if how == "dbsf":
        # Distribution-based: mean +- 3 sigma of this list's scores maps to [0, 1].
        mu, sd = float(vals.mean()), float(vals.std())
        lo, hi = mu - 3 * sd, mu + 3 * sd
    else:
        lo, hi = float(vals.min()), float(vals.max())
    span = hi - lo
    if span <= 1e-12:
        return {c: 1.0 for c, _ in items}
    return {c: min(1.0, max(0.0, (s - lo) / span)) for c, s in items}


def score_fusion(
    dense: list[tuple[int, float]],
    keyword: list[tuple[int, float]],
    dense_weight: float,
    keyword_weight: float,
    how: str = "relative",
    sparse: list[tuple[int, float]] | None = None,
    sparse_weight: float = 1.0,
) -> list[tuple[int, float]]:
    """Weighted sum of per-list normalised scores (relative score fusion, or DBSF): unlike
    RRF it keeps how far ahead a list's top hit is, so a confident list wins."""
    d = _normalise(dense, how)
    kw = _normalise(keyword, how)
    sp = _normalise(sparse or [], how)
    total = (
        (dense_weight if d else 0.0)
        + (keyword_weight if kw else 0.0)
        + (sparse_weight if sp else 0.0)
    ) or 1.0
    ids = set(d) | set(kw) | set(sp)
    scores = {
        c: (
            dense_weight * d.get(c, 0.0)
            + keyword_weight * kw.get(c, 0.0)
            + sparse_weight * sp.get(c, 0.0)
        )
        / total
        for c in ids
    }
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
