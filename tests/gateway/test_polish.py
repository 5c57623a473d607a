"""What a new user meets first: JSON logs with an access log and request ids, offline API
docs, a per-user data directory, store names wherever ids go, integer attributes kept,
and clear errors for bad settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from gateway.cli import main
from gateway.settings import Settings, default_data_dir
from tests.conftest import RunningServer, asgi_client, fake_settings


def test_the_real_server_logs_json_lines_with_an_access_log(fake_server: RunningServer) -> None:
    r = httpx.post(
        f"{fake_server.base_url}/v1/embeddings",
        json={"model": "fake-embed", "input": "hello"},
        headers={"X-Request-Id": "req-123", "Authorization": "Bearer secret-key"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-123"
    generated = httpx.get(f"{fake_server.base_url}/v1/models").headers["x-request-id"]
    assert len(generated) == 32
    lines = [ln for ln in fake_server.log.read_text().splitlines() if ln.startswith("{")]
    records = [json.loads(ln) for ln in lines]
    access = [r for r in records if r["logger"] == "gateway.access"]
    hit = next(a for a in access if a.get("request_id") == "req-123")
    assert hit["method"] == "POST" and hit["path"] == "/v1/embeddings" and hit["status"] == 200
    assert hit["model"] == "fake-embed" and hit["duration_ms"] >= 0
    # The model loaded lines name the model; nothing logs the body or the key.
    assert any("fake-embed" in r["msg"] for r in records if "loaded" in r["msg"])
    text = fake_server.log.read_text()
    assert "secret-key" not in text and '"hello"' not in text


async def test_swagger_ui_is_served_offline(client: AsyncTestClient[Any]) -> None:
    page = await client.get("/schema/swagger")
    assert page.status_code == 200
    assert "/schema/assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower() and "unpkg" not in page.text.lower()
    js = await client.get("/schema/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000


def test_data_dir_defaults_to_the_per_user_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RWKV_RAG_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "rwkv-rag"
    assert Settings().data_dir == tmp_path / "rwkv-rag"


async def test_a_store_name_works_wherever_an_id_does(tmp_path: Path) -> None:
    app = create_app(fake_settings(data_dir=str(tmp_path)))
    async with asgi_client(app) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "manuals"})).json()["id"]
        fid = (
            await http.post(
                "/v1/files",
                files={"file": ("a.md", b"The pump resets with the red button.")},
                data={"purpose": "assistants"},
            )
        ).json()["id"]
        attrs = {"year": 2024, "ratio": 0.5, "team": "ops", "ok": True}
        r = await http.post(
            "/v1/vector_stores/manuals/files", json={"file_id": fid, "attributes": attrs}
        )
        assert r.status_code == 200 and r.json()["vector_store_id"] == vs
        await app.state.ctx.kb.drain()
        found = await http.post("/v1/vector_stores/manuals/search", json={"query": "pump"})
        assert found.status_code == 200 and found.json()["data"][0]["file_id"] == fid
        # Integers stay integers, in the file object and in search results alike.
        raw = (await http.get(f"/v1/vector_stores/manuals/files/{fid}")).text
        assert '"year":2024' in raw.replace(" ", "") and isinstance(
            json.loads(raw)["attributes"]["year"], int
        )
        assert isinstance(found.json()["data"][0]["attributes"]["year"], int)
        assert (await http.get("/v1/vector_stores/manuals")).json()["id"] == vs
        await http.post("/v1/vector_stores", json={"name": "manuals"})
        dup = await http.get("/v1/vector_stores/manuals")
        assert dup.status_code == 400 and dup.json()["error"]["param"] == "vector_store_id"


def test_a_bad_setting_is_a_clear_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "models": [{"id": "c", "kind": "chat", "engine": "fake"}],
                "profiles": [
                    {"id": "p", "model": "c", "vector_store_ids": ["x"], "no_answer": "shrug"}
                ],
            }
        )
    )
    assert main(["kb", "ls", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err and "profiles.0.no_answer" in err
    assert "Traceback" not in err


async def test_the_no_answer_reply_is_a_setting(tmp_path: Path) -> None:
    settings = fake_settings(data_dir=str(tmp_path), rag={"no_answer_message": "Nichts gefunden."})
    app = create_app(settings)
    rag = app.state.ctx.rag
    k = rag.knowledge_for("any", rag_request(["vs_x"]))
    assert k is not None and k.no_answer_message == "Nichts gefunden."


def rag_request(ids: list[str]) -> Any:
    from rag.service import KnowledgeRequest

    return KnowledgeRequest(vector_store_ids=tuple(ids))
