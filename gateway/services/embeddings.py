"""Embeddings and rerank services: wire request in, wire response out, engines in between."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import numpy as np

from core.errors import EngineUnavailableError, InvalidRequestError
from engines.batching import DynamicBatcher
from engines.registry import EngineRegistry, ServedModel
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


class _TokenLimiter:
    """Refuses over-long inputs when ``truncate_inputs`` is off.

    When it is on (the default) nothing is counted here: the engine truncates while it
    tokenizes for the forward and reports each input's token count with its result.
    """

    def __init__(self, limits: LimitSettings) -> None:
        self.limits = limits

    async def check(self, model: ServedModel, texts: list[str], param: str) -> None:
        if self.limits.truncate_inputs or model.remote:  # an upstream enforces its own
            return
        engine = model.engine if model.engine is not None else model.via.engine  # type: ignore[union-attr]
        limit = min(self.limits.max_tokens_per_input, int(engine.max_input_tokens))
        counts: list[int] = await asyncio.to_thread(engine.tokenizer.count, texts)
        for i, n in enumerate(counts):
            if n > limit:
                raise InvalidRequestError(
                    f"{param}[{i}] has {n} tokens; the limit is {limit}",
                    param=param,
                    code="context_length_exceeded",
                )


async def _embed_rows(
    model: ServedModel, texts: list[str], limiter: _TokenLimiter, param: str
) -> list[tuple[np.ndarray, int, dict[int, float] | None]]:
    """(vector, token count, lexical weights or None) per text, through the batcher."""
    if model.remote:
        vectors, counts = await model.engine.encode_async(texts)
        return [(v, n, None) for v, n in zip(vectors, counts, strict=True)]
    await limiter.check(model, texts, param)
    rows: list[tuple[np.ndarray, int, dict[int, float] | None]] = await _batcher(model).submit(
        texts
    )
    return rows


async def _embed(
    model: ServedModel, texts: list[str], limiter: _TokenLimiter, param: str
) -> tuple[np.ndarray, list[int]]:
    """Vectors and token counts of ``texts`` through the embedding model's batcher."""
    rows = await _embed_rows(model, texts, limiter, param)
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
        return await _embed(model, texts, self._limiter, "input")

    async def embed_texts_sparse(
        self, model_name: str, texts: list[str]
    ) -> tuple[np.ndarray, list[int], list[dict[int, float]] | None]:
        """As ``embed_texts``, with BGE-M3's lexical weights (None for other models)."""
        model = self.registry.resolve(model_name, "embedding")
        rows = await _embed_rows(model, texts, self._limiter, "input")
        vectors = np.stack([r[0] for r in rows]).astype(np.float32, copy=False)
        sparse = [r[2] for r in rows]
        lex = None if any(s is None for s in sparse) else [s for s in sparse if s is not None]
        return vectors, [r[1] for r in rows], lex

    async def create(self, req: EmbeddingRequest) -> EmbeddingResponse | dict[str, Any]:
        model = self.registry.resolve(req.model, "embedding")
        texts = _texts_from_input(req.input, self.limits.max_inputs_per_request)
        dims = model.info.dimensions or int(getattr(model.engine, "dimensions", 0) or 0)
        if model.remote:
            return await _forward_embeddings(model, req, texts, dims)
        if req.dimensions is not None and not 1 <= req.dimensions <= dims:
            raise InvalidRequestError(
                f"'dimensions' must be between 1 and {dims} for model {req.model!r}",
                param="dimensions",
            )
        vectors, counts = await _embed(model, texts, self._limiter, "input")
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


async def _forward_embeddings(
    model: ServedModel, req: EmbeddingRequest, texts: list[str], dims: int
) -> dict[str, Any]:
    """/v1/embeddings passed through to the model's upstreams, in the encoding asked. An
    upstream that ignores ``dimensions`` gets its vectors cut and renormalised here."""
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
    answer: dict[str, Any] = await model.engine.forward(body)
    answer["model"] = req.model
    if req.dimensions is not None:
        for row in answer["data"]:
            row["embedding"] = _cut(row.get("embedding"), req.dimensions, req.encoding_format)
    return answer


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
        if model.remote and model.kind == "rerank":
            scores, tokens = await model.engine.scores(query, docs)
            return model, scores, tokens
        if model.kind == "embedding" or model.via is not None:
            embedder = model if model.kind == "embedding" or model.via is None else model.via
            mat, counts = await _embed(embedder, [query, *docs], self._limiter, "documents")
            sims = mat[1:] @ mat[0]
            # Cosine in [-1, 1] mapped to [0, 1] so scores read like a reranker's.
            return model, [float((s + 1.0) / 2.0) for s in sims], sum(counts)
        await self._limiter.check(model, [f"{query}\n{d}" for d in docs], "documents")
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
