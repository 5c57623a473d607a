"""A full disk: uploads answer 507 ``insufficient_storage`` in the OpenAI shape, ingestion
fails the file with a reason, search keeps answering, and what was stored is kept.

The server runs with its data directory on a small tmpfs of its own (a user and mount
namespace), and the test fills that filesystem through ``/proc/<pid>/root``."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import FAKE_MODELS, RunningServer, start_server, stop_server

VALVE = b"".join(b"Valve %d opens clockwise after the pump stops. " % i for i in range(6000))
_MOUNT = 'mount -t tmpfs -o size=6m tmpfs "$0" && exec "$@"'


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
        timeout=20,
    )
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(), reason="needs user and mount namespaces (unshare -rm) for a tmpfs"
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    data = tmp_path / "data"
    data.mkdir()
    server = start_server(
        {"models": FAKE_MODELS, "data_dir": str(data), "log_json": False},
        tmp_path,
        wrap=("unshare", "-rm", "sh", "-c", _MOUNT, str(data)),
    )
    # The server's view of its data directory (the tmpfs lives in its mount namespace).
    inside = Path(f"/proc/{server.proc.pid}/root") / str(data).lstrip("/")
    try:
        yield server, inside
    finally:
        stop_server(server)


def _fill(inside: Path, leave: int) -> Path:
    """Fill the server's filesystem but for ``leave`` bytes (unbuffered, halving the block)."""
    filler = inside / "filler.bin"
    with filler.open("wb", buffering=0) as fh:
        size = 1 << 20
        while size >= 1:
            try:
                fh.write(b"\0" * size)
            except OSError:
                size //= 2
        fh.truncate(fh.tell() - leave)
    return filler


@needs_namespaces
def test_a_full_disk_is_a_507_for_uploads_a_failed_file_for_ingestion_and_search_still_answers(
    small_disk: tuple[RunningServer, Path],
) -> None:
    server, inside = small_disk
    client = openai.OpenAI(api_key="x", base_url=f"{server.base_url}/v1", max_retries=0)
    store = client.vector_stores.create(name="manuals")
    kept = client.files.create(
        file=("pump.txt", io.BytesIO(b"To reset the pump, hold the red button.")),
        purpose="assistants",
    )
    done = client.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=kept.id)
    assert done.status == "completed"
    waiting = client.files.create(
        file=("valve.txt", io.BytesIO(VALVE)),
        purpose="assistants",
    )

    # Room for a row or two, not for a file's chunks and index.
    filler = _fill(inside, leave=64 * 1024)
    with pytest.raises(openai.APIStatusError) as full:
        client.files.create(
            file=("big.txt", io.BytesIO(b"more words " * 50_000)), purpose="assistants"
        )
    assert full.value.status_code == 507
    assert isinstance(full.value.body, dict)
    assert full.value.body["code"] == "insufficient_storage"
    assert full.value.body["type"] == "server_error"

    failed = client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=waiting.id
    )
    assert failed.status == "failed"
    assert failed.last_error is not None and "storage is full" in failed.last_error.message

    found = client.vector_stores.search(store.id, query="reset the pump")
    assert [r.file_id for r in found.data][:1] == [kept.id]

    # Space again: the same file goes in (removed from the store and added again, as
    # attaching a file twice is a no-op), and nothing stored before was lost.
    filler.unlink()
    client.vector_stores.files.delete(waiting.id, vector_store_id=store.id)
    again = client.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=waiting.id)
    assert again.status == "completed"
    assert client.vector_stores.search(store.id, query="valve 5999 clockwise").data
    names = sorted(f.filename for f in client.files.list())
    assert names == ["pump.txt", "valve.txt"]
    assert client.files.content(waiting.id).read() == VALVE
    assert client.files.content(kept.id).read() == b"To reset the pump, hold the red button."


def test_disk_full_is_recognised_from_the_os_sqlite_and_postgresql() -> None:
    import errno
    import sqlite3

    import psycopg

    from core.errors import is_disk_full

    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x TEXT)")
    db.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.OperationalError) as full:
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 4000,)] * 10)
    assert is_disk_full(full.value)
    with pytest.raises(sqlite3.OperationalError) as other:
        db.execute("SELECT * FROM missing")
    assert not is_disk_full(other.value)
    assert is_disk_full(psycopg.errors.DiskFull())
    assert not is_disk_full(psycopg.errors.UniqueViolation())
    try:
        raise RuntimeError("wrapped") from OSError(errno.ENOSPC, "full")
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
