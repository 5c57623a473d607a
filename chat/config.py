"""The chat core's own settings: defaults and limits of every chat surface (chat
completions, completions, the Responses API, MCP ``ask``). The gateway's root settings
compose them; nothing here reads the environment."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatSettings"]


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
    max_tools: int = Field(128, ge=1, description="Most function tools per request.")
    max_constrained_output_bytes: int = Field(
        65536,
        ge=64,
        description=(
            "Most bytes the shortest valid output of a response format or a required call "
            "may need (computed from the schema before any work); past it the request is "
            "refused with a 400."
        ),
    )
    prepare_timeout_s: float = Field(
        2.0,
        gt=0,
        description=(
            "Time allowed to prepare a constrained generation off the event loop (the "
            "shortest valid output and its tokens); past it the request is refused (400)."
        ),
    )
    max_schema_bytes: int = Field(
        65536,
        ge=256,
        description="Largest JSON Schema (a tool's parameters, a response format), as JSON.",
    )
    max_schema_properties: int = Field(
        1000,
        ge=1,
        le=2000,
        description="Most properties one object of a JSON Schema may declare (the grammar "
        "parser holds a few items per optional property at each step; beyond this a schema "
        "is refused with 400 rather than risk a parser limit mid-answer).",
    )
