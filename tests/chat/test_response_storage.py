"""Stored responses through the openai SDK: each belongs to its project (another project's
id is missing, never forbidden), metadata keeps OpenAI's limits, a per-project quota
refuses what would pass it, deletes give the space back, and the retention sweep removes
what is too old with its saved states."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.chat.conftest import chat_models
from tests.conftest import asgi_client

BASE = "http://testserver.local/v1"
AUTH = {
    "keys": [
        {"key": "sk-alice", "project": "team-a"},
        {"key": "sk-bob", "project": "team-b"},
        {"key": "sk-root", "role": "admin"},
    ]
}
# Characters are tokens for the fake model: room for a few MiB of input.
PLAIN = {
    "id": "fake-plain",
    "kind": "chat",
    "engine": "fake",
    "options": {"script": ["Sunny."], "context_length": 8_000_000},
}
DAY = 86400.0


def _settings(data: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "models": [PLAIN],
        "auth": AUTH,
        "load_in_background": False,
        "log_json": False,
        "data_dir": data,
        "limits": {"max_body_bytes": 16 * 1024 * 1024},
    }
    return Settings(**{**base, **overrides})


def _sdk(http: httpx.AsyncClient, key: str, project: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=BASE, http_client=http, project=project)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(_settings(tmp_path / "data"))) as c:
        yield c


async def _not_found(call: Any) -> dict[str, Any]:
    with pytest.raises(openai.NotFoundError) as caught:
        await call
    body: dict[str, Any] = caught.value.response.json()["error"]
    return body


async def test_another_projects_response_is_missing_for_every_route_and_stays_intact(
    http: httpx.AsyncClient,
) -> None:
    alice, bob = _sdk(http, "sk-alice"), _sdk(http, "sk-bob")
    mine = await alice.responses.create(model="fake-plain", input="Weather?")
    missing = await _not_found(bob.responses.retrieve("resp_nope"))
    for call in (
        bob.responses.retrieve(mine.id),
        bob.responses.input_items.list(mine.id),
        bob.responses.delete(mine.id),
    ):
        err = await _not_found(call)
        assert (err["type"], err["code"], err["param"]) == (
            missing["type"],
            missing["code"],
            missing["param"],
        )
    err = await _not_found(
        bob.responses.create(model="fake-plain", previous_response_id=mine.id, input="And?")
    )
    assert (err["code"], err["param"]) == ("not_found", "previous_response_id")
    # Untouched for its owner, and the un-narrowed admin sees every project.
    assert (await alice.responses.retrieve(mine.id)).output_text == "Sunny."
    assert (await _sdk(http, "sk-root").responses.retrieve(mine.id)).id == mine.id
    narrowed = _sdk(http, "sk-root", project="team-b")
    await _not_found(narrowed.responses.retrieve(mine.id))
    again = await alice.responses.create(
        model="fake-plain", previous_response_id=mine.id, input="And?"
    )
    assert again.previous_response_id == mine.id
    await alice.responses.delete(mine.id)
    await _not_found(alice.responses.retrieve(mine.id))


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
    ],
    ids=["17-keys", "65-char-key", "513-char-value"],
)
async def test_metadata_past_openais_limits_is_a_400(
    http: httpx.AsyncClient, metadata: dict[str, str]
) -> None:
    alice = _sdk(http, "sk-alice")
    conv = await alice.conversations.create(metadata={"k": "v" * 512})
    calls = (
        alice.responses.create(model="fake-plain", input="x", metadata=metadata),
        alice.conversations.create(metadata=metadata),
        alice.conversations.update(conv.id, metadata=metadata),
    )
    for call in calls:
        with pytest.raises(openai.BadRequestError) as caught:
            await call
        err = caught.value.response.json()["error"]
        assert (err["type"], err["param"]) == ("invalid_request_error", "metadata")
    assert (await alice.conversations.retrieve(conv.id)).metadata == {"k": "v" * 512}


async def test_a_project_past_its_quota_gets_429_insufficient_quota_while_another_stores(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path / "data", responses={"max_stored_bytes_per_project": 40_000})
    async with asgi_client(create_app(settings)) as http:
        alice, bob = _sdk(http, "sk-alice"), _sdk(http, "sk-bob")
        big = "pump " * 2000  # 10 kB, kept about twice per stored response
        kept = [await alice.responses.create(model="fake-plain", input=big)]
        with pytest.raises(openai.RateLimitError) as caught:
            for _ in range(5):
                kept.append(await alice.responses.create(model="fake-plain", input=big))
        assert 1 <= len(kept) < 5
        err = caught.value.response.json()["error"]
        assert caught.value.status_code == 429
        assert (err["type"], err["code"]) == ("insufficient_quota", "insufficient_quota")
        # Conversations count against the same allowance.
        with pytest.raises(openai.RateLimitError):
            await alice.conversations.create(items=[{"role": "user", "content": big * 3}])
        # Nothing kept, nothing counted; another project is not affected.
        unstored = await alice.responses.create(model="fake-plain", input=big, store=False)
        assert unstored.status == "completed"
        assert (await bob.responses.create(model="fake-plain", input=big)).status == "completed"
        # Deleting makes room again.
        for r in kept:
            await alice.responses.delete(r.id)
        assert (await alice.responses.create(model="fake-plain", input=big)).status == "completed"


def _disk_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in data.glob("responses.sqlite3*"))


async def test_deleting_large_responses_shrinks_the_database_file(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    alice = _sdk(http, "sk-alice")
    data = tmp_path / "data"
    small = _disk_bytes(data)
    large = [
        await alice.responses.create(model="fake-plain", input=f"{i} " + "x" * 1_500_000)
        for i in range(3)
    ]
    full = _disk_bytes(data)
    assert full - small > 6_000_000  # each input is kept as an item and in the conversation
    for r in large:
        await alice.responses.delete(r.id)
    after = _disk_bytes(data)
    assert full - after > 6_000_000
    assert after < small + 1_000_000


async def test_the_retention_sweep_deletes_expired_responses_conversations_and_states(
    tiny_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (model,) = [m for m in chat_models(tiny_dir) if m["id"] == "rwkv7-tiny"]
    settings = _settings(data, models=[model], responses={"retention_days": 30})
    app = create_app(settings)
    async with asgi_client(app) as http:
        alice = _sdk(http, "sk-alice")
        r = await alice.responses.create(
            model="rwkv7-tiny", input="What is a state? " * 40, max_output_tokens=4
        )
        conv = await alice.conversations.create(items=[{"role": "user", "content": "Hi"}])
        service = app.state.ctx.responses
        stored = await service.store.get(r.id)
        assert stored is not None and stored.states and stored.states["keys"]
        early = await service.sweep(now=time.time() + 29 * DAY)
        assert (early.responses, early.conversations) == ([], [])
        assert (await alice.responses.retrieve(r.id)).id == r.id
        swept = await service.sweep(now=time.time() + 31 * DAY)
        assert (swept.responses, swept.conversations) == ([r.id], [conv.id])
        await _not_found(alice.responses.retrieve(r.id))
        await _not_found(alice.conversations.retrieve(conv.id))
    # The states it saved were deleted with it (the engine's writes finished on close).
    assert list((data / "states").rglob("*.rwkvstate")) == []


async def test_zero_retention_keeps_everything(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path / "data", responses={"retention_days": 0}))
    async with asgi_client(app) as http:
        r = await _sdk(http, "sk-alice").responses.create(model="fake-plain", input="x")
        swept = await app.state.ctx.responses.sweep(now=time.time() + 10_000 * DAY)
        assert swept.responses == []
        assert (await _sdk(http, "sk-alice").responses.retrieve(r.id)).id == r.id


async def test_rows_stored_before_projects_belong_to_the_admin_project(tmp_path: Path) -> None:
    import sqlite3

    data = tmp_path / "data"
    data.mkdir()
    old = sqlite3.connect(data / "responses.sqlite3")
    old.executescript(
        "CREATE TABLE responses (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, "
        "previous_response_id TEXT, response TEXT NOT NULL, input_items TEXT NOT NULL, "
        "conversation TEXT NOT NULL);"
    )
    old.execute(
        "INSERT INTO responses VALUES ('resp_old', ?, NULL, ?, '[]', '[]')",
        (int(time.time()), '{"id": "resp_old", "object": "response"}'),
    )
    old.commit()
    old.close()
    settings = _settings(data, api_keys=["sk-legacy"])
    async with asgi_client(create_app(settings)) as http:
        legacy = _sdk(http, "sk-legacy", project="default")
        assert (await legacy.responses.with_raw_response.retrieve("resp_old")).status_code == 200
        await _not_found(_sdk(http, "sk-alice").responses.retrieve("resp_old"))


async def test_the_app_sweeps_expired_responses_in_the_background_from_startup(
    tmp_path: Path,
) -> None:
    from gateway.services.responses.store import ResponseStore, StoredResponse

    data = tmp_path / "data"
    store = ResponseStore(data / "responses.sqlite3")
    old = {"id": "resp_old", "object": "response", "created_at": int(time.time() - 31 * DAY)}
    new = {"id": "resp_new", "object": "response", "created_at": int(time.time())}
    for r in (old, new):
        await store.put(StoredResponse(r, [], [], None, "team-a"))
    store.close()
    async with asgi_client(create_app(_settings(data))) as http:
        alice = _sdk(http, "sk-alice")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = await http.get(
                "/v1/responses/resp_old", headers={"Authorization": "Bearer sk-alice"}
            )
            if found.status_code == 404:
                break
            await asyncio.sleep(0.05)
        assert found.status_code == 404
        assert (await alice.responses.retrieve("resp_new")).id == "resp_new"
