"""Who asks, and which project's data they may see.

Every key belongs to one project and has a role. A ``member`` sees and changes its own
project's data only; an ``admin`` sees every project (and may narrow its view to one with
the ``OpenAI-Project`` header, as the OpenAI SDKs send it). Objects a caller creates go to
``Principal.project``. Reads are filtered by ``Principal.visible``: ``None`` means every
project. Another project's object is answered as missing (404), never as forbidden, so an
id never confirms that it exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ADMIN_PROJECT",
    "LOCAL_ADMIN",
    "PROJECT_PATTERN",
    "Principal",
    "Role",
    "valid_project",
]

Role = Literal["member", "admin"]

# The project that rows from before projects existed, legacy keys and the keyless
# single-user default belong to.
ADMIN_PROJECT = "default"
PROJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_PROJECT = re.compile(PROJECT_PATTERN)


def valid_project(name: str) -> bool:
    return bool(_PROJECT.match(name))


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: its project, role and key digest (never the key)."""

    project: str = ADMIN_PROJECT
    role: Role = "admin"
    key_id: str | None = None
    # An admin that named a project sees only that one; members always see only theirs.
    narrowed: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def visible(self) -> str | None:
        """The one project this caller's reads are limited to, or None for all."""
        if self.role == "admin" and not self.narrowed:
            return None
        return self.project

    def sees(self, project: str | None) -> bool:
        """Whether an object of ``project`` exists for this caller."""
        visible = self.visible
        return visible is None or project == visible

    def acting_as(self, project: str) -> Principal:
        """An admin working inside ``project`` (creations go there, reads are limited to it)."""
        return Principal(project=project, role=self.role, key_id=self.key_id, narrowed=True)


# The keyless single-user default (loopback only) and internal callers (CLI, MCP stdio).
LOCAL_ADMIN = Principal()
