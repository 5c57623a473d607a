"""Knowledge profiles belong to a project (or are shared), seen through the official SDK;
GET /v1/me says who a key is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from tests.conftest import FAKE_MODELS, asgi_client, fake_settings

NO_ANSWER = "Nothing about that in this project's documents."
KEYS = [
    {"key": "sk-alice", "project": "team-a"},
    {"key": "sk-bob", "project": "team-b"},
    {"key": "sk-root", "project": "ops", "role": "admin"},
]


def _settings(shared: bool = True) -> Any:
    profile = {"model": "scripted-chat", "no_answer_message": NO_ANSWER}
    return fake_settings(
        models=[
            *FAKE_MODELS,
            {"id": "scripted-chat", "kind": "chat", "engine": "fake", "options": {}},
        ],
        auth={"keys": KEYS, "shared_profiles": shared},
        profiles=[
            {"id": "a-bot", "project": "team-a", "vector_store_ids": ["a-docs"], **profile},
            {"id": "b-bot", "project": "team-b", "vector_store_ids": ["b-docs"], **profile},
            {"id": "shared-bot", "vector_store_ids": ["a-docs"], **profile},
        ],
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(_settings())) as c:
        yield c


def _sdk(http: httpx.AsyncClient, key: str, project: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=key, project=project, base_url="http://testserver.local/v1", http_client=http
    )


async def _profiles(client: openai.AsyncOpenAI) -> set[str]:
    return {m.id for m in (await client.models.list()).data if m.id.endswith("-bot")}


async def test_each_project_lists_its_own_profiles_and_the_shared_one(
    http: httpx.AsyncClient,
) -> None:
    assert await _profiles(_sdk(http, "sk-alice")) == {"a-bot", "shared-bot"}
    assert await _profiles(_sdk(http, "sk-bob")) == {"b-bot", "shared-bot"}
    assert await _profiles(_sdk(http, "sk-root")) == {"a-bot", "b-bot", "shared-bot"}
    # An admin inside one project sees that project's profiles and the shared ones.
    assert await _profiles(_sdk(http, "sk-root", "team-b")) == {"b-bot", "shared-bot"}
    # The chat models themselves are every project's.
    models = {m.id for m in (await _sdk(http, "sk-bob").models.list()).data}
    assert "scripted-chat" in models


async def test_another_projects_profile_is_an_unknown_model_to_a_member(
    http: httpx.AsyncClient,
) -> None:
    alice = _sdk(http, "sk-alice")
    with pytest.raises(openai.NotFoundError) as other:
        await alice.chat.completions.create(
            model="b-bot", messages=[{"role": "user", "content": "What is in b-docs?"}]
        )
    with pytest.raises(openai.NotFoundError) as unknown:
        await alice.chat.completions.create(
            model="no-such-bot", messages=[{"role": "user", "content": "Anything?"}]
        )
    assert other.value.status_code == unknown.value.status_code == 404
    for err in (other.value, unknown.value):
        body: Any = err.body
        assert (body["code"], body["type"], body["param"]) == (
            "model_not_found",
            "invalid_request_error",
            "model",
        )
    with pytest.raises(openai.NotFoundError):
        await alice.models.retrieve("b-bot")
    with pytest.raises(openai.NotFoundError):
        await alice.completions.create(model="b-bot", prompt="What is in b-docs?")
    await _sdk(http, "sk-bob").vector_stores.create(name="b-docs")
    with pytest.raises(openai.NotFoundError) as through_responses:
        await alice.responses.create(model="b-bot", input="What is in b-docs?")
    assert isinstance(through_responses.value.body, dict)
    assert through_responses.value.body["code"] == "model_not_found"


async def test_a_member_chats_with_its_own_profile_and_the_shared_one(
    http: httpx.AsyncClient,
) -> None:
    alice = _sdk(http, "sk-alice")
    await alice.vector_stores.create(name="a-docs")
    for model in ("a-bot", "shared-bot"):
        out = await alice.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Where is the manual?"}]
        )
        # An empty store: the profile answers that it found nothing, without the model.
        assert out.choices[0].message.content == NO_ANSWER
    assert (await alice.models.retrieve("a-bot")).id == "a-bot"
    assert (await alice.models.retrieve("shared-bot")).id == "shared-bot"


async def test_profiles_without_a_project_are_for_admins_only_when_not_shared() -> None:
    async with asgi_client(create_app(_settings(shared=False))) as http:
        assert await _profiles(_sdk(http, "sk-alice")) == {"a-bot"}
        assert await _profiles(_sdk(http, "sk-root")) == {"a-bot", "b-bot", "shared-bot"}
        assert await _profiles(_sdk(http, "sk-root", "team-a")) == {"a-bot", "shared-bot"}
        with pytest.raises(openai.NotFoundError):
            await _sdk(http, "sk-bob").chat.completions.create(
                model="shared-bot", messages=[{"role": "user", "content": "Hello?"}]
            )
        me = (await http.get("/v1/me", headers={"Authorization": "Bearer sk-bob"})).json()
        assert me["shared_profiles"] is False


async def test_me_tells_a_member_its_project_and_role_and_nothing_of_its_key(
    http: httpx.AsyncClient,
) -> None:
    r = await http.get("/v1/me", headers={"Authorization": "Bearer sk-alice"})
    assert r.status_code == 200
    assert r.json() == {
        "object": "principal",
        "project": "team-a",
        "role": "member",
        "shared_profiles": True,
    }
    assert "sk-alice" not in r.text
    assert (await http.get("/v1/me")).status_code == 401


async def test_me_lists_every_configured_project_to_an_admin_and_follows_its_narrowing(
    http: httpx.AsyncClient,
) -> None:
    root = {"Authorization": "Bearer sk-root"}
    me = (await http.get("/v1/me", headers=root)).json()
    assert me["object"] == "principal"
    assert (me["project"], me["role"]) == ("ops", "admin")
    # The admin project first (the keyless default's and legacy keys'), then the keys'.
    assert me["projects"] == ["default", "team-a", "team-b", "ops"]
    narrowed = (await http.get("/v1/me", headers={**root, "OpenAI-Project": "team-b"})).json()
    assert (narrowed["project"], narrowed["role"]) == ("team-b", "admin")
    assert narrowed["projects"] == me["projects"]
    # A key is never echoed, nor the digest the gateway keeps of it.
    import hashlib

    digest = hashlib.sha256(b"sk-root").hexdigest()
    for body in (me, narrowed):
        text = str(body)
        assert "sk-root" not in text and digest[:12] not in text


async def test_without_keys_me_is_the_local_admin() -> None:
    async with asgi_client(create_app(fake_settings())) as http:
        me = (await http.get("/v1/me")).json()
    assert me == {
        "object": "principal",
        "project": "default",
        "role": "admin",
        "projects": ["default"],
        "shared_profiles": True,
    }


async def test_a_grounded_answer_for_a_member_never_uses_another_projects_profile() -> None:
    from chat.command import Caller
    from core.errors import InvalidRequestError
    from core.tenancy import Principal

    app = create_app(_settings())
    async with asgi_client(app) as http:
        await _sdk(http, "sk-alice").vector_stores.create(name="a-docs")
        await _sdk(http, "sk-bob").vector_stores.create(name="b-docs")
        core = app.state.ctx.core
        alice = Caller(principal=Principal(project="team-a", role="member"))
        with pytest.raises(InvalidRequestError) as other:
            await core.answer("What is in b-docs?", "b-bot", caller=alice)
        with pytest.raises(InvalidRequestError) as unknown:
            await core.answer("What is in b-docs?", "no-such-bot", caller=alice)
        assert other.value.param == unknown.value.param == "profile"
        # With no profile named, the first one the member may use answers.
        answer = await core.answer("Where is the manual?", caller=alice)
        assert (answer.profile, answer.text) == ("a-bot", NO_ANSWER)
        bob = Caller(principal=Principal(project="team-b", role="member"))
        assert (await core.answer("Where is the manual?", caller=bob)).profile == "b-bot"
