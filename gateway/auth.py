"""API keys, their projects and roles, and the principal each request runs as.

``auth.keys`` lists keys with a project and a role; the older ``api_keys`` list still works,
each entry an admin key of the admin project, so existing installs keep their meaning. With
no key at all the gateway is the single-user default: every caller is the local admin.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from core.tenancy import ADMIN_PROJECT, LOCAL_ADMIN, PROJECT_PATTERN, Principal, Role

__all__ = ["PROJECT_HEADER", "AuthSettings", "KeyConfig", "KeyTable"]

# The header the OpenAI SDKs send for `project=`; an admin narrows its view with it.
PROJECT_HEADER = b"openai-project"


class KeyConfig(BaseModel):
    """One API key: its project and role."""

    model_config = ConfigDict(extra="forbid")

    key: SecretStr = Field(description="The bearer key (kept out of logs and /metrics).")
    project: str | None = Field(
        None,
        pattern=PROJECT_PATTERN,
        description="The project this key's data belongs to (default: a project of its own).",
    )
    role: Role = Field(
        "member",
        description=(
            "`member`: its project's data only. `admin`: every project and the admin routes."
        ),
    )

    @field_validator("key")
    @classmethod
    def _non_empty(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("an API key may not be empty")
        return v


class AuthSettings(BaseModel):
    """API keys, projects and roles."""

    model_config = ConfigDict(extra="forbid")

    keys: list[KeyConfig] = Field(
        default_factory=list,
        description=(
            "Keys with a project and a role; with any key set, every route but /health needs one."
        ),
    )
    admin_project: str = Field(
        ADMIN_PROJECT,
        pattern=PROJECT_PATTERN,
        description=(
            "The project of `api_keys` entries, of the keyless single-user default, and of rows "
            "stored before projects existed."
        ),
    )
    shared_profiles: bool = Field(
        True,
        description=(
            "Knowledge profiles without a `project` are usable read-only by every project; "
            "false limits them to admins."
        ),
    )


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    project: str
    role: Role


class KeyTable:
    """Resolves a bearer token to its principal in time independent of which key matches."""

    def __init__(self, auth: AuthSettings, legacy: list[str]) -> None:
        entries: list[_Entry] = []
        for k in auth.keys:
            digest = _digest(k.key.get_secret_value().strip().encode())
            # One project per key unless named: a stable name from the key's digest.
            project = k.project or f"key-{digest.hex()[:12]}"
            entries.append(_Entry(digest, project, k.role))
        for raw in legacy:
            entries.append(_Entry(_digest(raw.strip().encode()), auth.admin_project, "admin"))
        digests = [e.digest for e in entries]
        if len(set(digests)) != len(digests):
            raise ValueError("the same API key is listed twice")
        self._entries = entries
        self.admin_project = auth.admin_project

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    @property
    def projects(self) -> frozenset[str]:
        """Every project a key belongs to, and the admin project."""
        return frozenset({self.admin_project, *(e.project for e in self._entries)})

    def resolve(self, token: bytes) -> Principal | None:
        candidate = _digest(token.strip())
        found: _Entry | None = None
        # Compare with every entry, no early exit, fixed-length digests.
        for entry in self._entries:
            if hmac.compare_digest(candidate, entry.digest):
                found = entry
        if found is None:
            return None
        return Principal(project=found.project, role=found.role, key_id=candidate.hex()[:16])

    def keyless(self) -> Principal:
        return (
            Principal(project=self.admin_project, role="admin")
            if self.admin_project != LOCAL_ADMIN.project
            else LOCAL_ADMIN
        )
