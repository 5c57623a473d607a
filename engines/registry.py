"""EngineRegistry: model ids and aliases -> loaded engines with their batchers.

Backends are imported lazily by engine name, so a registry of fake engines never imports
torch, transformers or FlagEmbedding.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from core.errors import APIError, EngineUnavailableError, InvalidRequestError, ModelNotFoundError
from core.threads import in_new_thread
from engines.base import Embedder, ModelInfo, Reranker
from engines.batching import BatchObserver, DynamicBatcher
from engines.config import ModelConfig, RegistryConfig
from engines.generation import ChatEngine
from engines.options import CosineOptions
from engines.paths import resolve_model_path
from engines.remote.engine import RemoteEmbedder, RemoteModel, RemoteReranker
from engines.remote.pool import UpstreamObserver, UpstreamPool

__all__ = ["EngineRegistry", "ServedModel"]

log = logging.getLogger(__name__)

# engine name -> "module:Class"; the class takes (ModelInfo, Path | None, options).
_BACKENDS: dict[tuple[str, str], str] = {
    ("embedding", "bge"): "engines.bge:BGEEmbedder",
    ("embedding", "fake"): "engines.fake:FakeEmbedder",
    ("rerank", "flag-reranker"): "engines.reranker:FlagCrossEncoder",
    ("rerank", "fake"): "engines.fake:FakeReranker",
    ("chat", "rwkv"): "engines.rwkv.engine:RWKVChatEngine",
    ("chat", "fake"): "engines.fake:FakeChatEngine",
    ("embedding", "remote"): "engines.remote.engine:RemoteEmbedder",
    ("rerank", "remote"): "engines.remote.engine:RemoteReranker",
    ("chat", "remote"): "engines.remote.engine:RemoteChat",
}
_AUTO = {"embedding": "bge", "rerank": "flag-reranker", "chat": "rwkv"}
_PATHLESS = {"fake", "cosine", "remote"}


# What a served model runs: a local engine of its kind, or remote upstreams.
Engine = ChatEngine | Embedder | Reranker | RemoteModel


@runtime_checkable
class _Health(Protocol):
    healthy: bool


@dataclass
class ServedModel:
    config: ModelConfig
    info: ModelInfo
    status: str = "pending"  # pending | loading | ready | failed
    engine: Engine | None = None
    batcher: DynamicBatcher[Any, Any] | None = None
    error: str | None = None
    # For `cosine` rerank: the embedding model whose vectors score the pairs.
    via: ServedModel | None = None
    capabilities: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def pool(self) -> UpstreamPool | None:
        """The upstreams serving the model (`engine: remote`); None for a local engine."""
        return self.engine.pool if isinstance(self.engine, RemoteModel) else None

    def remote_embedder(self) -> RemoteEmbedder | None:
        return self.engine if isinstance(self.engine, RemoteEmbedder) else None

    def remote_reranker(self) -> RemoteReranker | None:
        return self.engine if isinstance(self.engine, RemoteReranker) else None

    def local_embedder(self) -> Embedder:
        """The in-process embedding engine (a `cosine` reranker's is its model's)."""
        engine = self.engine if self.engine is not None or self.via is None else self.via.engine
        if not isinstance(engine, Embedder):
            raise EngineUnavailableError(f"the model {self.info.id!r} has no embedding engine")
        return engine

    @property
    def healthy(self) -> bool:
        if self.status != "ready":
            return False
        if self.batcher is not None and not self.batcher.healthy:
            return False
        if isinstance(self.engine, _Health) and not self.engine.healthy:
            return False
        return self.via.healthy if self.via is not None else True


class EngineRegistry:
    def __init__(self, settings: RegistryConfig, observer: BatchObserver | None = None) -> None:
        self.settings = settings
        self.observer = observer
        self.models: dict[str, ServedModel] = {}
        self.aliases = dict(settings.aliases)
        self.default_reranker: str | None = None
        self._loaded = False
        created = int(time.time())
        for cfg in settings.models:
            engine = _AUTO.get(cfg.kind, cfg.engine) if cfg.engine == "auto" else cfg.engine
            info = ModelInfo(
                id=cfg.id, kind=cfg.kind, engine=engine, owned_by=cfg.owned_by, created=created
            )
            self.models[cfg.id] = ServedModel(config=cfg, info=info, capabilities=[cfg.kind])
        self._wire_rerank_fallback()

    def _wire_rerank_fallback(self) -> None:
        rerankers = [m for m in self.models.values() if m.kind == "rerank"]
        for m in rerankers:
            if m.info.engine == "cosine":
                name = CosineOptions.of(m.config.options).embedding_model
                m.via = self._embedding_target(name, f"rerank model {m.info.id!r}")
        if rerankers:
            self.default_reranker = rerankers[0].info.id
            return
        fallback = self.settings.rerank_fallback
        if fallback is None:
            return
        embedders = [m for m in self.models.values() if m.kind == "embedding"]
        if not embedders:
            return
        target = embedders[0] if fallback == "auto" else self._embedding_target(fallback, "")
        target.capabilities.append("rerank")
        self.default_reranker = target.info.id

    def _embedding_target(self, name: str | None, what: str) -> ServedModel:
        model = self.models.get(self.aliases.get(name or "", name or ""))
        if model is None or model.kind != "embedding":
            raise ValueError(f"{what}: {name!r} is not a configured embedding model")
        return model

    # -- lookup --------------------------------------------------------------------------

    def resolve(self, name: str | None, kind: str, *, param: str = "model") -> ServedModel:
        """The model named ``name`` (id or alias) able to serve ``kind``."""
        if not name:
            if kind == "rerank" and self.default_reranker:
                name = self.default_reranker
            else:
                raise InvalidRequestError("you must provide a model parameter", param=param)
        model = self.models.get(self.aliases.get(name, name))
        if model is None:
            raise ModelNotFoundError(f"the model {name!r} does not exist", param=param)
        if kind not in model.capabilities:
            raise InvalidRequestError(
                f"the model {name!r} is a {model.kind} model and cannot serve {kind}",
                param=param,
                code="model_not_supported",
            )
        if model.status != "ready":
            detail = f": {model.error}" if model.error else ""
            raise EngineUnavailableError(f"the model {name!r} is {model.status}{detail}")
        return model

    @property
    def loaded(self) -> bool:
        """The load pass has finished (some models may have failed)."""
        return self._loaded

    @property
    def ready(self) -> bool:
        return self._loaded and all(m.status == "ready" for m in self.models.values())

    @property
    def healthy(self) -> bool:
        return self.ready and all(m.healthy for m in self.models.values())

    # -- lifecycle -----------------------------------------------------------------------

    async def load(self) -> None:
        """Load every model (in a worker thread each) and start their batchers."""
        if self.settings.torch_threads:
            await asyncio.to_thread(_set_torch_threads, self.settings.torch_threads)
        for model in self.models.values():
            if model.engine is not None or (model.status == "ready" and model.via is not None):
                await self._start(model)
                model.status = "ready"
                continue
            model.status = "loading"
            started = time.perf_counter()
            try:
                # A thread that ends with the load: no OpenMP team of the loading thread
                # outlives it to slow the engines' own threads (core.threads).
                await in_new_thread(self._build, model, name=f"load-{model.info.id}")
            except Exception as exc:
                model.status = "failed"
                model.error = f"{type(exc).__name__}: {exc}"
                log.exception(
                    "model %s failed to load", model.info.id, extra={"model": model.info.id}
                )
                continue
            await self._start(model)
            model.status = "ready"
            log.info(
                "model %s loaded (%s)",
                model.info.id,
                model.info.engine,
                extra={
                    "model": model.info.id,
                    "engine": model.info.engine,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
        self._loaded = True

    def _build(self, model: ServedModel) -> None:
        cfg = model.config
        engine_name = model.info.engine
        if cfg.kind == "rerank" and engine_name == "cosine":
            return
        target = _BACKENDS.get((cfg.kind, engine_name))
        if target is None:
            raise ValueError(f"no {cfg.kind} backend named {engine_name!r}")
        module_name, cls_name = target.split(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        path: Path | None = None
        if engine_name not in _PATHLESS or cfg.path:
            path = resolve_model_path(cfg.path, self.settings.data_dir)
        options = dict(cfg.options)
        options.setdefault("_base_dir", str(self.settings.data_dir))
        if self.settings.state_dsn and engine_name == "rwkv":
            options.setdefault("_state_dsn", self.settings.state_dsn)
        if path is None:
            model.engine = cls(model.info, options)
        else:
            model.engine = cls(model.info, path, options)
        model.info = model.engine.info

    async def _start(self, model: ServedModel) -> None:
        if isinstance(model.engine, RemoteModel):
            await self._start_remote(model, model.engine)
        elif model.batcher is None:
            self._start_batcher(model)

    async def _start_remote(self, model: ServedModel, engine: RemoteModel) -> None:
        """Health-check the upstreams once, then keep checking in the background; the
        model is ready even when none answers yet (it reports them unhealthy)."""
        observer = self.observer
        engine.set_observer(observer if isinstance(observer, UpstreamObserver) else None)
        try:
            await engine.start()
        except APIError as exc:  # an upstream that fails its first answers is only down
            log.warning(
                "model %s: upstreams not usable yet: %s",
                model.info.id,
                exc,
                extra={"model": model.info.id},
            )
        model.info = engine.info

    def _start_batcher(self, model: ServedModel) -> None:
        """Embedding and rerank engines get a dynamic batcher (chat engines schedule
        their own batches)."""
        engine = model.engine
        batching = model.config.batching or self.settings.batching
        fn: Callable[[list[Any]], Any]
        # Each item comes back as (result, its token count): usage is counted by the same
        # tokenization the forward used, at no extra cost.
        if isinstance(engine, Embedder):
            embedder = engine
            limit = min(self.settings.max_tokens_per_input, int(embedder.max_input_tokens))

            def fn(texts: list[str]) -> list[tuple[Any, int, Any]]:
                out = embedder.encode(texts, limit)
                sparse: list[Any] = list(out.sparse) if out.sparse else [None] * len(texts)
                return list(zip(out.vectors, out.token_counts, sparse, strict=True))

        elif isinstance(engine, Reranker):
            reranker = engine
            limit = min(self.settings.max_tokens_per_input, int(reranker.max_input_tokens))

            def fn(pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
                out = reranker.score_pairs(pairs, limit)
                return list(zip(out.scores, out.token_counts, strict=True))

        else:
            return

        model.batcher = DynamicBatcher(
            model.info.id,
            fn,
            max_batch_size=batching.max_batch_size,
            max_wait_ms=batching.max_wait_ms,
            max_queue=batching.max_queue,
            observer=self.observer,
            worker_idle_s=batching.worker_idle_s,
        )
        model.batcher.start()

    async def stop(self) -> None:
        """Stop the batchers (bound to the running event loop); engines stay loaded."""
        for model in self.models.values():
            if model.batcher is not None:
                await model.batcher.stop()
                model.batcher = None
            if isinstance(model.engine, RemoteModel):
                await model.engine.stop()

    async def close(self) -> None:
        """Stop batchers and release every engine."""
        await self.stop()
        for model in self.models.values():
            if model.engine is not None and hasattr(model.engine, "close"):
                await asyncio.to_thread(model.engine.close)
            model.engine = None
            model.status = "pending"
        self._loaded = False


def _set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
