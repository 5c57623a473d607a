"""One settings object, read once: env (prefix ``RWKV_RAG_``), a YAML file, CLI flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from chat.config import ChatSettings
from engines.config import BatchingSettings, ModelConfig, RegistryConfig
from gateway.auth import AuthSettings, KeyTable
from gateway.quotas.config import QuotaSettings
from gateway.services.responses.config import ResponsesSettings
from kb.config import KnowledgeSettings
from mcp_server.config import McpSettings
from rag.config import ProfileConfig, RagSettings

__all__ = ["ChatSettings", "LimitSettings", "Settings", "default_data_dir", "load_settings"]


def default_data_dir() -> Path:
    """A per-user data directory (``$XDG_DATA_HOME/rwkv-rag``), so the CLI, MCP over stdio
    and the server find the same knowledge base from any working directory."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "rwkv-rag"


class LimitSettings(BaseModel):
    """Every limit the HTTP layer enforces."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest JSON request body; larger answers 413."
    )
    max_inputs_per_request: int = Field(
        2048, ge=1, description="Most texts in one embeddings request (or documents in a rerank)."
    )
    max_tokens_per_input: int = Field(
        512, ge=1, description="Most tokens of one embedding/rerank input."
    )
    truncate_inputs: bool = Field(
        True,
        description="Over-long inputs are truncated to `max_tokens_per_input` (else 400).",
    )
    max_json_depth: int = Field(
        64, ge=4, le=1000, description="Deepest nesting of a JSON body; deeper answers 400."
    )
    max_search_queries: int = Field(
        16, ge=1, le=256, description="Most queries in one vector store search."
    )
    max_filter_depth: int = Field(8, ge=1, le=64, description="Deepest nesting of a search filter.")
    max_filter_conditions: int = Field(
        64, ge=1, le=4096, description="Most comparisons in one search filter."
    )
    max_batch_files: int = Field(
        2000, ge=1, le=10_000, description="Most files in one file batch or store creation."
    )


def _default_models() -> list[ModelConfig]:
    return [
        ModelConfig(
            id="all-minilm-l6-v2",
            kind="embedding",
            engine="bge",
            path="builtin:all-minilm-l6-v2",
            options={"pooling": "mean"},
        ),
        ModelConfig(
            id="rwkv7-tiny-random",
            kind="chat",
            engine="rwkv",
            path="builtin:rwkv7-tiny-random",
            options={"strategy": "cpu fp32", "states": {"demo": "builtin:rwkv7-tiny-random-state"}},
        ),
    ]


class UiSettings(BaseModel):
    """The knowledge console at /ui (static assets in the package; it uses only the API)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Serve the console at /ui and redirect / to it.")
    cache_max_age_s: int = Field(
        300, ge=0, description="Cache-Control max-age of the console's assets."
    )


