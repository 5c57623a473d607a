"""Every engine's options (``models[].options``), validated once by a settings class of
its own: a misspelt or mistyped option stops startup with the field named, and engines
read typed fields, never ``.get()`` on a dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BGEOptions",
    "CosineOptions",
    "EngineOptions",
    "FakeChatOptions",
    "FakeEmbeddingOptions",
    "FakeOptions",
    "HFOptions",
    "RerankerOptions",
    "options_class",
]


class EngineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, options: Mapping[str, Any] | EngineOptions | None) -> Self:
        """``options`` validated (a dict from the settings), or as given when typed."""
        if isinstance(options, cls):
            return options
        if isinstance(options, EngineOptions):
            return cls.model_validate(options.model_dump())
        # Keys with a leading underscore are the registry's own (``_base_dir``).
        return cls.model_validate({k: v for k, v in (options or {}).items() if k[:1] != "_"})


class HFOptions(EngineOptions):
    """Hugging Face models run through FlagEmbedding."""

    device: str | None = Field(None, description="cpu | cuda | cuda:N (default: by hardware).")
    fp16: bool | None = Field(None, description="Half precision (default: on CUDA only).")
    max_length: int | None = Field(
        None, ge=1, description="Most tokens per input (default: the model's positions)."
    )


class BGEOptions(HFOptions):
    m3: bool | None = Field(
        None, description="A BGE-M3 model (default: when colbert_linear.pt is there)."
    )
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="Pooling of token states (BGE: cls; MiniLM: mean)."
    )


class RerankerOptions(HFOptions):
    normalize: bool = Field(True, description="Scores through a sigmoid, into [0, 1].")


class CosineOptions(EngineOptions):
    embedding_model: str = Field(description="The embedding model whose vectors score pairs.")


class FakeOptions(EngineOptions):
    """The deterministic test engines."""

    max_length: int = Field(512, ge=1, description="Most tokens (words) per input.")
    delay_ms: float = Field(0.0, ge=0, description="Time each batch takes.")
    fail_marker: str | None = Field(None, description="An input holding it fails its batch.")


class FakeEmbeddingOptions(FakeOptions):
    dimensions: int = Field(64, ge=1, description="Vector size.")


class FakeChatOptions(EngineOptions):
    script: list[str] = Field(
        default_factory=lambda: ["Hello from the fake model."],
        description="The answers, one per request, cycled.",
    )
    context_length: int = Field(65536, ge=16, description="Most tokens of prompt and answer.")
    chat_template: dict[str, Any] | None = Field(None, description="The chat template.")


def options_class(kind: str, engine: str) -> type[BaseModel] | None:
    """The settings class of an engine's options (None: an engine name the registry will
    refuse anyway). Imported lazily: no engine module is loaded to check its options."""
    if engine == "rwkv" or (kind == "chat" and engine == "auto"):
        from engines.rwkv.options import RWKVOptions

        return RWKVOptions
    if engine == "remote":
        from engines.remote.config import RemoteOptions

        return RemoteOptions
    table: dict[tuple[str, str], type[BaseModel]] = {
        ("embedding", "bge"): BGEOptions,
        ("embedding", "auto"): BGEOptions,
        ("embedding", "fake"): FakeEmbeddingOptions,
        ("rerank", "flag-reranker"): RerankerOptions,
        ("rerank", "auto"): RerankerOptions,
        ("rerank", "fake"): FakeOptions,
        ("rerank", "cosine"): CosineOptions,
        ("chat", "fake"): FakeChatOptions,
    }
    return table.get((kind, engine))
