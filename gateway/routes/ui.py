"""The knowledge console: static assets under /ui (shipped in the package, no CDN) and a
redirect from /. The console calls the public API only, with the key the user gives it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["STATIC", "routes"]

from litestar import get
from litestar.datastructures import CacheControlHeader
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"


@get("/", include_in_schema=False, sync_to_thread=False)
def root() -> Redirect:
    return Redirect("/ui/", status_code=302)


def routes(cache_max_age_s: int) -> list[Any]:
    assets = create_static_files_router(
        path="/ui",
        directories=[str(STATIC)],
        html_mode=True,
        include_in_schema=False,
        name="ui",
        cache_control=CacheControlHeader(max_age=cache_max_age_s),
    )
    return [root, assets]
