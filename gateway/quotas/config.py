"""Per-project quota settings (``quotas:``): 0 means unlimited, so an install without the
section keeps its meaning."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.tenancy import valid_project

__all__ = ["ProjectQuota", "QuotaLimits", "QuotaSettings"]


class QuotaLimits(BaseModel):
    """The limits one project runs under (0: unlimited)."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int = Field(
        0,
        ge=0,
        description=(
            "Requests a project may make to the /v1 API per one-minute window (fixed windows "
            "starting on the minute); more answer 429 `rate_limit_exceeded`. 0: unlimited."
        ),
    )
    tokens_per_minute: int = Field(
        0,
        ge=0,
        description=(
            "Generated tokens a project may use per one-minute window. A generation is let in "
            "while the window is under the limit and charged when it finishes, so one answer "
            "may take the count past it; the next request then answers 429. 0: unlimited."
        ),
    )
    concurrent_streams: int = Field(
        0,
        ge=0,
        description=(
            "Streaming answers (chat completions, completions, responses) a project may hold "
            "open at once on this replica; one more answers 429. 0: unlimited."
        ),
    )
    storage_bytes: int = Field(
        0,
        ge=0,
        description=(
            "Bytes of uploaded files a project may store; an upload (or a stored Responses "
            "answer) past it answers 429 `insufficient_quota`. 0: unlimited."
        ),
    )


class ProjectQuota(BaseModel):
    """One project's overrides: each limit given replaces the default one."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(None, ge=0, description="Overrides the default.")
    tokens_per_minute: int | None = Field(None, ge=0, description="Overrides the default.")
    concurrent_streams: int | None = Field(None, ge=0, description="Overrides the default.")
    storage_bytes: int | None = Field(None, ge=0, description="Overrides the default.")


class QuotaSettings(QuotaLimits):
    """Per-project quotas: the limits every project gets, and overrides by project name."""

    projects: dict[str, ProjectQuota] = Field(
        default_factory=dict,
        description="Per-project overrides (`team-a: {requests_per_minute: 600}`).",
    )

    @field_validator("projects")
    @classmethod
    def _names(cls, v: dict[str, ProjectQuota]) -> dict[str, ProjectQuota]:
        bad = [name for name in v if not valid_project(name)]
        if bad:
            raise ValueError(f"not a project name: {bad}")
        return v

    def limits_for(self, project: str) -> QuotaLimits:
        base = QuotaLimits(
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            concurrent_streams=self.concurrent_streams,
            storage_bytes=self.storage_bytes,
        )
        found = self.projects.get(project)
        if found is None:
            return base
        return base.model_copy(update=found.model_dump(exclude_none=True))

    @property
    def enabled(self) -> bool:
        """Whether any limit is set for any project."""
        every = [self, *self.projects.values()]
        return any(getattr(q, f) for q in every for f in QuotaLimits.model_fields)
