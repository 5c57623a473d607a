"""The remote engines the registry builds for `engine: remote`: chat, embedding, rerank.

They hold no weights. The chat service forwards whole requests to them (templates, tools
and sampling happen at the upstream); the knowledge base embeds and reranks through them
as through local engines."""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import msgspec
import numpy as np

from core.errors import InvalidRequestError, UpstreamStatusError
from engines.base import ModelInfo
from engines.remote.client import RemoteClient
from engines.remote.config import RemoteOptions
from engines.remote.pool import Upstream, UpstreamObserver, UpstreamPool

__all__ = ["ApproxTokenizer", "RemoteChat", "RemoteEmbedder", "RemoteModel", "RemoteReranker"]

_encoder = msgspec.json.Encoder()
# Fields of this project's API that other servers do not take.
EXTRAS = ("state", "top_k", "knowledge")


class ApproxTokenizer:
    """Token counts without the remote model's tokenizer: one token per 3 UTF-8 bytes,
    rounded up. Over-counts English (about 4 bytes a token) and matches CJK (a character,
    3 bytes, a token), so budgets built on it err on the safe side."""

    bytes_per_token = 3

    def count(self, texts: list[str]) -> list[int]:
        return [max(1, math.ceil(len(t.encode()) / self.bytes_per_token)) for t in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        data = text.encode()
        limit = max_tokens * self.bytes_per_token
        if len(data) <= limit:
            return text
        return data[:limit].decode("utf-8", "ignore")


class RemoteModel:
    """What the three kinds share: options, the pool, the client, health."""

    remote = True
    kind = ""

    def __init__(self, info: ModelInfo, options: dict[str, Any]) -> None:
        opts = {k: v for k, v in options.items() if not k.startswith("_")}
        self.options = RemoteOptions.model_validate(opts)
        self.pool = UpstreamPool(info.id, self.options)
        self.client = RemoteClient(self.pool, self.options)
        self.client.on_check = self._learn
        self.tokenizer = ApproxTokenizer()
        self.max_input_tokens = self.options.max_input_tokens
        self.info = replace(info, engine="remote", max_input_tokens=self._max_input())

    def _max_input(self) -> int | None:
        return self.options.max_input_tokens

    def _learn(self, up: Upstream, entry: dict[str, Any]) -> None:
        """What a health check's /v1/models entry tells (sizes, States)."""

    def set_observer(self, observer: UpstreamObserver | None) -> None:
        self.pool.observer = observer

    async def start(self) -> None:
        await self.client.start()

    async def stop(self) -> None:
        await self.client.stop()

    def close(self) -> None:
        """Nothing to release beyond what ``stop`` closed."""

    @property
    def healthy(self) -> bool:
        return self.pool.any_healthy

    def upstreams(self) -> list[dict[str, Any]]:
        return self.pool.describe()

    def body_for(self, body: dict[str, Any], up: Upstream) -> bytes:
        """``body`` as ``up`` takes it: its own model name, no extras it does not take."""
        out = {**body, "model": up.model}
        if not up.extras:
            for name in EXTRAS:
                out.pop(name, None)
        return _encoder.encode(out)


class RemoteEmbedder(RemoteModel):
    kind = "embedding"

    def __init__(self, info: ModelInfo, options: dict[str, Any]) -> None:
        super().__init__(info, options)
        self.dimensions = self.options.dimensions or 0
        self.info = replace(self.info, dimensions=self.dimensions or None)

    def _learn(self, up: Upstream, entry: dict[str, Any]) -> None:
        dims = entry.get("dimensions")
        if not self.dimensions and isinstance(dims, int) and dims > 0:
            self._set_dimensions(dims)

    def _set_dimensions(self, dims: int) -> None:
        self.dimensions = dims
        self.info = replace(self.info, dimensions=dims)

    async def start(self) -> None:
        await super().start()
        if not self.dimensions and self.pool.any_healthy:
            # The upstream does not say: one tiny embedding tells.
            vectors, _ = await self.encode_async(["dimensions"])
            self._set_dimensions(int(vectors.shape[1]))

    async def forward(self, body: dict[str, Any]) -> dict[str, Any]:
        """A /v1/embeddings request passed through; the answer as the upstream gave it."""
        _, answer = await self.client.post_json("embeddings", lambda up: self.body_for(body, up))
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            raise UpstreamStatusError(502, {"message": "the upstream's embeddings are malformed"})
        return answer

    async def encode_async(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Unit vectors of ``texts`` and each one's token count (the upstream reports a
        total; it is shared out in proportion to the texts' lengths)."""
        answer = await self.forward({"input": texts, "encoding_format": "base64"})
        rows = sorted(answer["data"], key=lambda d: int(d.get("index", 0)))
        if len(rows) != len(texts):
            raise UpstreamStatusError(
                502, {"message": f"the upstream sent {len(rows)} embeddings for {len(texts)}"}
            )
        vectors = np.stack([_vector(r.get("embedding")) for r in rows])
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        usage = answer.get("usage") or {}
        total = usage.get("prompt_tokens") or usage.get("total_tokens")
        return vectors, _share(total, self.tokenizer.count(texts))


def _vector(raw: Any) -> np.ndarray:
    if isinstance(raw, str):
        return np.frombuffer(base64.b64decode(raw), dtype="<f4").astype(np.float32)
    if isinstance(raw, list):
        return np.asarray(raw, dtype=np.float32)
    raise UpstreamStatusError(502, {"message": "the upstream sent an embedding of no known form"})


def _share(total: Any, estimates: list[int]) -> list[int]:
    if not isinstance(total, int) or total <= 0:
        return estimates
    whole = sum(estimates) or 1
    counts = [max(1, round(total * e / whole)) for e in estimates]
    counts[-1] += total - sum(counts)
    return counts if counts[-1] > 0 else estimates


class RemoteReranker(RemoteModel):
    kind = "rerank"

    def __init__(self, info: ModelInfo, options: dict[str, Any]) -> None:
        super().__init__(info, options)
        if len({u.config.api for u in self.pool.upstreams}) > 1:
            raise ValueError(
                f"rerank model {info.id!r}: its upstreams must all speak one API "
                "(all `api: tei` or none)"
            )

    async def scores(self, query: str, docs: list[str]) -> tuple[list[float], int]:
        """Relevance in [0, 1] of each doc, and the tokens the upstream counted."""
        if self.pool.upstreams[0].config.api == "tei":
            return await self._tei(query, docs)
        body = {"query": query, "documents": docs, "return_documents": False}
        _, answer = await self.client.post_json("rerank", lambda up: self.body_for(body, up))
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            raise UpstreamStatusError(502, {"message": "the upstream's rerank answer is malformed"})
        scores = _ordered(
            [(int(r["index"]), float(r["relevance_score"])) for r in results], len(docs)
        )
        usage = answer.get("usage") or {}
        tokens = usage.get("total_tokens")
        if not isinstance(tokens, int):
            tokens = sum(self.tokenizer.count([f"{query}\n{d}" for d in docs]))
        return scores, tokens

    async def _tei(self, query: str, docs: list[str]) -> tuple[list[float], int]:
        body = _encoder.encode({"query": query, "texts": docs, "raw_scores": False})
        _, answer = await self.client.post_json("rerank", lambda up: body, root=True)
        if not isinstance(answer, list):
            raise UpstreamStatusError(502, {"message": "the upstream's rerank answer is malformed"})
        scores = _ordered([(int(r["index"]), float(r["score"])) for r in answer], len(docs))
        return scores, sum(self.tokenizer.count([f"{query}\n{d}" for d in docs]))


def _ordered(pairs: list[tuple[int, float]], n: int) -> list[float]:
    """Scores back in document order; a document the upstream left out is an error."""
    out: list[float | None] = [None] * n
    for i, s in pairs:
        if 0 <= i < n:
            out[i] = s
    if any(s is None for s in out):
        raise UpstreamStatusError(502, {"message": "the upstream left documents unscored"})
    return [float(s) for s in out if s is not None]


class RemoteChat(RemoteModel):
    kind = "chat"

    def __init__(self, info: ModelInfo, options: dict[str, Any]) -> None:
        super().__init__(info, options)
        self.context_length = self.options.context_length or 4096
        self.state_names: list[str] = []

    def _max_input(self) -> int | None:
        return self.options.context_length

    def _learn(self, up: Upstream, entry: dict[str, Any]) -> None:
        if self.options.context_length is None:
            for name in ("max_model_len", "context_length", "max_input_tokens"):
                found = entry.get(name)
                if isinstance(found, int) and found > 0:
                    self.context_length = found
                    self.info = replace(self.info, max_input_tokens=found)
                    break
        details = entry.get("details")
        if isinstance(details, dict) and isinstance(details.get("states"), list):
            self.state_names = sorted({*self.state_names, *map(str, details["states"])})

    def takes_extras(self) -> bool:
        return any(u.extras for u in self.pool.upstreams)

    async def post(
        self, path: str, body: dict[str, Any], *, key: str | None, extras: bool
    ) -> dict[str, Any]:
        if extras and not self.takes_extras():
            raise _no_extras(self.info.id)
        _, answer = await self.client.post_json(
            path, lambda up: self.body_for(body, up), key=key, extras=extras
        )
        if not isinstance(answer, dict):
            raise UpstreamStatusError(502, {"message": "the upstream's answer is malformed"})
        return answer

    async def stream(
        self, path: str, body: dict[str, Any], *, key: str | None, extras: bool
    ) -> tuple[str, AsyncIterator[bytes]]:
        """The upstream's SSE bytes once its first event arrived (so a failure before
        that is retried elsewhere or raised as an HTTP error), and the model name the
        upstream puts in its events."""
        if extras and not self.takes_extras():
            raise _no_extras(self.info.id)
        opened = await self.client.open(
            path, lambda up: self.body_for(body, up), key=key, extras=extras, stream=True
        )
        return opened.upstream.model, self.client.chunks(opened)


def _no_extras(model: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"the upstreams of {model!r} do not take States ('state'); only this project's "
        "engine workers do",
        param="state",
        code="unsupported_parameter",
    )
