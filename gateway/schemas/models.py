"""GET /v1/models and GET /v1/me."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["Me", "Model", "ModelList"]


class Model(msgspec.Struct, omit_defaults=True):
    id: str
    created: int
    owned_by: str
    # Required (no default): omit_defaults would otherwise leave it out of the JSON.
    object: Literal["model"]
    # Extras the OpenAI schema lacks: what the model does and how it is served.
    kind: str | None = None
    capabilities: list[str] | None = None
    engine: str | None = None
    dimensions: int | None = None
    max_input_tokens: int | None = None
    rerank: str | None = None
    status: str | None = None
    aliases: list[str] | None = None
    details: dict[str, Any] | None = None


class ModelList(msgspec.Struct):
    data: list[Model]
    object: Literal["list"] = "list"
    # This project's servers say who they are: a gateway in front of them sends its
    # extras (`state`, `top_k`) only to upstreams that do.
    served_by: str = "rwkv-rag-gateway"
    role: str = "all"


class Me(msgspec.Struct, omit_defaults=True):
    """Who the key is: its project (the one named by ``OpenAI-Project`` for an admin that
    sent it) and role. Never the key or its digest."""

    # Required (no default): omit_defaults would otherwise leave it out of the JSON.
    object: Literal["principal"]
    project: str
    role: str
    # Knowledge profiles without a project are shared with every project (auth.shared_profiles).
    shared_profiles: bool
    # Admins only: the projects the auth configuration names, the admin project first.
    projects: list[str] | None = None
