"""The knowledge console: static assets under /ui (shipped in the package, no CDN), what
the console can offer on this gateway (/ui/config.json) and a redirect from /. Otherwise
the console calls the public API only, with the key the user gives it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["SECURITY_HEADERS", "STATIC", "routes"]

from litestar import get
from litestar.datastructures import CacheControlHeader, State
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from gateway.state import ctx_of

STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"
# The settings that turn web-search ingestion on (kb/config.py, WebSearchSettings).
WEB_SEARCH_SETTINGS = ["knowledge.web_search.provider", "knowledge.web_search.url"]
# The console runs only its own files and talks only to this gateway: no inline script or
# style, no framing (clickjacking), no content-type guessing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


@get("/", include_in_schema=False, sync_to_thread=False)
def root() -> Redirect:
    return Redirect("/ui/", status_code=302)


@get("/ui/config.json", include_in_schema=False, sync_to_thread=False)
def console_config(state: State) -> dict[str, Any]:
    """Which optional features this gateway has, so the console offers only those (and
    names the setting that turns each one on). Loads without a key, like the page."""
    web = ctx_of(state).settings.knowledge.web_search
    return {
        "web_search": {
            "enabled": web.provider is not None and bool(web.url),
            "settings": WEB_SEARCH_SETTINGS,
        }
    }


def routes(cache_max_age_s: int) -> list[Any]:
    assets = create_static_files_router(
        path="/ui",
        directories=[str(STATIC)],
        html_mode=True,
        include_in_schema=False,
        name="ui",
        cache_control=CacheControlHeader(max_age=cache_max_age_s),
    )
    return [root, console_config, assets]
