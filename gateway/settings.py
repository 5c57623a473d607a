"""One settings object, read once: env (prefix ``RWKV_RAG_``), a YAML file, CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = [
    "BatchingSettings",
    "ChatSettings",
    "KnowledgeSettings",
    "LimitSettings",
    "McpSettings",
    "ModelConfig",
    "ProfileConfig",
    "RagSettings",
    "Settings",
    "UrlFetchSettings",
    "load_settings",
]

ModelKind = Literal["embedding", "rerank", "chat"]


class BatchingSettings(BaseModel):
    """Dynamic batching for embedding and rerank engines."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(32, ge=1, description="Most items (texts or pairs) per forward.")
    max_wait_ms: float = Field(
        2.0, ge=0, description="How long a batch waits for more items once the first arrived."
    )
    max_queue: int = Field(
        4096, ge=1, description="Items waiting beyond this answer 429 (queue full)."
    )


class ModelConfig(BaseModel):
    """One served model: ``{id, kind, engine, path, ...engine options}``."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="The model id clients send in `model`.")
    kind: ModelKind = Field(description="embedding | rerank | chat")
    engine: str = Field(
        "auto",
        description=(
            "Backend: `bge` (embedding), `flag-reranker` (rerank), `cosine` (rerank through "
            "an embedding model), `rwkv` (chat), `fake` (tests), `remote`. `auto` picks by kind."
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


class ChatSettings(BaseModel):
    """Defaults and limits for /v1/chat/completions and /v1/completions."""

    model_config = ConfigDict(extra="forbid")

    default_max_tokens: int = Field(
        512, ge=1, description="max_tokens when a chat request names none."
    )
    max_tokens_limit: int = Field(
        4096, ge=1, description="Upper bound on max_tokens for any request."
    )
    default_temperature: float = Field(1.0, ge=0, le=2, description="temperature default.")
    default_top_p: float = Field(1.0, gt=0, le=1, description="top_p default.")
    penalty_decay: float = Field(
        0.996,
        gt=0,
        le=1,
        description="RWKV-style penalty decay: past-token counts shrink by this each step.",
    )
    max_n: int = Field(8, ge=1, description="Most choices (n, or prompts x n) per request.")
    max_stop_sequences: int = Field(4, ge=1, description="Most stop strings per request.")


class UrlFetchSettings(BaseModel):
    """How the knowledge base fetches web pages (`/v1/vector_stores/{id}/urls`)."""

    model_config = ConfigDict(extra="forbid")

    allow_private_networks: bool = Field(
        False,
        description=(
            "Fetch loopback, private, link-local and other non-public addresses. Off by "
            "default: the check runs after DNS resolution and on every redirect."
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names allowed even when they resolve to a private address.",
    )
    timeout_s: float = Field(20.0, gt=0, description="Connect/read timeout of one fetch.")
    max_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest body fetched from a URL."
    )
    max_redirects: int = Field(5, ge=0, le=20, description="Most redirects followed.")
    user_agent: str = Field("rwkv-rag-gateway/0.1", description="User-Agent of fetches.")


class KnowledgeSettings(BaseModel):
    """The knowledge base: uploads, loaders, ingestion, indexes, retrieval."""

    model_config = ConfigDict(extra="forbid")

    embedding_model: str | None = Field(
        None,
        description=(
            "Embedding model of new vector stores (null = the first embedding model served)."
        ),
    )
    rerank_model: str | None = Field(
        "auto",
        description=(
            "Rerank model for vector store search (`auto` = the first rerank model served, "
            "null = no rerank step). A request's ranking_options.ranker `none` skips it."
        ),
    )
    rerank_candidates: int = Field(
        20, ge=1, le=200, description="How many fused hits the reranker re-scores."
    )
    max_upload_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        description="Largest file accepted by POST /v1/files (streamed to disk; 413 past it).",
    )
    allowed_extensions: list[str] = Field(
        default_factory=lambda: [
            ".txt",
            ".md",
            ".markdown",
            ".pdf",
            ".xlsx",
            ".html",
            ".htm",
            ".csv",
            ".json",
        ],
        description="File types vector stores ingest (by extension).",
    )
    max_pdf_pages: int = Field(
        2000, ge=1, description="PDF pages read per file; longer PDFs fail with a clear error."
    )
    max_sheet_rows: int = Field(
        200_000, ge=1, description="Spreadsheet rows read per file (all sheets together)."
    )
    max_extracted_chars: int = Field(
        50_000_000, ge=1000, description="Text extracted per file before it fails as too big."
    )
    max_xlsx_uncompressed_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1024,
        description="Zip-bomb guard: an xlsx whose members inflate past this is refused.",
    )
    max_xlsx_compression_ratio: float = Field(
        200.0, ge=1, description="Zip-bomb guard: refuse an xlsx member inflating past this."
    )
    embed_batch_size: int = Field(
        64, ge=1, description="Chunks embedded per call during ingestion."
    )
    ingest_workers: int = Field(1, ge=1, le=16, description="Files ingested concurrently.")
    max_job_attempts: int = Field(
        3, ge=1, description="Interrupted ingestions resumed at most this many times."
    )
    ann_threshold: int = Field(
        50_000,
        ge=1,
        description="Past this many chunks a store's index switches from exact to ANN.",
    )
    ann_index: Literal["hnsw", "ivf"] = Field(
        "hnsw", description="The approximate index past ann_threshold: HNSW graph or IVF."
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW links per node.")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW build-time beam width.")
    hnsw_ef_search: int = Field(
        256, ge=8, description="HNSW search beam width (higher = better recall, slower)."
    )
    ann_nprobe: int = Field(32, ge=1, description="IVF lists searched per query.")
    search_candidates: int = Field(
        50, ge=1, le=1000, description="Hits each of dense and keyword search contribute."
    )
    fusion: Literal["rrf", "relative", "dbsf"] = Field(
        "relative",
        description=(
            "How dense and BM25 lists are fused: `relative` (weighted min-max normalised "
            "scores), `dbsf` (scores normalised by mean +- 3 sigma) or `rrf` (reciprocal rank)."
        ),
    )
    rrf_k: float = Field(60.0, gt=0, description="Reciprocal rank fusion constant.")
    dense_weight: float = Field(1.0, ge=0, description="Weight of the dense list in fusion.")
    keyword_weight: float = Field(1.0, ge=0, description="Weight of the BM25 list in fusion.")
    url: UrlFetchSettings = Field(
        default_factory=lambda: UrlFetchSettings(), description="Web page ingestion."
    )


DEFAULT_RAG_PROMPT = (
    "Answer the question using only the numbered sources below. Cite the sources you use "
    "with their numbers in square brackets, like [1] or [2][3]. If the sources do not "
    "contain the answer, say that you do not know."
)


class ProfileConfig(BaseModel):
    """A knowledge profile: a chat model answering from vector stores, listed in
    /v1/models and used like a model."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The name clients send in `model`.")
    model: str = Field(description="The chat model (id or alias) that answers.")
    state: str | None = Field(None, description="A State of that model to answer with.")
    vector_store_ids: list[str] = Field(
        min_length=1, description="Vector stores searched (ids or unique names)."
    )
    top_k: int = Field(5, ge=1, le=50, description="Most sources put in the prompt.")
    rerank: bool = Field(True, description="Rerank hits when a rerank model is configured.")
    score_threshold: float = Field(
        0.0, ge=0, le=1, description="Hits scoring below this are not used."
    )
    max_context_tokens: int | None = Field(
        None, ge=1, description="Most tokens of sources in the prompt (null = what fits)."
    )
    system_prompt: str = Field(DEFAULT_RAG_PROMPT, description="Instruction given with sources.")
    no_answer: Literal["say so", "answer anyway"] = Field(
        "say so",
        description=(
            "When nothing passes the threshold: `say so` answers `no_answer_message` without "
            "running the model; `answer anyway` lets the model answer without sources."
        ),
    )
    no_answer_message: str = Field(
        "I could not find anything about that in the knowledge base.",
        description="The answer given when `no_answer` is `say so` and nothing was found.",
    )
    filters: dict[str, Any] | None = Field(
        None, description="Attribute filter applied to every search (Vector Stores syntax)."
    )
    description: str | None = Field(None, description="Shown in /v1/models.")


