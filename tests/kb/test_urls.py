"""URL ingestion: fetch, extract, and refuse non-public addresses (SSRF), redirects too."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from kb.config import UrlFetchSettings
from kb.fetch import FetchError, fetch_url
from tests.conftest import asgi_client, fake_settings

PAGE = (
    b"<html><head><title>Lighthouse log</title><style>.x{}</style></head><body>"
    b"<nav>Home</nav><article><p>The lighthouse keeper sounds the fog horn at dusk.</p>"
    b"</article><script>track()</script></body></html>"
)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        port = self.server.server_address[1]
        routes: dict[str, tuple[int, dict[str, str], bytes]] = {
            "/page": (200, {"Content-Type": "text/html; charset=utf-8"}, PAGE),
            "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
            "/to-loopback": (302, {"Location": f"http://127.0.0.1:{port}/page"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/big": (200, {"Content-Type": "text/plain"}, b"x" * 50_000),
            "/pdf": (200, {"Content-Type": "application/octet-stream"}, b"%PDF-1.4 broken"),
        }
        status, headers, body = routes.get(self.path, (404, {}, b"nope"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def site() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost/",
        "http://100.64.0.1/",
        "file:///etc/passwd",
    ],
)
async def test_private_and_odd_urls_are_refused(url: str) -> None:
    with pytest.raises(FetchError) as err:
        await fetch_url(url, UrlFetchSettings(timeout_s=2))
    assert err.value.code in ("url_not_allowed", "invalid_url")


async def test_redirects_are_checked_at_every_hop(site: int) -> None:
    # The first hop is allowed by name; the redirect target is not.
    allowed = UrlFetchSettings(allowed_hosts=["localhost"], timeout_s=2)
    got = await fetch_url(f"http://localhost:{site}/page", allowed)
    assert b"fog horn" in got.body and got.content_type.startswith("text/html")  # type: ignore[union-attr]
    for path in ("/to-metadata", "/to-loopback"):
        with pytest.raises(FetchError) as err:
            await fetch_url(f"http://localhost:{site}{path}", allowed)
        assert err.value.code == "url_not_allowed"
    with pytest.raises(FetchError, match="redirects"):
        await fetch_url(f"http://localhost:{site}/loop", allowed)
    with pytest.raises(FetchError) as err:
        await fetch_url(
            f"http://localhost:{site}/big",
            UrlFetchSettings(allowed_hosts=["localhost"], max_bytes=10_000),
        )
    assert err.value.code == "file_too_large"


async def test_ingest_url_endpoint(site: int, tmp_path: Path) -> None:
    settings = fake_settings(
        data_dir=str(tmp_path), knowledge={"url": {"allow_private_networks": True, "timeout_s": 5}}
    )
    async with asgi_client(create_app(settings)) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "web"})).json()
        r = await http.post(
            f"/v1/vector_stores/{vs['id']}/urls",
            json={"url": f"http://127.0.0.1:{site}/page", "attributes": {"kind": "web"}},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "vector_store.file"
        assert body["attributes"] == {"url": f"http://127.0.0.1:{site}/page", "kind": "web"}
        done = await _wait(http, vs["id"], body["id"])
        assert done["status"] == "completed"
        hits = (
            await http.post(f"/v1/vector_stores/{vs['id']}/search", json={"query": "fog horn"})
        ).json()["data"]
        assert "fog horn" in hits[0]["content"][0]["text"]
        assert "track()" not in hits[0]["content"][0]["text"]
        # Sniffed as PDF despite its content type, and failed clearly.
        r = await http.post(
            f"/v1/vector_stores/{vs['id']}/urls", json={"url": f"http://127.0.0.1:{site}/pdf"}
        )
        failed = await _wait(http, vs["id"], r.json()["id"])
        assert failed["status"] == "failed" and "PDF" in failed["last_error"]["message"]

    # The default refuses loopback with a 400 naming the reason, and stores nothing.
    async with asgi_client(create_app(fake_settings(data_dir=str(tmp_path / "b")))) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "web"})).json()
        r = await http.post(
            f"/v1/vector_stores/{vs['id']}/urls", json={"url": f"http://127.0.0.1:{site}/page"}
        )
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "url_not_allowed" and err["param"] == "url"
        assert (await http.get(f"/v1/vector_stores/{vs['id']}/files")).json()["data"] == []
        # A name is resolved by the job: the file fails with the reason, its content empty.
        r = await http.post(
            f"/v1/vector_stores/{vs['id']}/urls", json={"url": f"http://localhost:{site}/page"}
        )
        assert r.status_code == 200 and r.json()["status"] == "in_progress"
        failed = await _wait(http, vs["id"], r.json()["id"])
        assert failed["status"] == "failed"
        assert "url_not_allowed" in failed["last_error"]["message"]
        assert failed["last_error"]["code"] == "invalid_file"


async def _wait(http: httpx.AsyncClient, vs_id: str, file_id: str) -> dict[str, Any]:
    import asyncio

    for _ in range(200):
        row = (await http.get(f"/v1/vector_stores/{vs_id}/files/{file_id}")).json()
        if row["status"] != "in_progress":
            return row
        await asyncio.sleep(0.05)
    raise AssertionError("ingestion did not finish")
