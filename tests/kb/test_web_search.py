"""Web-search ingestion against a fake SearXNG and fake pages on loopback (reachable only
because the tests allow loopback): the HTTP job, the MCP tool and the CLI command; no
provider is a clear 400."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from mcp.client import Client

from gateway.app import create_app
from gateway.cli import main
from gateway.compose import mcp_server
from tests.conftest import FAKE_MODELS, asgi_client, fake_settings

PAGES = {
    "/pump": "<html><head><title>Pump</title></head><body><p>Hold the red button for ten "
    "seconds to reset the water pump.</p></body></html>",
    "/valve": "<html><head><title>Valve</title></head><body><p>Turn the blue valve "
    "clockwise to close the inlet.</p></body></html>",
}


class _Handler(BaseHTTPRequestHandler):
    queries: list[str] = []

    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        url = urlparse(self.path)
        port = self.server.server_address[1]
        if url.path == "/search":
            q = parse_qs(url.query)
            assert q["format"] == ["json"]
            self.queries.append(q["q"][0])
            results = [
                {"url": f"http://localhost:{port}/pump", "title": "Pump"},
                {"url": f"http://localhost:{port}/missing", "title": "Gone"},
                {"url": f"http://localhost:{port}/valve", "title": "Valve"},
            ]
            body = json.dumps({"query": q["q"][0], "results": results}).encode()
            ctype = "application/json"
        elif url.path in PAGES:
            body, ctype = PAGES[url.path].encode(), "text/html"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def searx() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _knowledge(searx: str) -> dict[str, Any]:
    return {
        "web_search": {"provider": "searxng", "url": searx},
        "url": {"allowed_hosts": ["localhost"], "timeout_s": 5},
    }


async def _finished(http: Any, vs: str, job: str) -> dict[str, Any]:
    for _ in range(300):
        body: dict[str, Any] = (await http.get(f"/v1/vector_stores/{vs}/jobs/{job}")).json()
        if body["status"] != "in_progress":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("the job did not finish")


async def test_web_search_ingests_results_as_a_job(searx: str, tmp_path: Path) -> None:
    app = create_app(fake_settings(data_dir=str(tmp_path), knowledge=_knowledge(searx)))
    async with asgi_client(app) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "web"})).json()["id"]
        r = await http.post(
            f"/v1/vector_stores/{vs}/web_search",
            json={"query": "reset water pump", "max_results": 3, "attributes": {"team": "ops"}},
        )
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["kind"] == "web_search" and job["status"] == "in_progress"
        done = await _finished(http, vs, job["id"])
        assert done["status"] == "completed" and done["progress"] == 3 == done["total"]
        assert "1 of 3 results could not be fetched" in done["error"]
        (failure,) = done["details"]["failed"]
        assert failure["url"].endswith("/missing")
        await app.state.ctx.kb.drain()
        files = (await http.get(f"/v1/vector_stores/{vs}/files")).json()["data"]
        assert len(files) == 2 and all(f["status"] == "completed" for f in files)
        attrs = sorted((f["attributes"]["url"], f["attributes"]["query"]) for f in files)
        assert [a[0].rsplit("/", 1)[1] for a in attrs] == ["pump", "valve"]
        assert {a[1] for a in attrs} == {"reset water pump"}
        assert all(f["attributes"]["team"] == "ops" for f in files)
        found = await http.post(f"/v1/vector_stores/{vs}/search", json={"query": "red button"})
        assert "red button" in found.json()["data"][0]["content"][0]["text"]
        bad = await http.post(
            f"/v1/vector_stores/{vs}/web_search", json={"query": "x", "max_results": 99}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_results"
        blank = await http.post(f"/v1/vector_stores/{vs}/web_search", json={"query": "   "})
        assert blank.status_code == 400 and blank.json()["error"]["param"] == "query"
        missing = await http.post("/v1/vector_stores/vs_nope/web_search", json={"query": "x"})
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "invalid_request_error"


async def test_without_a_provider_web_search_is_a_clear_400(tmp_path: Path) -> None:
    app = create_app(fake_settings(data_dir=str(tmp_path)))
    async with asgi_client(app) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "web"})).json()["id"]
        r = await http.post(f"/v1/vector_stores/{vs}/web_search", json={"query": "pumps"})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "web_search_not_configured"
        assert "knowledge.web_search.provider" in err["message"]


async def test_the_mcp_tool_and_the_cli(
    searx: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = fake_settings(
        data_dir=str(tmp_path / "mcp"),
        knowledge=_knowledge(searx),
        mcp={"allow_writes": True, "writable_stores": ["web"]},
    )
    app = create_app(settings)
    async with asgi_client(app):
        ctx = app.state.ctx
        await ctx.kb.create_store("web")
        async with Client(mcp_server(ctx)) as client:
            res = await client.call_tool(
                "web_search_ingest", {"vector_store": "web", "query": "valve"}
            )
            assert not res.is_error, res
            out = res.structured_content
            assert out["status"] == "completed" and len(out["files"]) == 2 and out["failed"] == 1


def test_the_cli(searx: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "models": FAKE_MODELS,
                "data_dir": str(tmp_path / "cli"),
                "knowledge": _knowledge(searx),
            }
        )
    )
    assert main(["kb", "create", "web", "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert (
        main(["kb", "web-search", "web", "close the inlet", "--quiet", "--config", str(cfg)]) == 0
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["status"] == "completed" and len(line["files"]) == 2
    assert "close the inlet" in _Handler.queries
