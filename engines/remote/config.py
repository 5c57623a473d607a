"""Options of an `engine: remote` model (`options:` in its model entry)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["RemoteOptions", "UpstreamConfig", "safe_url"]


def safe_url(url: str) -> str:
    """``url`` without user, password, query or fragment: what logs and metrics show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class UpstreamConfig(BaseModel):
    """One upstream server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description="Base URL as the OpenAI SDK takes it, e.g. `http://gpu-1:8000/v1`."
    )
    api_key: SecretStr | None = Field(None, description="Bearer key sent to this upstream.")
    weight: float = Field(1.0, gt=0, description="Share of traffic relative to the others.")
    model: str | None = Field(
        None, description="The model's name at this upstream (default: `upstream_model`)."
    )
    extras: bool | None = Field(
        None,
        description=(
            "Whether the upstream takes this project's extras (`state`, `top_k`, ...). "
            "Unset: detected (this project's workers say so in /v1/models)."
        ),
    )
    api: Literal["openai", "tei"] = Field(
        "openai",
        description=(
            "`tei`: Text Embeddings Inference's own shape for rerank (`POST /rerank`) and "
            "health (`GET /health`); embeddings use its OpenAI route either way."
        ),
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an upstream url must be http(s)://host[:port][/path], not {v!r}")
        if parts.username or parts.password:
            raise ValueError("put an upstream's credentials in api_key, not in its url")
        return v.rstrip("/")


class RemoteOptions(BaseModel):
    """Routing, timeouts and health checks of a remote model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upstreams: list[UpstreamConfig] = Field(min_length=1)
    upstream_model: str | None = Field(
        None, description="The model's name at the upstreams (default: this model's id)."
    )
    connect_timeout_s: float = Field(2.0, gt=0, description="Most time to open a connection.")
    first_byte_timeout_s: float = Field(
        120.0,
        gt=0,
        description=(
            "Most time until the upstream starts answering (for a stream: its first event). "
            "A non-streamed generation answers only when it is done: leave it room."
        ),
    )
    total_timeout_s: float = Field(600.0, gt=0, description="Most time for a whole request.")
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description=(
            "Other upstreams tried after a connection failure or a 5xx before the first "
            "byte. A stream is never replayed once its first byte arrived."
        ),
    )
    health_interval_s: float = Field(5.0, gt=0, description="Seconds between health checks.")
    health_timeout_s: float = Field(
        2.0, gt=0, description="Most time for one health check, its whole answer included."
    )
    max_health_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="A health check answer larger than this marks the upstream down, unread.",
    )
    eject_after: int = Field(
        3, ge=1, description="Consecutive failed requests that eject an upstream."
    )
    eject_base_s: float = Field(
        2.0, gt=0, description="First ejection period; it doubles while probes keep failing."
    )
    eject_max_s: float = Field(60.0, gt=0, description="Longest ejection period.")
    affinity: Literal["prefix", "user", "off"] = Field(
        "prefix",
        description=(
            "Chat routing: `prefix` keeps a conversation (X-Session-Id, else `user`, else "
            "its system prompt and first user turn) on one worker so the RWKV prefix-state "
            "cache keeps hitting; `user` only by X-Session-Id or `user`; `off`: least "
            "outstanding requests only."
        ),
    )
    affinity_system_chars: int = Field(
        512,
        ge=1,
        description="A system prompt at least this long is the affinity key by itself.",
    )
    load_factor: float = Field(
        1.5,
        ge=1.0,
        description=(
            "Bounded load: the preferred worker is skipped when one more request would put "
            "it above load_factor x the mean in-flight requests (+2)."
        ),
    )
    max_connections: int = Field(256, ge=1, description="Pooled connections per model.")
    max_response_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        description="A non-streamed answer larger than this is refused (502), while it arrives.",
    )
    max_event_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="A streamed event (SSE) larger than this ends the stream with an error.",
    )
    max_hops: int = Field(
        8,
        ge=1,
        le=64,
        description=(
            "Gateways a request may already have gone through (X-RWKV-RAG-Hops) before "
            "this one forwards it; more, or this gateway among them, is a 508 loop_detected."
        ),
    )
    context_length: int | None = Field(
        None,
        ge=16,
        description=(
            "Chat: the model's context (RAG budgets sources with it). Unset: the upstream's "
            "`max_model_len`/`context_length`/`max_input_tokens` in /v1/models, else 4096."
        ),
    )
    dimensions: int | None = Field(
        None, ge=1, description="Embedding: vector size. Unset: learnt from the upstream."
    )
    max_input_tokens: int = Field(
        512, ge=1, description="Embedding/rerank: what the knowledge base may send per text."
    )

    @field_validator("upstreams", mode="before")
    @classmethod
    def _plain_urls(cls, v: object) -> object:
        if isinstance(v, list):
            return [{"url": x} if isinstance(x, str) else x for x in v]
        return v
