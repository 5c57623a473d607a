"""The console's assets: served from the package without a key, cached, and gone when the
UI is off; the API calls it makes still need the key."""

from __future__ import annotations

from gateway.app import create_app
from tests.conftest import asgi_client, fake_settings


async def test_console_assets_are_open_and_cached_but_the_api_is_not() -> None:
    app = create_app(fake_settings(api_keys=["sk-ui"]))
    async with asgi_client(app) as http:
        r = await http.get("/", follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"] == "/ui/"
        page = await http.get("/ui/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert '<script src="/ui/app.js"' in page.text and "http" not in page.text.split("<body>")[
            0
        ].replace("http-equiv", "")
        js = await http.get("/ui/app.js")
        assert js.status_code == 200 and "max-age=300" in js.headers["cache-control"]
        assert (await http.get("/ui/../settings.py")).status_code == 404
        assert (await http.get("/v1/models")).status_code == 401
        ok = await http.get("/v1/models", headers={"Authorization": "Bearer sk-ui"})
        assert ok.status_code == 200


async def test_the_console_can_be_turned_off() -> None:
    app = create_app(fake_settings(ui={"enabled": False}))
    async with asgi_client(app) as http:
        assert (await http.get("/ui/")).status_code == 404
        assert (await http.get("/", follow_redirects=False)).status_code == 404


async def test_a_store_lists_its_jobs() -> None:
    app = create_app(fake_settings())
    async with asgi_client(app) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "jobs"})).json()["id"]
        assert (await http.get(f"/v1/vector_stores/{vs}/jobs")).json() == {
            "object": "list",
            "data": [],
        }
        job = (
            await http.post(f"/v1/vector_stores/{vs}/reembed", json={"model": "fake-embed"})
        ).json()
        listed = (await http.get(f"/v1/vector_stores/{vs}/jobs")).json()["data"]
        assert [j["id"] for j in listed] == [job["id"]] and listed[0]["kind"] == "reembed"
        missing = await http.get("/v1/vector_stores/vs_nope/jobs")
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "vector_store_id"


async def test_the_console_forbids_framing_sniffing_and_foreign_scripts() -> None:
    app = create_app(fake_settings())
    async with asgi_client(app) as http:
        for path in ("/ui/", "/ui/app.js", "/ui/app.css", "/ui/config.json"):
            r = await http.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["x-content-type-options"] == "nosniff"
        # The API itself is not the console: its JSON is not framed by a page policy.
        assert "content-security-policy" not in (await http.get("/health")).headers
