"""Values one backend would keep and another would fail on (a NUL character in text, a
number past the float range) are a 400 naming the parameter on every backend, and what is
already stored stays as it was."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from tests.conftest import asgi_client, fake_settings

pytestmark = pytest.mark.usefixtures("kb_backend")

HUGE = 10**400


@pytest.fixture
async def sdk(tmp_path: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, httpx.AsyncClient]]:
    app = create_app(fake_settings(data_dir=str(tmp_path)))
    async with asgi_client(app) as http:
        sdk = openai.AsyncOpenAI(
            api_key="x", base_url="http://testserver.local/v1", http_client=http
        )
        yield sdk, http


def _refused(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param


async def _stored(sdk: openai.AsyncOpenAI) -> tuple[str, str]:
    store = await sdk.vector_stores.create(name="kept", metadata={"team": "ops"})
    f = await sdk.files.create(
        file=("pump.txt", io.BytesIO(b"To reset the pump, hold the red button.")),
        purpose="assistants",
    )
    done = await sdk.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=f.id, attributes={"area": "north", "n": 3}
    )
    assert done.status == "completed"
    return store.id, f.id


async def test_a_nul_character_in_a_store_name_or_metadata_is_a_400_and_changes_nothing(
    sdk: Any,
) -> None:
    client, http = sdk
    vs, _ = await _stored(client)
    _refused(await http.post("/v1/vector_stores", json={"name": "a\x00b"}), "name")
    _refused(
        await http.post("/v1/vector_stores", json={"name": "x", "metadata": {"k": "v\x00"}}),
        "metadata",
    )
    _refused(
        await http.post("/v1/vector_stores", json={"name": "x", "metadata": {"k\x00": "v"}}),
        "metadata",
    )
    _refused(await http.post(f"/v1/vector_stores/{vs}", json={"name": "b\x00"}), "name")
    _refused(
        await http.post(f"/v1/vector_stores/{vs}", json={"metadata": {"team": "\x00"}}),
        "metadata",
    )
    store = await client.vector_stores.retrieve(vs)
    assert store.name == "kept" and store.metadata == {"team": "ops"}
    assert [s.id async for s in client.vector_stores.list()] == [vs]


@pytest.mark.parametrize(
    "attributes",
    [{"area": "so\x00uth"}, {"ar\x00ea": "south"}, {"n": HUGE}, {"n": -HUGE}],
    ids=["nul-value", "nul-key", "huge-number", "huge-negative-number"],
)
async def test_a_bad_attribute_is_a_400_and_the_stored_attributes_stay(
    sdk: Any, attributes: dict[str, Any]
) -> None:
    client, http = sdk
    vs, fid = await _stored(client)
    r = await http.post(f"/v1/vector_stores/{vs}/files/{fid}", json={"attributes": attributes})
    _refused(r, "attributes")
    other = await client.files.create(file=("b.txt", io.BytesIO(b"b")), purpose="assistants")
    r = await http.post(
        f"/v1/vector_stores/{vs}/files", json={"file_id": other.id, "attributes": attributes}
    )
    _refused(r, "attributes")
    kept = await client.vector_stores.files.retrieve(file_id=fid, vector_store_id=vs)
    assert kept.attributes == {"area": "north", "n": 3}
    assert [f.id async for f in client.vector_stores.files.list(vector_store_id=vs)] == [fid]


@pytest.mark.parametrize(
    "filters",
    [
        {"type": "eq", "key": "area", "value": "no\x00rth"},
        {"type": "eq", "key": "ar\x00ea", "value": "north"},
        {"type": "gt", "key": "n", "value": HUGE},
        {"type": "in", "key": "n", "value": [1, -HUGE]},
        {"type": "and", "filters": [{"type": "eq", "key": "area", "value": "\x00"}]},
    ],
    ids=["nul-value", "nul-key", "huge-number", "huge-in-list", "nested"],
)
async def test_a_bad_filter_is_a_400_and_a_good_one_still_finds_the_file(
    sdk: Any, filters: dict[str, Any]
) -> None:
    client, http = sdk
    vs, fid = await _stored(client)
    r = await http.post(
        f"/v1/vector_stores/{vs}/search", json={"query": "pump", "filters": filters}
    )
    _refused(r, "filters")
    assert r.json()["error"]["code"] == "invalid_filter"
    good = await client.vector_stores.search(
        vector_store_id=vs, query="pump", filters={"type": "gt", "key": "n", "value": 2}
    )
    assert [hit.file_id for hit in good.data] == [fid]


def _condition(names: list[str], op: str, value: object) -> dict[str, Any]:
    return {"conditions": [{"name": names, "comparison_operator": op, "value": value}]}


@pytest.mark.parametrize(
    "change",
    [
        {"query": "pu\x00mp"},
        {"knowledge_id": "kept\x00"},
        {"metadata_condition": _condition(["area"], "is", "no\x00rth")},
        {"metadata_condition": _condition(["ar\x00ea"], "is", "north")},
        {"metadata_condition": _condition(["n"], "=", HUGE)},
    ],
    ids=["query", "knowledge-id", "condition-value", "condition-name", "huge-number"],
)
async def test_dify_retrieval_refuses_a_nul_or_huge_value_with_its_400_and_still_answers(
    sdk: Any, change: dict[str, Any]
) -> None:
    client, http = sdk
    vs, _ = await _stored(client)
    body = {
        "knowledge_id": vs,
        "query": "reset the pump",
        "retrieval_setting": {"top_k": 2, "score_threshold": 0.0},
    }
    bad = await http.post("/retrieval", json={**body, **change})
    assert bad.status_code == 400, bad.text
    assert bad.json()["error_code"] == 400
    good = await http.post("/retrieval", json=body)
    assert good.status_code == 200 and "red button" in good.json()["records"][0]["content"]
