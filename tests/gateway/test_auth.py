"""Bearer auth on every route but /health."""

from __future__ import annotations

import openai
import pytest
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from tests.conftest import fake_settings


@pytest.fixture
async def secured() -> AsyncTestClient:  # type: ignore[type-arg]
    async with AsyncTestClient(create_app(fake_settings(api_keys=["k-one", "k-two"]))) as c:
        yield c


@pytest.mark.parametrize("path", ["/v1/models", "/metrics", "/v1/models/fake-embed"])
async def test_routes_need_a_key(secured: AsyncTestClient, path: str) -> None:  # type: ignore[type-arg]
    r = await secured.get(path)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    r = await secured.get(path, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = await secured.get(path, headers={"Authorization": "Basic k-one"})
    assert r.status_code == 401
    r = await secured.get(path, headers={"Authorization": "Bearer k-two"})
    assert r.status_code == 200


async def test_health_is_open(secured: AsyncTestClient) -> None:  # type: ignore[type-arg]
    assert (await secured.get("/health")).status_code == 200


async def test_sdk_with_and_without_key(secured: AsyncTestClient) -> None:  # type: ignore[type-arg]
    bad = openai.AsyncOpenAI(
        api_key="nope", base_url="http://testserver.local/v1", http_client=secured
    )
    with pytest.raises(openai.AuthenticationError):
        await bad.embeddings.create(model="fake-embed", input="x")
    good = openai.AsyncOpenAI(
        api_key="k-one", base_url="http://testserver.local/v1", http_client=secured
    )
    out = await good.embeddings.create(model="fake-embed", input="x")
    assert len(out.data) == 1


KEYS = {
    "auth": {
        "keys": [
            {"key": "sk-alice", "project": "team-a"},
            {"key": "sk-bob", "project": "team-b"},
            {"key": "sk-root", "role": "admin"},
            {"key": "sk-solo"},
        ]
    }
}


async def test_each_key_runs_as_its_project_and_role() -> None:
    from core.tenancy import Principal
    from gateway.auth import AuthSettings, KeyTable

    table = KeyTable(AuthSettings.model_validate(KEYS["auth"]), ["sk-legacy"])
    alice = table.resolve(b"sk-alice")
    assert isinstance(alice, Principal)
    assert (alice.project, alice.role, alice.visible) == ("team-a", "member", "team-a")
    root = table.resolve(b"sk-root")
    assert root is not None and root.is_admin and root.visible is None
    legacy = table.resolve(b"sk-legacy")
    assert legacy is not None and legacy.is_admin and legacy.project == "default"
    solo = table.resolve(b"sk-solo")
    assert solo is not None and solo.project.startswith("key-") and solo.role == "member"
    assert solo.project != (table.resolve(b"sk-alice") or alice).project
    assert table.resolve(b"sk-nobody") is None
    assert alice.key_id is not None and "alice" not in alice.key_id


async def test_a_key_listed_twice_stops_settings_load() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        fake_settings(api_keys=["sk-alice"], auth={"keys": [{"key": "sk-alice"}]})


async def test_openai_project_header_narrows_an_admin_and_must_match_a_member() -> None:
    async with AsyncTestClient(create_app(fake_settings(**KEYS))) as c:
        ok = await c.get(
            "/v1/models",
            headers={"Authorization": "Bearer sk-alice", "OpenAI-Project": "team-a"},
        )
        assert ok.status_code == 200
        other = await c.get(
            "/v1/models",
            headers={"Authorization": "Bearer sk-alice", "OpenAI-Project": "team-b"},
        )
        assert other.status_code == 401
        assert other.json()["error"]["code"] == "mismatched_project"
        made_up = await c.get(
            "/v1/models",
            headers={"Authorization": "Bearer sk-alice", "OpenAI-Project": "no-such"},
        )
        assert made_up.status_code == 401 and made_up.json() == other.json()
        admin = await c.get(
            "/v1/models",
            headers={"Authorization": "Bearer sk-root", "OpenAI-Project": "team-b"},
        )
        assert admin.status_code == 200


async def test_metrics_are_for_admin_keys_only() -> None:
    async with AsyncTestClient(create_app(fake_settings(**KEYS))) as c:
        member = await c.get("/metrics", headers={"Authorization": "Bearer sk-alice"})
        assert member.status_code == 403
        assert member.json()["error"]["code"] == "insufficient_permissions"
        admin = await c.get("/metrics", headers={"Authorization": "Bearer sk-root"})
        assert admin.status_code == 200 and "rwkv_rag_requests_total" in admin.text
