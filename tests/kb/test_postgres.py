"""The postgres backend beyond the shared suites: `kb migrate` from SQLite keeps every id
and vector, filters compiled to SQL agree with the Python evaluator, and an unreachable
database is a 503 that clears once it is back."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from core.tenancy import Principal
from engines.base import ModelInfo
from engines.fake import FakeEmbedder
from gateway.app import create_app
from kb.chunking import ChunkingStrategy
from kb.config import KnowledgeSettings
from kb.filters import Compare, Compound, parse_filter
from kb.pg.filters import compile_filter
from kb.providers import LocalProvider
from kb.retrieval import SearchQuery
from kb.service import KnowledgeBase
from kb.types import ChunkRecord, PageRequest
from tests.conftest import (
    FAKE_MODELS,
    ROOT,
    asgi_client,
    fake_settings,
    new_database,
    start_pg_server,
)

SMALL = ChunkingStrategy(100, 0)
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
]


def _provider() -> LocalProvider:
    engine = FakeEmbedder(ModelInfo("fake-embed", "embedding", "fake"), {"dimensions": 64})
    return LocalProvider(engine, 64, 256)


async def _search_all(kb: KnowledgeBase, cid: str, mode: str) -> list[list[int]]:
    out = []
    for q in ("pump pressure reset", "refund invoice", "battery charger cable", "alarm light"):
        res = await kb.search(cid, SearchQuery((q,), 10, mode=mode))  # type: ignore[arg-type]
        out.append([h.chunk_id for h in res.hits])
    return out


async def test_migrate_keeps_ids_vectors_and_results(tmp_path: Path, pg_server: Any) -> None:
    rng = random.Random(3)
    src = KnowledgeBase.open_sqlite(tmp_path / "data" / "kb", _provider())
    cid = (await src.create_store("manuals", "fake-embed")).id
    for f in range(70):
        lines = [
            " ".join(rng.choice(WORDS) for _ in range(12)) + f" item{f}x{i}." for i in range(100)
        ]
        await src.add_text(
            cid, "\n".join(lines), title=f"doc{f}.md", attributes={"n": f}, chunking_strategy=SMALL
        )
    count = src.backend.count(cid)
    assert count >= 1000
    before = {m: await _search_all(src, cid, m) for m in ("dense", "hybrid")}
    team = Principal(project="team-a", role="member")
    team_store = (await src.create_store("manuals", "fake-embed", who=team)).id
    team_file = (await src.add_file_bytes(b"team notes", "team.txt", who=team)).id
    src.close()

    dsn = new_database(pg_server)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"models": FAKE_MODELS, "data_dir": str(tmp_path / "data")}))
    cli = [sys.executable, "-m", "gateway.cli", "kb", "migrate", "--config", str(cfg)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_RAG_")}
    run = subprocess.run(
        [*cli, "--to", "postgres", dsn],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert "chunks" in run.stdout and "MISMATCH" not in run.stdout
    assert "chunks" in run.stderr  # the progress bars
    again = subprocess.run(
        [*cli, "--to", "postgres", dsn, "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env=env,
    )
    assert again.returncode == 0, again.stderr  # resumable: a second run adds nothing

    settings = KnowledgeSettings(backend="postgres", postgres={"dsn": dsn})
    dst = KnowledgeBase.open_backend(tmp_path / "unused", _provider(), settings)
    try:
        assert dst.backend.count(cid) == count
        after = {m: await _search_all(dst, cid, m) for m in ("dense", "hybrid")}
        assert after["dense"] == before["dense"]
        for a, b in zip(after["hybrid"], before["hybrid"], strict=True):
            assert a == b, (a, b)
        page = await dst.store_files(cid, PageRequest(limit=100))
        assert len(page.data) == 70 and all(f.status == "completed" for f in page.data)
        record, body = await dst.file_content(page.data[0].file_id)
        assert len(b"".join(body)) == record.bytes
        # Each store and file keeps its project.
        assert (await dst.collection(cid)).project == "default"
        assert [c.id for c in await dst.all_stores(who=team)] == [team_store]
        assert (await dst.file(team_file, who=team)).filename == "team.txt"
        assert (await dst.collection("manuals", who=team)).id == team_store
        # New chunks take ids after the copied ones.
        top = max(max(ids) for ids in before["dense"])
        await dst.add_text(cid, "a brand new line about the relay panel", title="new.md")
        assert dst.backend.count(cid) == count + 1
        new = await dst.search(cid, SearchQuery(("brand new relay panel",), 1, mode="keyword"))
        assert new.hits[0].filename == "new.md" and new.hits[0].chunk_id > top
    finally:
        dst.close()


def _random_filter(rng: random.Random, depth: int = 0) -> Any:
    if depth < 2 and rng.random() < 0.35:
        return Compound(
            rng.choice(["and", "or"]),
            tuple(_random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))),
        )
    op = rng.choice(["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"])
    key = rng.choice(["team", "n", "flag", "missing"])
    pool: list[Any] = ["a", "b", "B", "é", 1, 2, 2.5, True, False, "10", "2"]
    value: Any = tuple(rng.sample(pool, 3)) if op in ("in", "nin") else rng.choice(pool)
    return Compare(op, key, value)  # type: ignore[arg-type]


async def test_filters_compiled_to_sql_agree_with_the_python_evaluator(pg_server: Any) -> None:
    dsn = new_database(pg_server)
    settings = KnowledgeSettings(backend="postgres", postgres={"dsn": dsn})
    kb = KnowledgeBase.open_backend(Path("/nonexistent"), _provider(), settings)
    try:
        cid = (await kb.create_store("f", "fake-embed")).id
        values: list[Any] = ["a", "b", "B", "é", 1, 2, 2.5, True, False, "10", "2", 0]
        attrs = []
        rng = random.Random(11)
        for i in range(24):
            a = {k: rng.choice(values) for k in ("team", "n", "flag") if rng.random() < 0.8}
            attrs.append(a)
            await kb.add_text(cid, f"file number {i}", title=f"f{i}.txt", attributes=a)
        names = {f"f{i}.txt": a for i, a in enumerate(attrs)}
        # PostgreSQL text cannot hold NUL; a chunk with one is stored without it.
        vec = _provider().engine.encode(["nul here"], 16).vectors
        assert (
            kb.backend.add_chunks(
                cid, [ChunkRecord("f-raw", 0, "nul\x00 here", 3)], vec, model="fake-embed"
            )
            == 1
        )
        raw = await kb.search(cid, SearchQuery(("nul here",), 1, mode="keyword"))
        assert raw.hits[0].text == "nul here"
        files = (await kb.store_files(cid, PageRequest(limit=100))).data
        by_id = {f.file_id: names[f.filename] for f in files if f.filename}
        for _ in range(300):
            flt = _random_filter(rng)
            assert compile_filter(flt) is not None
            want = {fid for fid, a in by_id.items() if flt.matches(a)}
            assert kb.backend.matching_files(cid, flt) == want, flt
        # Dify's text operators are evaluated in Python, with the same answers.
        dify = parse_filter({"type": "eq", "key": "team", "value": "a"})
        assert kb.backend.matching_files(cid, dify) == {
            f for f, a in by_id.items() if a.get("team") == "a"
        }
        text = Compare("contains", "team", "a")
        assert compile_filter(text) is None
        assert kb.backend.matching_files(cid, text) == {
            f for f, a in by_id.items() if text.matches(a)
        }
    finally:
        kb.close()


async def test_an_unreachable_database_is_a_503_until_it_is_back(tmp_path: Path) -> None:
    server = start_pg_server(tmp_path / "pg")
    from psycopg.conninfo import make_conninfo

    server.psql("CREATE DATABASE flaky;")
    dsn = make_conninfo(server.get_uri(), dbname="flaky")
    knowledge = {"backend": "postgres", "postgres": {"dsn": dsn, "connect_timeout_s": 1.0}}
    app = create_app(fake_settings(knowledge=knowledge))
    async with asgi_client(app) as http:
        ok = await http.post("/v1/vector_stores", json={"name": "kept"})
        assert ok.status_code == 200
        server.cleanup()  # the database goes away
        import time

        started = time.monotonic()
        down = await http.get("/v1/vector_stores")
        assert down.status_code == 503, down.text
        assert time.monotonic() - started < 10
        err = down.json()["error"]
        assert err["code"] == "knowledge_base_unavailable" and "unreachable" in err["message"]
        assert dsn not in down.text
        server = start_pg_server(tmp_path / "pg")  # back
        for _ in range(20):
            back = await http.get("/v1/vector_stores")
            if back.status_code == 200:
                break
            await asyncio.sleep(0.5)
        assert back.status_code == 200 and [s["name"] for s in back.json()["data"]] == ["kept"]
    server.cleanup()


async def test_an_unreachable_database_at_startup_does_not_stop_the_gateway() -> None:
    knowledge = {
        "backend": "postgres",
        "postgres": {
            "dsn": "postgresql://nobody:secret@127.0.0.1:9/none",
            "connect_timeout_s": 1.0,
        },
    }
    app = create_app(fake_settings(knowledge=knowledge))
    async with asgi_client(app) as http:
        assert (await http.get("/v1/models")).status_code == 200
        r = await http.get("/v1/vector_stores")
        assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
        assert "secret" not in r.text
