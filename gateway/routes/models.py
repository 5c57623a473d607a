"""GET /v1/models, GET /v1/models/{id} (the knowledge profiles the caller's project may
use among them) and GET /v1/me (who the key is)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import FromPath

from core.errors import ModelNotFoundError
from engines.registry import ServedModel
from gateway.schemas.models import Me, Model, ModelList
from gateway.state import ctx_of, principal_of
from rag.catalog import Profile


def _wire(m: ServedModel, aliases: list[str]) -> Model:
    info = m.info
    details = dict(info.extra)
    if m.pool is not None:
        details["upstreams"] = m.pool.describe()
        details["healthy"] = m.healthy
    return Model(
        id=info.id,
        created=info.created,
        owned_by=info.owned_by,
        object="model",
        kind=info.kind,
        capabilities=list(m.capabilities),
        engine=info.engine,
        dimensions=info.dimensions,
        max_input_tokens=info.max_input_tokens,
        rerank=(
            "cosine-similarity" if m.kind == "embedding" and "rerank" in m.capabilities else None
        ),
        status=m.status,
        aliases=aliases or None,
        details=details or None,
    )


def _aliases(state: State, model_id: str) -> list[str]:
    return sorted(a for a, t in ctx_of(state).registry.aliases.items() if t == model_id)


def _profile(p: Profile, created: int) -> Model:
    return Model(
        id=p.id,
        created=created,
        owned_by="rwkv-rag-gateway",
        object="model",
        kind="chat",
        capabilities=["chat", "completions", "knowledge"],
        engine="rag-profile",
        status="ready",
        details={
            "model": p.model,
            "state": p.state,
            "vector_store_ids": list(p.store_refs),
            "top_k": p.top_k,
            "description": p.description,
        },
    )


@get("/v1/models", sync_to_thread=False)
def list_models(state: State, request: Request[Any, Any, Any]) -> ModelList:
    ctx = ctx_of(state)
    reg = ctx.registry
    data = [_wire(m, _aliases(state, m.info.id)) for m in reg.models.values()]
    created = min((m.created for m in data), default=0)
    data.extend(_profile(p, created) for p in ctx.catalog.visible(principal_of(request)))
    return ModelList(data=data, role=ctx.settings.role)


@get("/v1/models/{model_id:path}", sync_to_thread=False)
def retrieve_model(state: State, request: Request[Any, Any, Any], model_id: FromPath[str]) -> Model:
    ctx = ctx_of(state)
    reg = ctx.registry
    name = model_id.lstrip("/")
    m = reg.models.get(reg.aliases.get(name, name))
    profile = ctx.catalog.get(name, principal_of(request))
    if m is None and profile is not None:
        return _profile(profile, min((x.info.created for x in reg.models.values()), default=0))
    if m is None:
        raise ModelNotFoundError(f"the model {name!r} does not exist", param="model")
    return _wire(m, _aliases(state, m.info.id))


@get(
    "/v1/me",
    sync_to_thread=False,
    summary="The caller's project and role",
    description=(
        "The project the key runs in (the one named by `OpenAI-Project` for an admin that "
        "sent it), its role, whether knowledge profiles without a project are shared, and, "
        "for admins, the projects the auth configuration names. Never the key or its digest."
    ),
)
def me(state: State, request: Request[Any, Any, Any]) -> Me:
    auth = ctx_of(state).settings.auth
    who = principal_of(request)
    projects = None
    if who.is_admin:
        named = [k.project for k in auth.keys if k.project]
        projects = list(dict.fromkeys([auth.admin_project, *named]))
    return Me(
        object="principal",
        project=who.project,
        role=who.role,
        shared_profiles=auth.shared_profiles,
        projects=projects,
    )


routes = [list_models, retrieve_model, me]
