"""KnowledgeBase: chunk -> embed -> SQLite (truth) -> FAISS (derived), and hybrid search.

Embeddings come from an ``EmbeddingProvider`` (the gateway's batched embedding service in
production, a fake in tests), so ingestion shares the same batching as /v1/embeddings.
A collection remembers its embedding model and dimension; asking it for another model is
a 400. Each collection's FAISS index is loaded from disk when it agrees with SQLite and
rebuilt from SQLite when it is missing or disagrees. Writes mark an index dirty; ``flush``
(and ``close``) save dirty indexes, so bulk ingestion does not rewrite an index per file —
an index left behind by a crash is caught by the consistency check and rebuilt.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from engines.base import Tokenizer
from engines.errors import InvalidRequestError, NotFoundError
from kb.chunking import ChunkingStrategy, chunk_text
from kb.index import VectorIndex
from kb.search import Hit, hybrid_search
from kb.store import ChunkRecord, KnowledgeStore

__all__ = ["EmbeddingProvider", "KnowledgeBase", "SearchResult"]

log = logging.getLogger(__name__)


class EmbeddingProvider(Protocol):
    async def embed(self, model: str, texts: list[str]) -> tuple[np.ndarray, list[int]]: ...

    def tokenizer(self, model: str) -> Tokenizer: ...

    def dimensions(self, model: str) -> int: ...


@dataclass(frozen=True, slots=True)
class SearchResult:
    chunk_id: int
    file_id: str
    text: str
    score: float
    attributes: dict[str, Any]
    page: int | None
    sheet: str | None
    row: int | None
    dense_rank: int | None
    keyword_rank: int | None


class KnowledgeBase:
    def __init__(
        self, data_dir: Path, provider: EmbeddingProvider, *, ann_threshold: int = 50_000
    ) -> None:
        self.dir = data_dir
        self.store = KnowledgeStore(data_dir / "kb.sqlite")
        self.provider = provider
        self.ann_threshold = ann_threshold
        self._indexes: dict[str, VectorIndex] = {}
        self._dirty: set[str] = set()
        self._index_lock = threading.Lock()

    def flush(self) -> None:
        """Save every index changed since it was last saved."""
        with self._index_lock:
            dirty, self._dirty = self._dirty, set()
            for cid in dirty:
                index = self._indexes.get(cid)
                if index is not None:
                    index.save(self._index_path(cid))

    def close(self) -> None:
        self.flush()
        self.store.close()

    # -- collections ---------------------------------------------------------------------

    def create_collection(
        self, name: str | None, embedding_model: str, metadata: dict[str, Any] | None = None
    ) -> str:
        cid = f"vs_{uuid.uuid4().hex}"
        dims = self.provider.dimensions(embedding_model)
        self.store.create_collection(cid, name, embedding_model, dims, metadata)
        return cid

    def collection(self, cid: str) -> dict[str, Any]:
        col = self.store.collection(cid)
        if col is None:
            raise NotFoundError(f"no vector store with id {cid!r}", param="vector_store_id")
        return col

    def delete_collection(self, cid: str) -> None:
        self.collection(cid)
        self.store.delete_collection(cid)
        with self._index_lock:
            self._indexes.pop(cid, None)
            self._dirty.discard(cid)
        self._index_path(cid).unlink(missing_ok=True)

    # -- index lifecycle -----------------------------------------------------------------

    def _index_path(self, cid: str) -> Path:
        return self.dir / "indexes" / f"{cid}.faiss"

    def index(self, cid: str) -> VectorIndex:
        """The collection's FAISS index: cached, else loaded if it agrees with SQLite, else
        rebuilt from SQLite."""
        with self._index_lock:
            cached = self._indexes.get(cid)
            if cached is not None:
                return cached
            col = self.collection(cid)
            dims = int(col["dimensions"])
            path = self._index_path(cid)
            index: VectorIndex | None = None
            if path.exists():
                try:
                    loaded = VectorIndex.load(path, dims)
                    if loaded.ids() == self.store.chunk_ids(cid):
                        index = loaded
                    else:
                        log.warning(
                            "index disagrees with SQLite; rebuilding", extra={"collection": cid}
                        )
                except Exception:
                    log.exception("index unreadable; rebuilding", extra={"collection": cid})
            if index is None:
                index = self._build(dims, *self.store.vectors(cid))
                index.save(path)
            self._indexes[cid] = index
            return index

    def _build(self, dims: int, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        index = VectorIndex(dims, ann_threshold=self.ann_threshold)
        if len(ids) >= self.ann_threshold:
            index.build_ann(ids, vectors)
        else:
            index.add(ids, vectors)
        return index

    def rebuild(self, cid: str) -> int:
        col = self.collection(cid)
        ids, vectors = self.store.vectors(cid)
        index = self._build(int(col["dimensions"]), ids, vectors)
        index.save(self._index_path(cid))
        with self._index_lock:
            self._indexes[cid] = index
            self._dirty.discard(cid)
        return len(index)

    # -- ingest --------------------------------------------------------------------------

    async def add_text(
        self,
        cid: str,
        file_id: str,
        text: str,
        *,
        strategy: ChunkingStrategy | None = None,
        attributes: dict[str, Any] | None = None,
        prefix: str = "",
        page: int | None = None,
    ) -> int:
        """Chunk, embed and store ``text``; returns how many new chunks were added."""
        col = self.collection(cid)
        model = str(col["embedding_model"])
        tok = self.provider.tokenizer(model)
        strategy = strategy or ChunkingStrategy()
        chunks = await asyncio.to_thread(chunk_text, text, strategy, tok.count, prefix=prefix)
        if not chunks:
            return 0
        vectors, _ = await self.provider.embed(model, [c.text for c in chunks])
        records = [
            ChunkRecord(
                file_id,
                c.position,
                c.text,
                c.token_count,
                page=page,
                attributes=dict(attributes or {}),
            )
            for c in chunks
        ]
        index = await asyncio.to_thread(self.index, cid)
        added = await asyncio.to_thread(self.store.add_chunks, cid, records, vectors)
        if added:
            index.add(np.array([cid_ for _, cid_ in added]), vectors[[i for i, _ in added]])
            self._dirty.add(cid)
        return len(added)

    async def delete_file(self, cid: str, file_id: str) -> int:
        self.collection(cid)
        ids = await asyncio.to_thread(self.store.delete_file_chunks, cid, file_id)
        index = await asyncio.to_thread(self.index, cid)
        index.remove(ids)
        self._dirty.add(cid)
        return len(ids)

    # -- search --------------------------------------------------------------------------

    async def search(
        self,
        cid: str,
        query: str,
        k: int = 10,
        *,
        model: str | None = None,
        mode: str = "hybrid",
    ) -> list[SearchResult]:
        col = self.collection(cid)
        if model is not None and model != col["embedding_model"]:
            raise InvalidRequestError(
                f"vector store {cid!r} was embedded with {col['embedding_model']!r}, "
                f"not {model!r}; re-embed it to search with another model",
                param="model",
                code="embedding_model_mismatch",
            )
        if mode not in ("hybrid", "dense", "keyword"):
            raise InvalidRequestError("mode must be hybrid, dense or keyword", param="mode")
        qvec, _ = await self.provider.embed(str(col["embedding_model"]), [query])
        index = await asyncio.to_thread(self.index, cid)
        hits: list[Hit] = await asyncio.to_thread(
            hybrid_search, self.store, index, cid, query, qvec[0], k, mode=mode
        )
        rows = self.store.chunks([h.chunk_id for h in hits])
        out = []
        for h in hits:
            r = rows.get(h.chunk_id)
            if r is None:
                continue
            out.append(
                SearchResult(
                    h.chunk_id,
                    r["file_id"],
                    r["text"],
                    h.score,
                    r["attributes"],
                    r["page"],
                    r["sheet"],
                    r["row"],
                    h.dense_rank,
                    h.keyword_rank,
                )
            )
        return out
