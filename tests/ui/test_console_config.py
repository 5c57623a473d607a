"""/ui/config.json: what the console may offer on this gateway (web search needs a
provider), readable without a key like the console's page."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from gateway.app import create_app
from tests.conftest import fake_settings


async def _config(**overrides: Any) -> dict[str, Any]:
    async with AsyncTestClient(create_app(fake_settings(**overrides))) as c:
        r = await c.get("/ui/config.json")
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        return body


async def test_web_search_is_reported_off_with_the_settings_that_turn_it_on() -> None:
    web = (await _config(api_keys=["sk-x"]))["web_search"]
    assert web == {
        "enabled": False,
        "settings": ["knowledge.web_search.provider", "knowledge.web_search.url"],
    }


async def test_web_search_is_reported_on_once_a_provider_and_its_url_are_set() -> None:
    knowledge = {"web_search": {"provider": "searxng", "url": "http://127.0.0.1:9"}}
    web = (await _config(knowledge=knowledge))["web_search"]
    assert web["enabled"] is True
