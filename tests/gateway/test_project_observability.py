"""The access log and /metrics name each request's project, from a real `rwkv-rag serve`
process; neither ever carries a key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import FAKE_MODELS, RunningServer, start_server, stop_server

ALICE, ROOT = "sk-obs-alice-7f3a", "sk-obs-root-91c2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = {
        "models": FAKE_MODELS,
        "auth": {
            "keys": [
                {"key": ALICE, "project": "team-a"},
                {"key": ROOT, "project": "ops", "role": "admin"},
            ]
        },
    }
    srv = start_server(config, tmp_path_factory.mktemp("observability"))
    yield srv
    stop_server(srv)


def _get(server: RunningServer, path: str, key: str | None, **headers: str) -> httpx.Response:
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.get(server.base_url + path, headers=headers, timeout=30)


def _access(server: RunningServer) -> dict[str, dict[str, object]]:
    records = [
        json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")
    ]
    return {
        str(r["request_id"]): r
        for r in records
        if r["logger"] == "gateway.access" and "request_id" in r
    }


def test_the_access_log_names_the_project_and_never_the_key(server: RunningServer) -> None:
    assert _get(server, "/v1/models", ALICE, **{"X-Request-Id": "obs-alice"}).status_code == 200
    narrowed = _get(
        server, "/v1/models", ROOT, **{"X-Request-Id": "obs-root-b", "OpenAI-Project": "team-b"}
    )
    assert narrowed.status_code == 200
    assert _get(server, "/v1/models", ROOT, **{"X-Request-Id": "obs-root"}).status_code == 200
    assert _get(server, "/v1/models", "sk-wrong", **{"X-Request-Id": "obs-bad"}).status_code == 401
    lines = _access(server)
    assert lines["obs-alice"]["project"] == "team-a"
    assert lines["obs-root-b"]["project"] == "team-b"
    assert lines["obs-root"]["project"] == "ops"
    # A refused key ran as no project at all.
    assert lines["obs-bad"]["project"] is None and lines["obs-bad"]["status"] == 401
    text = server.log.read_text()
    for key in (ALICE, ROOT, "sk-wrong"):
        assert key not in text
        assert hashlib.sha256(key.encode()).hexdigest()[:16] not in text


def test_metrics_count_requests_by_project_with_unknown_names_as_other(
    server: RunningServer,
) -> None:
    for _ in range(2):
        assert _get(server, "/v1/models", ALICE).status_code == 200
    assert _get(server, "/v1/models", ROOT, **{"OpenAI-Project": "made-up-1"}).status_code == 200
    assert _get(server, "/v1/models", ROOT, **{"OpenAI-Project": "made-up-2"}).status_code == 200
    text = _get(server, "/metrics", ROOT).text

    def count(project: str) -> float:
        name = (
            f'rwkv_rag_requests_total{{method="GET",project="{project}",'
            f'route="/v1/models",status="200"}}'
        )
        found = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
        assert found, f"{name} missing from /metrics"
        return float(found[0].split()[-1])

    assert count("team-a") >= 2
    # Names an admin narrows to outside the configuration share one label value.
    assert count("other") >= 2
    assert "made-up" not in text
    for key in (ALICE, ROOT):
        assert key not in text
