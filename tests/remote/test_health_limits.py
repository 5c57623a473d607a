"""Health checks read an upstream's /v1/models within max_health_bytes and within
health_timeout_s, the whole answer included: a huge or dribbling answer marks the upstream
down without being read whole. The upstreams are loopback servers counting what they sent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import FAKE_MODELS, asgi_client
from tests.kb.misbehaving import Misbehaving

HUGE = 100 << 20
MOST_SENT = 24 << 20  # socket buffers hold a few MiB past the cap; a whole read is 100 MiB


@pytest.fixture(scope="module")
def bad() -> Iterator[Misbehaving]:
    with Misbehaving(every_s=0.1, dribble_for_s=60.0, huge_bytes=HUGE) as server:
        yield server


def _settings(tmp: Path, url: str, **options: Any) -> Settings:
    remote = {
        "id": "far-chat",
        "kind": "chat",
        "engine": "remote",
        # One check, at start: the loop's next one is far away.
        "options": {"upstreams": [url], "health_interval_s": 3600, **options},
    }
    return Settings(
        models=[remote, *FAKE_MODELS], load_in_background=False, log_json=False, data_dir=tmp
    )


async def _upstream(tmp: Path, url: str, **options: Any) -> dict[str, Any]:
    async with asgi_client(create_app(_settings(tmp, url, **options))) as http:
        listed = (await http.get("/v1/models")).json()["data"]
    model = next(m for m in listed if m["id"] == "far-chat")
    (up,) = model["details"]["upstreams"]
    return dict(up)


async def test_a_huge_models_answer_marks_the_upstream_down_unread(
    bad: Misbehaving, tmp_path: Path
) -> None:
    up = await _upstream(tmp_path, f"{bad.base}/huge/v1", max_health_bytes=64 * 1024)
    assert up["healthy"] is False and "max_health_bytes" in up["last_error"]
    assert bad.settled("/huge/v1/models") < MOST_SENT


async def test_a_dribbling_models_answer_marks_the_upstream_down_at_the_health_timeout(
    bad: Misbehaving, tmp_path: Path
) -> None:
    started = time.monotonic()
    up = await _upstream(tmp_path, f"{bad.base}/dribble/v1", health_timeout_s=0.5)
    assert up["healthy"] is False and "health_timeout_s" in up["last_error"]
    assert time.monotonic() - started < 0.5 + 15.0  # generous; unbounded it takes a minute
    assert bad.settled("/dribble/v1/models") < 12 * 60 / 0.1
