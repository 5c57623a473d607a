"""The engines' own settings: the served models, their batching, and what the registry
needs to load them. The gateway's root settings compose these; nothing here reads the
environment or imports the gateway."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BatchingSettings", "ModelConfig", "ModelKind", "RegistryConfig"]

ModelKind = Literal["embedding", "rerank", "chat"]


class BatchingSettings(BaseModel):
    """Dynamic batching for embedding and rerank engines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(32, ge=1, description="Most items (texts or pairs) per forward.")
    max_wait_ms: float = Field(
        2.0, ge=0, description="How long a batch waits for more items once the first arrived."
    )
    max_queue: int = Field(
        4096, ge=1, description="Items waiting beyond this answer 429 (queue full)."
    )
    worker_idle_s: float = Field(
        0.5,
        ge=0,
        le=3600,
        description=(
            "Seconds a model's batch thread waits for the next batch before it ends (the next "
            "batch starts another). An idle thread that has run torch keeps an OpenMP team "
            "that slows the chat step on small machines; a new one costs a few ms at its "
            "first batch."
        ),
    )


class ModelConfig(BaseModel):
    """One served model: ``{id, kind, engine, path, ...engine options}``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="The model id clients send in `model`.")
    kind: ModelKind = Field(description="embedding | rerank | chat")
    engine: str = Field(
        "auto",
        description=(
            "Backend: `bge` (embedding), `flag-reranker` (rerank), `cosine` (rerank through "
            "an embedding model), `rwkv` (chat), `remote` (any kind, served by upstream "
            "servers listed in `options.upstreams`; see docs/scaling.md), `fake` (tests). "
            "`auto` picks by kind."
        ),
    )
    path: str | None = Field(
        None,
        description=(
            "Local model path. `builtin:all-minilm-l6-v2` is the offline MiniLM shipped as a "
            "package. Never a hub id: nothing is downloaded at run time."
        ),
    )
    owned_by: str = Field("rwkv-rag-gateway", description="`owned_by` in /v1/models.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Engine options (pooling, device, fp16, ...)."
    )
    batching: BatchingSettings | None = Field(
        None, description="Per-model batching; falls back to the global `batching`."
    )

    @model_validator(mode="after")
    def _options(self) -> ModelConfig:
        """The engine's options checked by its own settings class (a misspelt option is a
        startup error naming the field, never ignored)."""
        from engines.options import options_class

        cls = options_class(self.kind, self.engine)
        if cls is not None:
            cls.model_validate({k: v for k, v in self.options.items() if not k.startswith("_")})
        return self


@dataclass(frozen=True)
class RegistryConfig:
    """What the engine registry needs to load and serve models."""

    models: Sequence[ModelConfig]
    aliases: Mapping[str, str] = field(default_factory=dict)
    # Serve /v1/rerank by an embedding model's cosine when no rerank model is configured.
    rerank_fallback: str | None = "auto"
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    max_tokens_per_input: int = 512
    torch_threads: int = 0
    data_dir: Path = Path(".")
    # The knowledge base's PostgreSQL, where `state_store: postgres` keeps RWKV states.
    state_dsn: str | None = None
