"""Two real `rwkv-rag serve` replicas on one PostgreSQL: writes through one are seen by
the other at once, and when one is killed (-9) in the middle of a 20-file batch the
other finishes it after the lease: every file ends completed or failed with a reason,
with the same chunks as a clean run and none duplicated."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import MINILM, RunningServer, new_database, start_server, stop_server

WORDS = [
    "pump",
    "valve",
    "filter",
    "pressure",
    "reset",
    "button",
    "light",
    "water",
    "tank",
    "motor",
    "sensor",
    "alarm",
    "cable",
    "fuse",
    "relay",
    "panel",
    "screen",
    "battery",
    "charger",
    "manual",
    "warranty",
    "refund",
    "invoice",
    "shipping",
    "museum",
    "ticket",
    "train",
    "airport",
    "station",
    "platform",
    "schedule",
    "delay",
]


def _config(dsn: str, data: Path) -> dict[str, Any]:
    return {
        "models": [MINILM],
        "data_dir": str(data),
        "log_json": False,
        "knowledge": {
            "backend": "postgres",
            "postgres": {"dsn": dsn},
            "lease_s": 3.0,
            "poll_interval_s": 0.2,
        },
    }


@pytest.fixture
def replicas(pg_server: Any, tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer, str]]:
    dsn = new_database(pg_server)
    env_before = {
        k: os.environ.pop(k) for k in list(os.environ) if k.startswith("RWKV_RAG_KNOWLEDGE")
    }
    runs = [tmp_path / "a-run", tmp_path / "b-run"]
    for r in runs:
        r.mkdir()
    a = start_server(_config(dsn, tmp_path / "a"), runs[0])
    b = start_server(_config(dsn, tmp_path / "b"), runs[1])
    try:
        yield a, b, dsn
    finally:
        for s in (a, b):
            if s.proc.poll() is None:
                stop_server(s)
        os.environ.update(env_before)


def _upload(http: httpx.Client, name: str, text: str) -> str:
    r = http.post(
        "/v1/files", files={"file": (name, text.encode())}, data={"purpose": "assistants"}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _wait(http: httpx.Client, vs: str, fid: str, timeout: float = 60) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        f = http.get(f"/v1/vector_stores/{vs}/files/{fid}").json()
        if f["status"] != "in_progress":
            return dict(f)
        time.sleep(0.2)
    raise AssertionError(f"{fid} still in progress")


def test_writes_through_one_replica_are_read_through_the_other(replicas: Any) -> None:
    a, b, _ = replicas
    with (
        httpx.Client(base_url=a.base_url, timeout=30) as ha,
        httpx.Client(base_url=b.base_url, timeout=30) as hb,
    ):
        vs = ha.post("/v1/vector_stores", json={"name": "shared"}).json()["id"]
        fid = _upload(
            ha, "pump.md", "To reset the water pump, hold the red button for ten seconds."
        )
        assert ha.post(f"/v1/vector_stores/{vs}/files", json={"file_id": fid}).status_code == 200
        assert _wait(hb, vs, fid)["status"] == "completed"
        # B lists and searches what A wrote; the file's bytes are readable on B too.
        assert [s["id"] for s in hb.get("/v1/vector_stores").json()["data"]] == [vs]
        hits = hb.post(f"/v1/vector_stores/{vs}/search", json={"query": "reset the pump"}).json()
        assert hits["data"][0]["file_id"] == fid and hits["data"][0]["score"] >= 0.5
        assert b"red button" in hb.get(f"/v1/files/{fid}/content").content
        # Deleted through B: A stops returning it at once.
        assert hb.delete(f"/v1/vector_stores/{vs}/files/{fid}").status_code == 200
        assert (
            ha.post(f"/v1/vector_stores/{vs}/search", json={"query": "reset the pump"}).json()[
                "data"
            ]
            == []
        )
        assert ha.get(f"/v1/vector_stores/{vs}").json()["chunk_count"] == 0


def test_a_replica_killed_mid_batch_is_taken_over(replicas: Any) -> None:
    a, b, dsn = replicas
    rng = random.Random(5)
    texts = {
        f"doc{i:02d}.md": "\n".join(
            f"{' '.join(rng.choice(WORDS) for _ in range(14))} (doc {i} line {j})."
            for j in range(120)
        )
        for i in range(20)
    }
    strategy = {
        "type": "static",
        "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0},
    }
    with (
        httpx.Client(base_url=a.base_url, timeout=60) as ha,
        httpx.Client(base_url=b.base_url, timeout=60) as hb,
    ):
        ids = [_upload(ha, name, text) for name, text in texts.items()]
        vs = ha.post("/v1/vector_stores", json={"name": "batch"}).json()["id"]
        batch = ha.post(
            f"/v1/vector_stores/{vs}/file_batches",
            json={"file_ids": ids, "chunking_strategy": strategy},
        ).json()
        # Kill A once it is busy: some chunks stored, the batch not finished.
        end = time.monotonic() + 60
        while time.monotonic() < end:
            counts = hb.get(f"/v1/vector_stores/{vs}/file_batches/{batch['id']}").json()[
                "file_counts"
            ]
            if (
                hb.get(f"/v1/vector_stores/{vs}").json()["chunk_count"] > 0
                and counts["in_progress"] >= 5
            ):
                break
            time.sleep(0.05)
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(timeout=10)
        end = time.monotonic() + 180
        status = ""
        while time.monotonic() < end:
            got = hb.get(f"/v1/vector_stores/{vs}/file_batches/{batch['id']}").json()
            status = got["status"]
            if status != "in_progress":
                break
            time.sleep(0.5)
        assert status == "completed", got
        files = hb.get(f"/v1/vector_stores/{vs}/files", params={"limit": 100}).json()["data"]
        assert len(files) == 20
        for f in files:
            assert f["status"] == "completed" or (
                f["status"] == "failed" and f["last_error"]["message"]
            ), f
        # A clean run of the same files through B alone.
        clean = hb.post("/v1/vector_stores", json={"name": "clean"}).json()["id"]
        cb = hb.post(
            f"/v1/vector_stores/{clean}/file_batches",
            json={"file_ids": ids, "chunking_strategy": strategy},
        ).json()
        end = time.monotonic() + 180
        while (
            time.monotonic() < end
            and hb.get(f"/v1/vector_stores/{clean}/file_batches/{cb['id']}").json()["status"]
            == "in_progress"
        ):
            time.sleep(0.5)
        clean_files = {
            f["id"]: f
            for f in hb.get(f"/v1/vector_stores/{clean}/files", params={"limit": 100}).json()[
                "data"
            ]
        }
        assert all(f["status"] == "completed" for f in clean_files.values())
        for f in files:
            if f["status"] == "completed":
                assert f["chunk_count"] == clean_files[f["id"]]["chunk_count"], f["id"]
        if all(f["status"] == "completed" for f in files):
            assert (
                hb.get(f"/v1/vector_stores/{vs}").json()["chunk_count"]
                == hb.get(f"/v1/vector_stores/{clean}").json()["chunk_count"]
            )
    with psycopg.connect(dsn) as conn:
        dupes = conn.execute(
            "SELECT collection_id, content_hash FROM chunks GROUP BY 1, 2 HAVING count(*) > 1"
        ).fetchall()
        assert dupes == []
        refs = conn.execute(
            "SELECT chunk_id, file_id FROM chunk_refs GROUP BY 1, 2 HAVING count(*) > 1"
        ).fetchall()
        assert refs == []
        taken = conn.execute(
            "SELECT count(*) FROM vector_store_files WHERE collection_id = %s AND attempts > 1",
            (vs,),
        ).fetchone()
        assert taken is not None and taken[0] >= 1  # at least one job was taken over from A
