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
