"""Files and Vector Stores answers validate against OpenAI's published OpenAPI document.

``tests/gateway/openai_spec/files_vector_stores.json`` holds the response schemas of
these paths (and the schemas they reference) cut from openai/openai-openapi; its
``source`` field names the commit. Extras the gateway adds (chunk counts, backends) are
allowed where the spec allows other properties; nulls and types the spec does not allow
are not.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from gateway.app import create_app
from tests.conftest import ROOT, asgi_client, fake_settings

pytestmark = pytest.mark.usefixtures("kb_backend")

SPEC = json.loads((ROOT / "tests/gateway/openai_spec/files_vector_stores.json").read_text())


def _check(response: httpx.Response, path: str) -> dict[str, Any]:
    """The answer's JSON, after checking it against the spec's schema for ``path``."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    schema = {"$ref": f"#/components/schemas/{SPEC['paths'][path]}", **SPEC}
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(body), key=lambda e: list(e.path)
    )
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    return body


async def _ingested(http: httpx.AsyncClient, vs: str, fid: str) -> httpx.Response:
    """The store file once its ingestion ended (a bounded wait)."""
    for _ in range(400):
        got = await http.get(f"/v1/vector_stores/{vs}/files/{fid}")
        if got.status_code != 200 or got.json()["status"] != "in_progress":
            return got
        await asyncio.sleep(0.05)
    raise AssertionError("the ingestion did not end in 20 s")


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(fake_settings(data_dir=str(tmp_path)))) as client:
        yield client


async def test_files_and_vector_stores_answers_match_the_published_spec(
    http: httpx.AsyncClient,
) -> None:
    upload = await http.post(
        "/v1/files",
        files={"file": ("pump.md", io.BytesIO(b"# Pump\nHold the red button to reset."))},
        data={"purpose": "assistants"},
    )
    fid = _check(upload, "POST /v1/files")["id"]
    _check(await http.get(f"/v1/files/{fid}"), "GET /v1/files/{file_id}")
    _check(await http.get("/v1/files"), "GET /v1/files")

    made = await http.post("/v1/vector_stores", json={"name": "docs", "metadata": {"k": "v"}})
    vs = _check(made, "POST /v1/vector_stores")["id"]
    bare = _check(await http.post("/v1/vector_stores", json={}), "POST /v1/vector_stores")
    _check(await http.get("/v1/vector_stores"), "GET /v1/vector_stores")
    _check(await http.get(f"/v1/vector_stores/{vs}"), "GET /v1/vector_stores/{vector_store_id}")
    renamed = await http.post(f"/v1/vector_stores/{vs}", json={"name": "manuals"})
    assert _check(renamed, "POST /v1/vector_stores/{vector_store_id}")["name"] == "manuals"

    attributes = {"year": 2024, "topic": "pumps", "draft": False, "score": 0.5}
    added = await http.post(
        f"/v1/vector_stores/{vs}/files", json={"file_id": fid, "attributes": attributes}
    )
    assert _check(added, "POST /v1/vector_stores/{vector_store_id}/files")["attributes"] == (
        attributes
    )
    got = await _ingested(http, vs, fid)
    body = _check(got, "GET /v1/vector_stores/{vector_store_id}/files/{file_id}")
    assert body["status"] == "completed", body
    assert body["attributes"]["year"] == 2024 and isinstance(body["attributes"]["year"], int)
    listed = _check(
        await http.get(f"/v1/vector_stores/{vs}/files"),
        "GET /v1/vector_stores/{vector_store_id}/files",
    )
    assert [f["attributes"] for f in listed["data"]] == [attributes]
    changed = {**attributes, "year": 2025}
    updated = await http.post(f"/v1/vector_stores/{vs}/files/{fid}", json={"attributes": changed})
    assert (
        _check(updated, "GET /v1/vector_stores/{vector_store_id}/files/{file_id}")["attributes"]
        == changed
    )
    found = await http.post(f"/v1/vector_stores/{vs}/search", json={"query": "reset"})
    assert found.status_code == 200 and found.json()["data"], found.text
    for hit in found.json()["data"]:
        assert hit["attributes"] == changed and isinstance(hit["attributes"]["year"], int)

    _check(
        await http.delete(f"/v1/vector_stores/{vs}/files/{fid}"),
        "DELETE /v1/vector_stores/{vector_store_id}/files/{file_id}",
    )
    _check(
        await http.delete(f"/v1/vector_stores/{bare['id']}"),
        "DELETE /v1/vector_stores/{vector_store_id}",
    )
    _check(await http.delete(f"/v1/files/{fid}"), "DELETE /v1/files/{file_id}")
