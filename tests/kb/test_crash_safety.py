"""kill -9 during ingestion on a real server: nothing completed is lost, the index agrees
with SQLite after restart, and the interrupted job finishes (or fails with a reason)."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import faiss
import httpx
import numpy as np
import pytest

from kb.service import KnowledgeBase
from tests.conftest import start_server, stop_server

MODELS = [
    {
        "id": "fake-embed",
        "kind": "embedding",
        "engine": "fake",
        "options": {"dimensions": 32, "delay_ms": 40},
    }
]


def _config(data: Path) -> dict[str, Any]:
    return {
        "models": MODELS,
        "data_dir": str(data),
        "log_json": False,
        "knowledge": {"embed_batch_size": 4},
    }


def _big_text(n: int) -> str:
    return "\n\n".join(
        " ".join(f"w{p}x{i}" for i in range(60)) + f". Paragraph {p} ends here." for p in range(n)
    )


def _wait(http: httpx.Client, vs: str, fid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = http.get(f"/v1/vector_stores/{vs}/files/{fid}").json()
        if row["status"] != "in_progress":
            return row
        time.sleep(0.05)
    raise AssertionError(f"{fid} still in progress")


def test_kill_9_mid_ingestion_then_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    strategy = {
        "type": "static",
        "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0},
    }
    server = start_server(_config(data), tmp_path)
    http = httpx.Client(base_url=server.base_url, timeout=10)
    try:
        vs = http.post(
            "/v1/vector_stores", json={"name": "crash", "chunking_strategy": strategy}
        ).json()["id"]
        small = http.post(
            "/v1/files",
            files={"file": ("small.txt", b"The small file is done.")},
            data={"purpose": "assistants"},
        ).json()["id"]
        http.post(f"/v1/vector_stores/{vs}/files", json={"file_id": small})
        assert _wait(http, vs, small)["status"] == "completed"
        big = http.post(
            "/v1/files",
            files={"file": ("big.txt", _big_text(120).encode())},
            data={"purpose": "assistants"},
        ).json()["id"]
        http.post(f"/v1/vector_stores/{vs}/files", json={"file_id": big})
        deadline = time.monotonic() + 30
        while http.get(f"/v1/vector_stores/{vs}").json()["chunk_count"] < 20:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
    finally:
        http.close()
        if server.proc.poll() is None:
            server.proc.kill()
    row = (
        sqlite3.connect(data / "kb" / "kb.sqlite")
        .execute("SELECT status, attempts FROM vector_store_files WHERE file_id = ?", (big,))
        .fetchone()
    )
    assert row[0] == "in_progress"

    server = start_server(_config(data), tmp_path)
    http = httpx.Client(base_url=server.base_url, timeout=10)
    try:
        assert http.get(f"/v1/vector_stores/{vs}/files/{small}").json()["status"] == "completed"
        done = _wait(http, vs, big)
        assert done["status"] == "completed", done
        chunks = http.get(
            f"/v1/vector_stores/{vs}/files/{big}/chunks", params={"limit": 1000}
        ).json()["data"]
        # Resumed, not duplicated: every position once, in order, and all 120 paragraphs there.
        assert [c["position"] for c in chunks] == list(range(len(chunks)))
        text = " ".join(c["text"] for c in chunks)
        assert all(f"Paragraph {p} ends" in text for p in range(120))
        hits = http.post(
            f"/v1/vector_stores/{vs}/search", json={"query": "small file done"}
        ).json()["data"]
        assert hits[0]["file_id"] == small
    finally:
        http.close()
        stop_server(server)
    # After a clean stop the saved FAISS index holds exactly SQLite's chunk ids.
    db = sqlite3.connect(data / "kb" / "kb.sqlite")
    ids = {r[0] for r in db.execute("SELECT id FROM chunks WHERE collection_id = ?", (vs,))}
    index = faiss.read_index(str(data / "kb" / "indexes" / f"{vs}.faiss"))
    assert set(faiss.vector_to_array(index.id_map).tolist()) == ids


class _Provider:
    def tokenizer(self, model: str) -> Any:
        from engines.fake import FakeTokenizer

        return FakeTokenizer(512)

    def dimensions(self, model: str) -> int:
        return 8

    def max_tokens(self, model: str) -> int | None:
        return None

    async def embed(self, model: str, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        return np.ones((len(texts), 8), np.float32) / np.sqrt(8), [1] * len(texts)


async def test_a_job_interrupted_too_often_fails_with_the_reason(tmp_path: Path) -> None:
    kb = KnowledgeBase.open_sqlite(tmp_path, _Provider())
    cid = (await kb.create_store("x", "m")).id
    row = await kb.add_file_bytes(b"some text", "a.txt")
    await kb.attach(cid, row.id)
    kb.backend.set_attempts(cid, row.id, kb.settings.max_job_attempts)
    await kb.start()
    try:
        done = await kb.wait_file(cid, row.id, timeout=10)
    finally:
        await kb.stop()
        kb.close()
    assert done.status == "failed" and done.last_error is not None
    assert "interrupted 3 times" in done.last_error.message


@pytest.mark.parametrize("missing", [True, False])
async def test_a_resumed_job_whose_bytes_are_gone_fails_clearly(
    tmp_path: Path, missing: bool
) -> None:
    kb = KnowledgeBase.open_sqlite(tmp_path, _Provider())
    cid = (await kb.create_store("x", "m")).id
    row = await kb.add_file_bytes(b"some text here", "a.txt")
    await kb.attach(cid, row.id)
    if missing:
        (tmp_path / "files" / row.id).unlink()
    await kb.start()
    try:
        done = await kb.wait_file(cid, row.id, timeout=10)
    finally:
        await kb.stop()
        kb.close()
    assert done.status == ("failed" if missing else "completed")
    if missing:
        assert done.last_error is not None and "missing" in done.last_error.message