class Settings(BaseSettings):
    """Gateway settings. Precedence: CLI flags > environment > YAML file > defaults."""

    model_config = SettingsConfigDict(
        env_prefix="RWKV_RAG_",
        env_nested_delimiter="__",
        extra="forbid",
        yaml_file=None,
    )

    role: Literal["all", "engine"] = Field(
        "all",
        description=(
            "`all`: the whole gateway. `engine`: the model APIs only (chat, completions, "
            "embeddings, rerank, models, health, metrics), no knowledge base, MCP or console: "
            "a worker behind a gateway whose models are `engine: remote`."
        ),
    )
    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to bind.")
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description=(
            "Where the knowledge base and generated models live (default: "
            "$XDG_DATA_HOME/rwkv-rag, i.e. ~/.local/share/rwkv-rag)."
        ),
    )
    log_level: str = Field("INFO", description="Root log level.")
    log_json: bool = Field(True, description="Structured (JSON lines) logs.")
    api_keys: list[str] = Field(
        default_factory=list,
        description=(
            "Bearer keys, each an admin key of `auth.admin_project` (kept for existing "
            "installs; `auth.keys` gives keys a project and a role)."
        ),
    )
    auth: AuthSettings = Field(
        default_factory=lambda: AuthSettings(), description="API keys, projects and roles."
    )
    models: list[ModelConfig] = Field(
        default_factory=_default_models, description="The models this gateway serves."
    )
    aliases: dict[str, str] = Field(
        default_factory=dict, description="Extra names for model ids (`alias: id`)."
    )
    rerank_fallback: str | None = Field(
        "auto",
        description=(
            "When no rerank model is configured, serve /v1/rerank by this embedding model's "
            "cosine similarity (`auto` = the first embedding model, null = off)."
        ),
    )
    batching: BatchingSettings = Field(
        default_factory=lambda: BatchingSettings(),
        description="Default batching for embedding and rerank engines.",
    )
    limits: LimitSettings = Field(
        default_factory=lambda: LimitSettings(), description="Request limits."
    )
    quotas: QuotaSettings = Field(
        default_factory=lambda: QuotaSettings(),
        description="Per-project quotas: requests, generated tokens, open streams, storage.",
    )
    load_in_background: bool = Field(
        True,
        description=(
            "Start answering at once and load models in the background (/health says 503 "
            "until they are ready); false blocks startup until every model is loaded."
        ),
    )
    chat: ChatSettings = Field(
        default_factory=lambda: ChatSettings(), description="Chat/completions defaults."
    )
    strict_startup: bool = Field(
        True,
        description=(
            "With load_in_background=false, a model that fails to load (bad path, a State "
            "of the wrong shape) stops startup instead of leaving the model failed."
        ),
    )
    profiles: list[ProfileConfig] = Field(
        default_factory=list, description="Knowledge profiles, listed in /v1/models."
    )
    rag: RagSettings = Field(
        default_factory=lambda: RagSettings(), description="Retrieval-augmented chat."
    )
    mcp: McpSettings = Field(default_factory=lambda: McpSettings(), description="MCP server.")
    ui: UiSettings = Field(default_factory=lambda: UiSettings(), description="Web console.")
    knowledge: KnowledgeSettings = Field(
        default_factory=lambda: KnowledgeSettings(), description="The knowledge base."
    )
    responses: ResponsesSettings = Field(
        default_factory=lambda: ResponsesSettings(),
        description="Stored responses and conversations: retention and per-project quota.",
    )
    torch_threads: int = Field(
        0, ge=0, description="torch intra-op threads for local engines (0 = library default)."
    )

    @model_validator(mode="after")
    def _check_models(self) -> Settings:
        from rag.catalog import ProfileCatalog

        ids = [m.id for m in self.models]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise ValueError(f"duplicate model ids: {sorted(dupes)}")
        for alias, target in self.aliases.items():
            if target not in ids:
                raise ValueError(f"alias {alias!r} points at unknown model {target!r}")
            if alias in ids:
                raise ValueError(f"alias {alias!r} shadows a model id")
        # Profiles are resolved by the catalog; building one here reports a bad profile
        # as a settings error at load time.
        ProfileCatalog.build(self.profiles, self.model_names("chat"))
        # A key listed twice (or in both lists) would have two meanings: refuse at load.
        KeyTable(self.auth, self.api_keys)
        return self

    def model_names(self, kind: str) -> dict[str, str]:
        """Every name (id or alias) of a configured model of ``kind`` -> its id."""
        names = {m.id: m.id for m in self.models if m.kind == kind}
        names.update({a: t for a, t in self.aliases.items() if t in names})
        return names

    def registry_config(self) -> RegistryConfig:
        """What the engine registry needs from these settings."""
        return RegistryConfig(
            models=self.models,
            aliases=self.aliases,
            rerank_fallback=self.rerank_fallback,
            batching=self.batching,
            max_tokens_per_input=self.limits.max_tokens_per_input,
            torch_threads=self.torch_threads,
            data_dir=self.data_dir,
            state_dsn=(
                self.knowledge.postgres.dsn if self.knowledge.backend == "postgres" else None
            ),
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls),
            file_secret_settings,
        )


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML file, the environment and explicit overrides."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if config is None:
        return Settings(**overrides)
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    file_cls: type[Settings] = type(
        "FileSettings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "yaml_file": path})},
    )
    return file_cls(**overrides)