class RagSettings(BaseModel):
    """Retrieval-augmented chat defaults (per-request `knowledge` and profiles)."""

    model_config = ConfigDict(extra="forbid")

    default_top_k: int = Field(5, ge=1, le=50, description="top_k of a `knowledge` request.")
    reserve_tokens: int = Field(
        256,
        ge=0,
        description="Context kept free for the answer when a request names no max_tokens.",
    )
    follow_up_words: int = Field(
        6,
        ge=0,
        description=(
            "A last user turn with at most this many words (or with a pronoun) is a "
            "follow-up: the previous user turn joins the search query."
        ),
    )
    debug: bool = Field(
        False, description="Return the prompt sent to the model (`rag_prompt`) in responses."
    )


class McpSettings(BaseModel):
    """The MCP server: knowledge tools over stdio (`rwkv-rag mcp`) and Streamable HTTP."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Serve Streamable HTTP MCP at `path`.")
    path: str = Field("/mcp", description="Where the MCP endpoint is mounted.")
    allow_writes: bool = Field(
        False, description="Offer add_text, ingest_url and delete_file (off by default)."
    )
    writable_stores: list[str] = Field(
        default_factory=list,
        description="Stores (ids or names) write tools may change; empty = every store.",
    )
    default_stores: list[str] = Field(
        default_factory=list,
        description="Stores `search` uses when no vector_store is given (empty = all).",
    )
    dns_rebinding_protection: bool = Field(
        True, description="Check Host and Origin headers against the lists below."
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:*", "localhost:*", "[::1]:*"],
        description="Host header values accepted (`host:*` for any port).",
    )
    allowed_origins: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        description="Origin header values accepted (browsers send one).",
    )
    json_response: bool = Field(
        False, description="Answer with JSON instead of an SSE stream where possible."
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


class Settings(BaseSettings):
    """Gateway settings. Precedence: CLI flags > environment > YAML file > defaults."""

    model_config = SettingsConfigDict(
        env_prefix="RWKV_RAG_",
        env_nested_delimiter="__",
        extra="forbid",
        yaml_file=None,
    )

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to bind.")
    data_dir: Path = Field(Path(".data"), description="Where the knowledge base and models live.")
    log_level: str = Field("INFO", description="Root log level.")
    log_json: bool = Field(True, description="Structured (JSON lines) logs.")
    api_keys: list[str] = Field(
        default_factory=list,
        description="Bearer keys; when set, every route but /health needs one.",
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
    knowledge: KnowledgeSettings = Field(
        default_factory=lambda: KnowledgeSettings(), description="The knowledge base."
    )
    torch_threads: int = Field(
        0, ge=0, description="torch intra-op threads for local engines (0 = library default)."
    )

    @model_validator(mode="after")
    def _check_models(self) -> Settings:
        ids = [m.id for m in self.models]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise ValueError(f"duplicate model ids: {sorted(dupes)}")
        for alias, target in self.aliases.items():
            if target not in ids:
                raise ValueError(f"alias {alias!r} points at unknown model {target!r}")
            if alias in ids:
                raise ValueError(f"alias {alias!r} shadows a model id")
        chat_names = {m.id for m in self.models if m.kind == "chat"} | {
            a
            for a, t in self.aliases.items()
            if t in {m.id for m in self.models if m.kind == "chat"}
        }
        seen: set[str] = set()
        for p in self.profiles:
            if p.id in ids or p.id in self.aliases or p.id in seen:
                raise ValueError(f"profile id {p.id!r} clashes with a model, alias or profile")
            seen.add(p.id)
            if p.model not in chat_names:
                raise ValueError(f"profile {p.id!r}: {p.model!r} is not a configured chat model")
        return self

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
    file_cls = type(
        "FileSettings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "yaml_file": path})},
    )
    return file_cls(**overrides)
