"""Outbound fetches end at their total deadline and their byte cap while the bytes arrive:
a page or a search provider that dribbles is cut at the deadline, a huge one at the cap,
without reading it all. The servers are loopback ones that count what they sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from kb.config import UrlFetchSettings
from kb.fetch import FetchError, fetch_url
from tests.conftest import asgi_client, fake_settings
from tests.kb.misbehaving import Misbehaving

HUGE = 100 << 20
CAP = 64 * 1024
# Loopback socket buffers hold a few MiB past what the client read; a whole read is 100 MiB.
MOST_SENT = 24 << 20
MARGIN_S = 15.0  # generous: the machine may be busy; the unbounded cases take a minute


@pytest.fixture(scope="module")
def bad() -> Iterator[Misbehaving]:
    with Misbehaving(every_s=0.2, dribble_for_s=60.0, huge_bytes=HUGE) as server:
        yield server


def _url_settings(**extra: Any) -> dict[str, Any]:
    return {"allow_private_networks": True, "timeout_s": 5, **extra}


async def test_a_dribbling_page_fails_its_urls_job_at_the_total_deadline(
    bad: Misbehaving, tmp_path: Path
) -> None:
    settings = fake_settings(
        data_dir=str(tmp_path),
        knowledge={"url": _url_settings(total_timeout_s=1.0)},
    )
    async with asgi_client(create_app(settings)) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "web"})).json()["id"]
        started = time.monotonic()
        r = await http.post(
            f"/v1/vector_stores/{vs}/urls", json={"url": f"{bad.base}/dribble/page"}
        )
        # A job: the answer comes before the page, with the file in progress.
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "in_progress"
        assert time.monotonic() - started < MARGIN_S
        file_id = r.json()["id"]
        while (done := (await http.get(f"/v1/vector_stores/{vs}/files/{file_id}")).json())[
            "status"
        ] == "in_progress":
            assert time.monotonic() - started < 1.0 + 10 * MARGIN_S
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        assert done["status"] == "failed"
        assert "total_timeout_s" in done["last_error"]["message"]
        assert "url_fetch_timeout" in done["last_error"]["message"]
        assert took < 1.0 + 2 * MARGIN_S
    # Every read came within timeout_s; only the total deadline could end it.
    assert bad.settled("/dribble/page") < 12 * 60 / 0.2


async def test_a_huge_page_is_cut_at_the_byte_cap_without_being_read(bad: Misbehaving) -> None:
    with pytest.raises(FetchError) as err:
        await fetch_url(f"{bad.base}/huge/page", UrlFetchSettings(**_url_settings(max_bytes=CAP)))
    assert err.value.code == "file_too_large"
    assert bad.settled("/huge/page") < MOST_SENT


def _search_knowledge(base: str, **web: Any) -> dict[str, Any]:
    return {"web_search": {"provider": "searxng", "url": base, "timeout_s": 5, **web}}


async def _failed_search(http: httpx.AsyncClient) -> tuple[dict[str, Any], float]:
    vs = (await http.post("/v1/vector_stores", json={"name": "web"})).json()["id"]
    started = time.monotonic()
    r = await http.post(f"/v1/vector_stores/{vs}/web_search", json={"query": "pumps"})
    assert r.status_code == 200, r.text
    job = r.json()["id"]
    for _ in range(2400):
        body: dict[str, Any] = (await http.get(f"/v1/vector_stores/{vs}/jobs/{job}")).json()
        if body["status"] != "in_progress":
            return body, time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError("the job did not finish")


async def test_a_dribbling_search_provider_fails_the_job_at_its_total_deadline(
    bad: Misbehaving, tmp_path: Path
) -> None:
    knowledge = _search_knowledge(f"{bad.base}/dribble", total_timeout_s=1.0)
    app = create_app(fake_settings(data_dir=str(tmp_path), knowledge=knowledge))
    async with asgi_client(app) as http:
        job, took = await _failed_search(http)
    assert job["status"] == "failed" and "total_timeout_s" in job["error"]
    assert took < 1.0 + MARGIN_S


async def test_a_huge_search_answer_fails_the_job_at_the_byte_cap_unread(
    bad: Misbehaving, tmp_path: Path
) -> None:
    knowledge = _search_knowledge(f"{bad.base}/huge", max_response_bytes=CAP)
    app = create_app(fake_settings(data_dir=str(tmp_path), knowledge=knowledge))
    async with asgi_client(app) as http:
        job, _ = await _failed_search(http)
    assert job["status"] == "failed" and "max_response_bytes" in job["error"]
    assert bad.settled("/huge/search") < MOST_SENT


async def test_a_dribbling_result_page_is_a_failed_result_of_the_search_job(
    bad: Misbehaving, tmp_path: Path
) -> None:
    knowledge = {
        **_search_knowledge(f"{bad.base}/lists"),
        "url": _url_settings(total_timeout_s=1.0),
    }
    app = create_app(fake_settings(data_dir=str(tmp_path), knowledge=knowledge))
    async with asgi_client(app) as http:
        job, took = await _failed_search(http)
    assert job["status"] == "failed" and job["total"] == 1
    (failure,) = job["details"]["failed"]
    assert failure["url"] == f"{bad.base}/dribble/listed"
    assert "total_timeout_s" in failure["error"]
    assert took < 1.0 + MARGIN_S
