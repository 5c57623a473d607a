"""Retrieval as small steps: queries -> scope -> embed -> candidates -> fuse -> hydrate ->
score -> rerank -> threshold. Each step is a method; ``Retriever.search`` only strings them.

Fusion decides the order; the reported ``score`` is absolute (kb/scoring.py): it comes
from the query and the chunk alone, so thresholds mean the same in every store."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from core.errors import InvalidRequestError
from kb.backend import CandidateQuery, Candidates, KnowledgeBackend
from kb.config import KnowledgeSettings
from kb.filters import Filter
from kb.fusion import Hit, bm25_confidence, fuse
from kb.ports import EmbeddingProvider, Reranker, embed_both
from kb.probe import Probe, probe_from_vectors, probe_sentences
from kb.scoring import ScoreModel, coverage, query_terms, script_of
from kb.types import Attributes, Collection, SearchHit, SearchOutcome

__all__ = ["Retriever", "SearchQuery", "rewrite"]

SearchMode = Literal["hybrid", "dense", "keyword", "sparse"]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """One search of one store, as the façade takes it."""

    queries: tuple[str, ...]
    k: int = 10
    filter: Filter | None = None
    rerank: bool | None = None  # None: rerank when a reranker is configured
    score_threshold: float = 0.0
    rewrite_query: bool = False
    mode: SearchMode = "hybrid"
    model: str | None = None  # the embedding model the caller expects the store to use
    weights: tuple[float, float] | None = None  # (dense, keyword)
    fusion: str | None = None


def rewrite(query: str) -> str:
    """A deterministic query rewrite: drop politeness and question scaffolding that only
    dilutes both the keyword and the dense query."""
    q = query.strip()
    q = re.sub(
        r"^(please\s+)?(can|could|would) you (please\s+)?(tell me|explain|show me)\s+",
        "",
        q,
        flags=re.I,
    )
    q = re.sub(r"^(i (want|need|would like) to know|tell me)\s+", "", q, flags=re.I)
    q = re.sub(r"^(请问|请告诉我|我想知道)", "", q)
    q = q.rstrip(" ?？!！.。")
    return q or query.strip()


class Retriever:
    def __init__(
        self,
        backend: KnowledgeBackend,
        provider: EmbeddingProvider,
        settings: KnowledgeSettings,
        reranker: Reranker | None,
    ) -> None:
        self.backend = backend
        self.provider = provider
        self.settings = settings
        self.reranker = reranker
        self.score_model = ScoreModel()
        self._probes: dict[str, Probe] = {}
        self._probe_lock = asyncio.Lock()

    async def search(self, col: Collection, q: SearchQuery) -> SearchOutcome:
        self._check_model(col, q)
        queries = self._queries(q)
        allowed = await self._scope(col, q.filter)
        use_rerank = self.reranker is not None and q.rerank is not False
        want = max(q.k, self.settings.rerank_candidates) if use_rerank else q.k
        # The query is embedded in every mode: keyword search skips the dense list, but
        # the score still reads the cosine, so it means the same in every mode.
        probe = await self.probe(col.embedding_model)
        vectors, lexical = await embed_both(self.provider, col.embedding_model, queries)
        vectors = np.asarray(vectors, dtype=np.float32)
        cands = await self._candidates(col, queries, vectors, lexical, q, allowed, want)
        # BGE-M3's sparse list has no absolute scale to join the calibrated order: stores
        # with it fuse their three lists by min-max (``relative``) as before.
        if (
            q.mode == "hybrid"
            and (q.fusion or self.settings.fusion) == "calibrated"
            and not any(c.sparse for c in cands)
        ):
            hits = await self._fuse_calibrated(
                col, cands, queries, vectors, q, want, probe, allowed
            )
            hits = await self._rerank(queries, hits) if use_rerank and hits else hits
        else:
            fused = self._fuse(cands, queries, q, want, probe)
            hits = await self._hydrate(col, fused, allowed)
            if use_rerank and hits:
                hits = await self._rerank(queries, hits)
            else:
                hits = await self._score(col, queries, vectors, hits, probe)
        return SearchOutcome(queries, [h for h in hits if h.score >= q.score_threshold][: q.k])

    async def probe(self, model: str) -> Probe:
        """How ``model`` reads Latin and CJK script (kb/probe.py), measured once."""
        if model in self._probes:
            return self._probes[model]
        async with self._probe_lock:
            if model not in self._probes:
                vectors, _ = await self.provider.embed(model, probe_sentences())
                self._probes[model] = probe_from_vectors(np.asarray(vectors, dtype=np.float32))
            return self._probes[model]

    # -- steps ----------------------------------------------------------------------------

    @staticmethod
    def _check_model(col: Collection, q: SearchQuery) -> None:
        if q.model is not None and q.model != col.embedding_model:
            raise InvalidRequestError(
                f"vector store {col.id!r} was embedded with {col.embedding_model!r}, "
                f"not {q.model!r}; re-embed it to search with another model",
                param="model",
                code="embedding_model_mismatch",
            )

    @staticmethod
    def _queries(q: SearchQuery) -> list[str]:
        queries = [s for s in q.queries if s.strip()]
        if not queries:
            raise InvalidRequestError("'query' must be a non-empty string", param="query")
        return [rewrite(s) for s in queries] if q.rewrite_query else queries

    async def _scope(self, col: Collection, flt: Filter | None) -> set[str] | None:
        """The files a filter allows (None: every file)."""
        if flt is None:
            return None
        return await asyncio.to_thread(self.backend.matching_files, col.id, flt)

    async def _candidates(
        self,
        col: Collection,
        queries: list[str],
        vectors: np.ndarray,
        lexical: list[dict[int, float]] | None,
        q: SearchQuery,
        allowed: set[str] | None,
        want: int,
    ) -> list[Candidates]:
        dense = q.mode in ("hybrid", "dense")
        use_sparse = lexical is not None and q.mode in ("hybrid", "sparse")
        cq = [
            CandidateQuery(
                text,
                vectors[i] if dense else None,
                lexical[i] if use_sparse and lexical is not None else None,
            )
            for i, text in enumerate(queries)
        ]
        n = max(want, self.settings.search_candidates)
        return await asyncio.to_thread(
            self.backend.candidates,
            col.id,
            cq,
            n,
            allowed_files=allowed,
            dense=dense,
            keyword=q.mode in ("hybrid", "keyword"),
        )

    def _fuse(
        self,
        cands: list[Candidates],
        queries: list[str],
        q: SearchQuery,
        want: int,
        probe: Probe,
    ) -> list[Hit]:
        dense_w, keyword_w = q.weights or (self.settings.dense_weight, self.settings.keyword_weight)
        sparse_w = self.settings.sparse_weight
        if q.mode == "dense":
            keyword_w = sparse_w = 0.0
        elif q.mode == "keyword":
            dense_w = sparse_w = 0.0
        elif q.mode == "sparse":
            dense_w = keyword_w = 0.0
            sparse_w = 1.0
        per_query = []
        for text, c in zip(queries, cands, strict=True):
            # Language-aware: the dense list counts as far as the model reads the query's
            # script (an English-only embedder on a Chinese query leans on keywords).
            script = script_of(text)
            trust = probe.trust(script) if q.weights is None else 1.0
            fusion = q.fusion or self.settings.fusion
            if fusion == "calibrated":  # dense, keyword or sparse alone: the list's order
                fusion = "relative"
            calibrated = None
            if fusion == "convex" and c.dense:
                z = probe.z(np.array([s for _, s in c.dense], dtype=np.float64), script)
                calibrated = [
                    (cid, float(v)) for (cid, _), v in zip(c.dense, np.atleast_1d(z), strict=True)
                ]
            per_query.append(
                fuse(
                    c.dense,
                    c.keyword,
                    want,
                    dense_weight=dense_w * trust**self.settings.trust_power
                    if keyword_w
                    else dense_w,
                    keyword_weight=keyword_w,
                    fusion=fusion,
                    rrf_k=self.settings.rrf_k,
                    sparse=c.sparse if sparse_w else None,
                    sparse_weight=sparse_w,
                    dense_calibrated=calibrated,
                    convex_alpha=self.settings.convex_dense_share,
                    bm25_half=self.settings.bm25_half,
                )
            )
        if len(per_query) == 1:
            return per_query[0]
        # Several queries: a chunk keeps its best score over them.
        best: dict[int, Hit] = {}
        for hits in per_query:
            for h in hits:
                if h.chunk_id not in best or h.score > best[h.chunk_id].score:
                    best[h.chunk_id] = h
        return sorted(best.values(), key=lambda h: (-h.score, h.chunk_id))[:want]

    async def _hydrate(
        self, col: Collection, hits: list[Hit], allowed: set[str] | None
    ) -> list[SearchHit]:
        """Chunks, their files' names and attributes. A chunk deduplicated across files is
        reported under a file the filter allowed."""
        ids = [h.chunk_id for h in hits]
        rows = await asyncio.to_thread(self.backend.chunks, ids)
        owners = (
            await asyncio.to_thread(self.backend.chunk_owners, ids) if allowed is not None else {}
        )
        picked: dict[int, str] = {}
        for h in hits:
            row = rows.get(h.chunk_id)
            if row is None:
                continue
            fid = row.file_id
            if allowed is not None and fid not in allowed:
                fid = next((f for f in owners.get(h.chunk_id, []) if f in allowed), fid)
            picked[h.chunk_id] = fid
        details = await asyncio.to_thread(self.backend.file_details, col.id, set(picked.values()))
        out: list[SearchHit] = []
        for h in hits:
            if h.chunk_id not in picked:
                continue
            row, fid = rows[h.chunk_id], picked[h.chunk_id]
            filename, attributes = details.get(fid, (fid, {}))
            out.append(
                SearchHit(
                    vector_store_id=col.id,
                    chunk_id=h.chunk_id,
                    file_id=fid,
                    filename=filename,
                    text=row.text,
                    score=min(1.0, h.score),
                    attributes=_attributes(attributes),
                    position=row.position,
                    page=row.page,
                    sheet=row.sheet,
                    row=row.row,
                    heading=row.heading,
                    dense_rank=h.dense_rank,
                    keyword_rank=h.keyword_rank,
                    dense_score=h.dense_score,
                    keyword_score=h.keyword_score,
                    fused_score=h.fused_score,
                    sparse_score=h.sparse_score,
                )
            )
        return out

    async def _logits(
        self,
        col: Collection,
        queries: list[str],
        vectors: np.ndarray,
        hits: list[SearchHit],
        probe: Probe,
        weights: tuple[float, float] = (1.0, 1.0),
    ) -> np.ndarray:
        """The score model's log-odds of each hit per query (queries x hits)."""
        got, mat = await asyncio.to_thread(self.backend.vectors, col.id, {h.chunk_id for h in hits})
        row = {int(c): i for i, c in enumerate(got.tolist())}
        cos = np.zeros((len(queries), len(hits)), dtype=np.float64)
        if len(got):
            sims = vectors @ mat.T  # (queries, stored)
            for j, h in enumerate(hits):
                if h.chunk_id in row:
                    cos[:, j] = sims[:, row[h.chunk_id]]
        out = np.zeros((len(queries), len(hits)), dtype=np.float64)
        for i, text in enumerate(queries):
            terms = query_terms(text)
            cov = np.array([coverage(terms, h.text) for h in hits])
            script = script_of(text)
            z = np.clip(np.asarray(probe.z(cos[i], script), dtype=np.float64), -1.0, 2.0)
            out[i] = self.score_model.logits(
                z,
                probe.trust(script),
                cov,
                script,
                dense_weight=weights[0],
                lexical_weight=weights[1],
            )
        return out

    async def _score(
        self,
        col: Collection,
        queries: list[str],
        vectors: np.ndarray,
        hits: list[SearchHit],
        probe: Probe,
    ) -> list[SearchHit]:
        """Each hit's absolute score (kb/scoring.py), its best over the queries. The
        order stays the fusion's."""
        if not hits:
            return hits
        best = _sigmoid((await self._logits(col, queries, vectors, hits, probe)).max(axis=0))
        return [replace(h, score=round(float(s), 6)) for h, s in zip(hits, best, strict=True)]

    async def _fuse_calibrated(
        self,
        col: Collection,
        cands: list[Candidates],
        queries: list[str],
        vectors: np.ndarray,
        q: SearchQuery,
        want: int,
        probe: Probe,
        allowed: set[str] | None,
    ) -> list[SearchHit]:
        """``calibrated`` fusion: every candidate of both lists is ranked by the score
        model's log-odds (the cosine on the probe's scale and the query's term coverage,
        both absolute) plus the saturated BM25 score, weighted; the reported score is
        the model's alone, as in every mode. It reads each candidate's text and vector,
        so it runs after hydrating the whole candidate pool (a hundred chunks or so)."""
        s = self.settings
        pool: dict[int, Hit] = {}
        for c in cands:
            n = len({i for i, _ in c.dense} | {i for i, _ in c.keyword})
            for h in fuse(c.dense, c.keyword, n):
                pool.setdefault(h.chunk_id, h)
        if not pool:
            return []
        hits = await self._hydrate(col, list(pool.values()), allowed)
        dense_w, keyword_w = q.weights or (s.dense_weight, s.keyword_weight)
        logits = await self._logits(col, queries, vectors, hits, probe, (dense_w, keyword_w))
        order = logits.copy()
        for i, c in enumerate(cands):
            bm25 = dict(c.keyword)
            order[i] += (
                keyword_w
                * s.calibrated_bm25_weight
                * np.array([bm25_confidence(bm25.get(h.chunk_id, 0.0), s.bm25_half) for h in hits])
            )
        key = order.max(axis=0)
        score = _sigmoid(
            logits.max(axis=0)
            if (dense_w, keyword_w) == (1.0, 1.0)
            else (await self._logits(col, queries, vectors, hits, probe)).max(axis=0)
        )
        ranked = sorted(range(len(hits)), key=lambda j: (-key[j], hits[j].chunk_id))[:want]
        return [
            replace(hits[j], score=round(float(score[j]), 6), fused_score=round(float(key[j]), 6))
            for j in ranked
        ]

    async def _rerank(self, queries: list[str], hits: list[SearchHit]) -> list[SearchHit]:
        if self.reranker is None:
            return hits
        scores = await self.reranker(" ".join(queries), [h.text for h in hits])
        ranked = [
            replace(h, score=float(s), rerank_score=float(s))
            for h, s in zip(hits, scores, strict=True)
        ]
        ranked.sort(key=lambda h: -h.score)
        return ranked


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _attributes(raw: dict[str, object]) -> Attributes:
    return {k: v for k, v in raw.items() if isinstance(v, str | int | float | bool)}
