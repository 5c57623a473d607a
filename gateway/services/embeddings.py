"""Embeddings and rerank services: wire request in, wire response out, engines in between."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any, Protocol

import numpy as np

from core.errors import EngineUnavailableError, InvalidRequestError
from engines.base import Embedder, Reranker
from engines.batching import DynamicBatcher
from engines.registry import EngineRegistry, ServedModel
from engines.remote.engine import RemoteEmbedder
from gateway.schemas.embeddings import (
    EmbeddingObject,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from gateway.schemas.rerank import (
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
)
from gateway.settings import LimitSettings

__all__ = ["EmbeddingService", "RerankService"]


def _texts_from_input(raw: str | list[Any], max_inputs: int) -> list[str]:
    if isinstance(raw, str):
        texts = [raw]
    else:
        if not raw:
            raise InvalidRequestError("'input' must not be an empty list", param="input")
        if all(isinstance(x, int) for x in raw) or all(isinstance(x, list) for x in raw):
            raise InvalidRequestError(
                "token-id arrays are not supported by this server; send strings",
                param="input",
                code="unsupported_input",
            )
        if not all(isinstance(x, str) for x in raw):
            raise InvalidRequestError(
                "'input' must be a string or a list of strings", param="input"
            )
        texts = list(raw)
    if len(texts) > max_inputs:
        raise InvalidRequestError(
            f"'input' has {len(texts)} items; at most {max_inputs} per request",
            param="input",
            code="too_many_inputs",
        )
    for i, t in enumerate(texts):
        if not t:
            raise InvalidRequestError(f"input[{i}] is an empty string", param="input")
    return texts


Row = tuple[np.ndarray, int, dict[int, float] | None]


class _TokenLimiter:
    """Refuses over-long inputs when ``truncate_inputs`` is off.

    When it is on (the default) nothing is counted here: the engine truncates while it
    tokenizes for the forward and reports each input's token count with its result.
    """

    def __init__(self, limits: LimitSettings) -> None:
        self.limits = limits

    async def check(self, engine: Embedder | Reranker, texts: list[str], param: str) -> None:
        if self.limits.truncate_inputs:
            return
        limit = min(self.limits.max_tokens_per_input, int(engine.max_input_tokens))
        counts: list[int] = await asyncio.to_thread(engine.tokenizer.count, texts)
        for i, n in enumerate(counts):
            if n > limit:
                raise InvalidRequestError(
                    f"{param}[{i}] has {n} tokens; the limit is {limit}",
                    param=param,
                    code="context_length_exceeded",
                )


class _Embedding(Protocol):
    """One embedding model as the services use it, local or remote."""

    async def rows(self, texts: list[str], param: str) -> list[Row]:
        """(vector, token count, lexical weights or None) per text."""
        ...

    async def create(
        self, req: EmbeddingRequest, texts: list[str], dims: int
    ) -> EmbeddingResponse | dict[str, Any]: ...


class _LocalEmbedding:
    """An engine in this process, through its batcher."""

    def __init__(self, model: ServedModel, limiter: _TokenLimiter) -> None:
        self.model = model
        self.limiter = limiter

    async def rows(self, texts: list[str], param: str) -> list[Row]:
        await self.limiter.check(self.model.local_embedder(), texts, param)
        rows: list[Row] = await _batcher(self.model).submit(texts)
        return rows

    async def create(
        self, req: EmbeddingRequest, texts: list[str], dims: int
    ) -> EmbeddingResponse | dict[str, Any]:
        if req.dimensions is not None and not 1 <= req.dimensions <= dims:
            raise InvalidRequestError(
                f"'dimensions' must be between 1 and {dims} for model {req.model!r}",
                param="dimensions",
            )
        vectors, counts = _stacked(await self.rows(texts, "input"))
        if req.dimensions is not None and req.dimensions < dims:
            vectors = vectors[:, : req.dimensions]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        data = [
            EmbeddingObject(
                index=i,
                embedding=(
                    base64.b64encode(row.tobytes()).decode("ascii")
                    if req.encoding_format == "base64"
                    else row.tolist()
                ),
            )
            for i, row in enumerate(vectors)
        ]
        total = int(sum(counts))
        return EmbeddingResponse(
            data=data,
            model=req.model,
            usage=EmbeddingUsage(prompt_tokens=total, total_tokens=total),
        )


class _RemoteEmbedding:
    """Upstream servers: an upstream enforces its own input limits."""

    def __init__(self, engine: RemoteEmbedder) -> None:
        self.engine = engine

    async def rows(self, texts: list[str], param: str) -> list[Row]:
        vectors, counts = await self.engine.encode_async(texts)
        return [(v, n, None) for v, n in zip(vectors, counts, strict=True)]

    async def create(
        self, req: EmbeddingRequest, texts: list[str], dims: int
    ) -> EmbeddingResponse | dict[str, Any]:
        """/v1/embeddings passed through, in the encoding asked. An upstream that ignores
        ``dimensions`` gets its vectors cut and renormalised here."""
        if req.dimensions is not None and dims and not 1 <= req.dimensions <= dims:
            raise InvalidRequestError(
                f"'dimensions' must be between 1 and {dims} for model {req.model!r}",
                param="dimensions",
            )
        body: dict[str, Any] = {"input": texts, "encoding_format": req.encoding_format or "float"}
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        if req.user is not None:
            body["user"] = req.user
        answer: dict[str, Any] = await self.engine.forward(body)
        answer["model"] = req.model
        if req.dimensions is not None:
            for row in answer["data"]:
                row["embedding"] = _cut(row.get("embedding"), req.dimensions, req.encoding_format)
        return answer


def _embedding(model: ServedModel, limiter: _TokenLimiter) -> _Embedding:
    remote = model.remote_embedder()
    return _RemoteEmbedding(remote) if remote is not None else _LocalEmbedding(model, limiter)


def _stacked(rows: list[Row]) -> tuple[np.ndarray, list[int]]:
    return np.stack([r[0] for r in rows]).astype(np.float32, copy=False), [r[1] for r in rows]


def _batcher(model: ServedModel) -> DynamicBatcher[Any, Any]:
    if model.batcher is None:
        raise EngineUnavailableError(f"the model {model.info.id!r} is not running")
    return model.batcher


class EmbeddingService:
    def __init__(self, registry: EngineRegistry, limits: LimitSettings) -> None:
        self.registry = registry
        self.limits = limits
        self._limiter = _TokenLimiter(limits)

    async def embed_texts(self, model_name: str, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Vectors and token counts for ``texts`` (used by the KB too)."""
        model = self.registry.resolve(model_name, "embedding")
        return _stacked(await _embedding(model, self._limiter).rows(texts, "input"))

    async def embed_texts_sparse(
        self, model_name: str, texts: list[str]
    ) -> tuple[np.ndarray, list[int], list[dict[int, float]] | None]:
        """As ``embed_texts``, with BGE-M3's lexical weights (None for other models)."""
        model = self.registry.resolve(model_name, "embedding")
        rows = await _embedding(model, self._limiter).rows(texts, "input")
        vectors, counts = _stacked(rows)
        sparse = [r[2] for r in rows]
        lex = None if any(s is None for s in sparse) else [s for s in sparse if s is not None]
        return vectors, counts, lex

    async def create(self, req: EmbeddingRequest) -> EmbeddingResponse | dict[str, Any]:
        model = self.registry.resolve(req.model, "embedding")
        texts = _texts_from_input(req.input, self.limits.max_inputs_per_request)
        dims = model.info.dimensions or 0
        return await _embedding(model, self._limiter).create(req, texts, dims)


