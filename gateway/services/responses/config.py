"""Settings of stored responses and conversations: how long they are kept and how much
each project may store."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ResponsesSettings"]

_GIB = 1024**3


class ResponsesSettings(BaseModel):
    """Stored responses (``store: true``) and conversations."""

    model_config = ConfigDict(extra="forbid")

    retention_days: float = Field(
        30,
        ge=0,
        description=(
            "Stored responses and conversations untouched for this many days are deleted "
            "(with their saved model states) by a background sweep; 0 keeps them forever."
        ),
    )
    sweep_interval_s: float = Field(
        3600,
        gt=0,
        description="Seconds between two retention sweeps (the first runs at startup).",
    )
    max_stored_bytes_per_project: int = Field(
        _GIB,
        ge=0,
        description=(
            "Most bytes of stored responses and conversation items one project may keep; a "
            "request that would store more answers 429 `insufficient_quota` before "
            "generating. 0 = unlimited."
        ),
    )
    max_items_per_request: int = Field(
        20,
        ge=1,
        le=1000,
        description="Most items one conversation create or item-add request may carry.",
    )
