"""The MCP server's own settings (the gateway's root settings hold them under ``mcp``)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["McpSettings"]

_HEX_KEY = re.compile(r"^(?:[0-9a-fA-F]{2}){16,}$")


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
        description=(
            "Store ids write tools may change; empty = every store the caller sees. A name "
            "is accepted only while one store in all projects has it."
        ),
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
    chunk_id_key: SecretStr | None = Field(
        None,
        description=(
            "Hex key (at least 32 hex digits) sealing the chunk ids MCP clients see; default: "
            "a key kept in the data directory (mcp-chunk-ids.key). Replicas sharing a "
            "knowledge base set the same."
        ),
    )
    json_response: bool = Field(
        False, description="Answer with JSON instead of an SSE stream where possible."
    )

    @field_validator("chunk_id_key")
    @classmethod
    def _hex_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not _HEX_KEY.match(v.get_secret_value()):
            raise ValueError("chunk_id_key must be at least 32 hex digits")
        return v