def _cut(raw: Any, size: int, encoding: str | None) -> Any:
    as_b64 = isinstance(raw, str)
    vec = (
        np.frombuffer(base64.b64decode(raw), dtype="<f4")
        if as_b64
        else np.asarray(raw, dtype=np.float32)
    )
    if vec.shape[0] <= size:
        return raw
    vec = vec[:size] / max(float(np.linalg.norm(vec[:size])), 1e-12)
    vec = np.ascontiguousarray(vec, dtype="<f4")
    return base64.b64encode(vec.tobytes()).decode("ascii") if as_b64 else vec.tolist()


class RerankService:
    def __init__(self, registry: EngineRegistry, limits: LimitSettings) -> None:
        self.registry = registry
        self.limits = limits
        self._limiter = _TokenLimiter(limits)

    async def scores(
        self, model_name: str | None, query: str, docs: list[str]
    ) -> tuple[ServedModel, list[float], int]:
        """Relevance of each doc to ``query`` in [0, 1], and the tokens it took."""
        model = self.registry.resolve(model_name, "rerank")
        remote = model.remote_reranker()
        if remote is not None:
            scores, tokens = await remote.scores(query, docs)
            return model, scores, tokens
        if model.kind == "embedding" or model.via is not None:
            embedder = model if model.kind == "embedding" or model.via is None else model.via
            rows = await _embedding(embedder, self._limiter).rows([query, *docs], "documents")
            mat, counts = _stacked(rows)
            sims = mat[1:] @ mat[0]
            # Cosine in [-1, 1] mapped to [0, 1] so scores read like a reranker's.
            return model, [float((s + 1.0) / 2.0) for s in sims], sum(counts)
        if not isinstance(model.engine, Reranker):
            raise EngineUnavailableError(f"the model {model.info.id!r} is not loaded")
        await self._limiter.check(model.engine, [f"{query}\n{d}" for d in docs], "documents")
        results = await _batcher(model).submit([(query, d) for d in docs])
        return model, [float(s) for s, _ in results], sum(n for _, n in results)

    async def rerank(self, req: RerankRequest) -> RerankResponse:
        if not req.query:
            raise InvalidRequestError("'query' must not be empty", param="query")
        if not req.documents:
            raise InvalidRequestError("'documents' must not be empty", param="documents")
        if len(req.documents) > self.limits.max_inputs_per_request:
            raise InvalidRequestError(
                f"'documents' has {len(req.documents)} items; at most "
                f"{self.limits.max_inputs_per_request} per request",
                param="documents",
                code="too_many_inputs",
            )
        if req.top_n is not None and req.top_n < 1:
            raise InvalidRequestError("'top_n' must be at least 1", param="top_n")
        docs = [d if isinstance(d, str) else d.text for d in req.documents]
        model, scores, tokens = await self.scores(req.model, req.query, docs)
        order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))
        if req.top_n is not None:
            order = order[: req.top_n]
        results = [
            RerankResult(
                index=i,
                relevance_score=scores[i],
                document=RerankDocument(text=docs[i]) if req.return_documents else None,
            )
            for i in order
        ]
        return RerankResponse(
            id=f"rerank-{uuid.uuid4().hex}",
            model=req.model or model.info.id,
            results=results,
            usage=RerankUsage(total_tokens=tokens),
        )
