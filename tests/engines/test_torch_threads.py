"""Where torch's CPU work runs (``core.threads``): loading runs on threads that end with
it, embedding batches on a thread that ends after an idle spell, so no OpenMP team
outlives them to slow the chat step; the RWKV scheduler is the one long-lived thread that
computes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.threads import IdleWorker, call_in_new_thread, in_new_thread
from engines.base import ModelInfo
from engines.batching import DynamicBatcher

ROOT = Path(__file__).resolve().parents[2]


def test_call_in_new_thread_returns_and_raises_on_a_thread_that_has_ended() -> None:
    seen: list[threading.Thread] = []

    def work(a: int, b: int) -> int:
        seen.append(threading.current_thread())
        return a * b

    assert call_in_new_thread(work, 6, 7) == 42
    assert seen[0] is not threading.current_thread()
    assert not seen[0].is_alive()

    def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        call_in_new_thread(fail)


async def test_in_new_thread_keeps_the_loop_running_and_passes_errors() -> None:
    release = threading.Event()
    seen: list[threading.Thread] = []

    def work() -> str:
        seen.append(threading.current_thread())
        release.wait(5)
        return "done"

    task = asyncio.create_task(in_new_thread(work))
    await asyncio.sleep(0.05)
    assert not task.done()  # the loop ran this coroutine while work() waited
    release.set()
    assert await asyncio.wait_for(task, 5) == "done"
    seen[0].join(5)
    assert not seen[0].is_alive()

    def fail() -> None:
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        await in_new_thread(fail)


async def test_batches_share_a_thread_that_ends_after_an_idle_spell() -> None:
    threads: list[threading.Thread] = []

    def embed(values: list[int]) -> list[int]:
        threads.append(threading.current_thread())
        return [v * 2 for v in values]

    batcher = DynamicBatcher(
        "t", embed, max_batch_size=4, max_wait_ms=1, max_queue=16, worker_idle_s=1.0
    )
    batcher.start()
    try:
        # A burst: one thread serves it, not the event loop's.
        assert await batcher.submit([1, 2, 3]) == [2, 4, 6]
        assert await batcher.submit([5]) == [10]
        assert threads[0] is threads[1] is not threading.current_thread()
        threads[0].join(5)  # idle past worker_idle_s: it ends
        assert not threads[0].is_alive()
        assert await batcher.submit([7]) == [14]  # the next burst starts another
        assert threads[2] is not threads[0]
    finally:
        await batcher.stop()


async def test_an_idle_worker_runs_calls_in_order_and_passes_errors() -> None:
    worker = IdleWorker("w", idle_s=0.2)
    order: list[int] = []

    def step(i: int) -> int:
        order.append(i)
        return i

    assert await asyncio.gather(*(worker.run(step, i) for i in range(20))) == list(range(20))
    assert order == list(range(20))
    assert worker.threads_started == 1

    def fail() -> None:
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        await worker.run(fail)
    assert await worker.run(step, 99) == 99  # a failed call leaves the worker working

    def stray_next() -> None:
        next(iter(()))

    # A future cannot hold StopIteration: it arrives as a RuntimeError, never a hang.
    with pytest.raises(RuntimeError, match="StopIteration"):
        await asyncio.wait_for(worker.run(stray_next), 5)
    with pytest.raises(RuntimeError, match="StopIteration"):
        await asyncio.wait_for(in_new_thread(stray_next), 5)


async def test_a_call_given_up_before_it_starts_is_skipped() -> None:
    worker = IdleWorker("w", idle_s=1.0)
    release = threading.Event()
    ran: list[str] = []

    def block() -> None:
        release.wait(5)
        ran.append("block")

    def later() -> None:
        ran.append("later")

    first = asyncio.create_task(worker.run(block))
    second = asyncio.create_task(worker.run(later))
    await asyncio.sleep(0.05)
    second.cancel()
    release.set()
    await asyncio.wait_for(first, 5)
    assert await worker.run(lambda: "after") == "after"
    assert ran == ["block"]


async def test_a_worker_whose_thread_cannot_start_fails_that_call_and_not_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = IdleWorker("w", idle_s=1.0)
    real_start = threading.Thread.start
    failures = [RuntimeError("can't start new thread")]

    def start(self: threading.Thread) -> None:
        if failures:
            raise failures.pop()
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError, match="start new thread"):
        await worker.run(lambda: 1)
    assert await asyncio.wait_for(worker.run(lambda: 2), 5) == 2


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[threading.Thread]]:
    from engines.rwkv.model import load_rwkv as real

    seen: list[threading.Thread] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr("engines.rwkv.engine.load_rwkv", recording)
    yield seen


def test_the_rwkv_engine_loads_on_a_thread_that_ends(
    tiny_dir: Path, loads: list[threading.Thread]
) -> None:
    from engines.rwkv.engine import RWKVChatEngine

    engine = RWKVChatEngine(
        ModelInfo("t", "chat", "rwkv"),
        tiny_dir / "rwkv7-tiny-random.pth",
        {"strategy": "cpu fp32", "prefix_cache_bytes": 0},
    )
    try:
        assert len(loads) == 1
        assert loads[0] is not threading.current_thread()
        assert loads[0] is not engine._thread
        assert not loads[0].is_alive()
        assert engine._thread.is_alive()
    finally:
        engine.close()


async def test_the_registry_builds_models_on_threads_that_end(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engines.config import ModelConfig, RegistryConfig
    from engines.registry import EngineRegistry

    builds: list[threading.Thread] = []
    real_build = EngineRegistry._build

    def build(self: EngineRegistry, model: Any) -> None:
        builds.append(threading.current_thread())
        real_build(self, model)

    monkeypatch.setattr(EngineRegistry, "_build", build)

    cfg = RegistryConfig(
        models=[
            ModelConfig(
                id="chat",
                kind="chat",
                engine="rwkv",
                path=str(tiny_dir / "rwkv7-tiny-random.pth"),
                options={"strategy": "cpu fp32", "prefix_cache_bytes": 0},
            )
        ],
        data_dir=tiny_dir,
    )
    registry = EngineRegistry(cfg)
    await registry.load()
    try:
        assert registry.ready
        assert len(builds) == 1
        assert builds[0] is not threading.current_thread()
        builds[0].join(5)
        assert not builds[0].is_alive()  # not a pool thread that stays
    finally:
        await registry.close()


_TEAMS = """
import json, os, threading, time
from concurrent.futures import ThreadPoolExecutor
import torch
from core.threads import call_in_new_thread

torch.set_num_threads(2)

def native():  # OS threads Python did not start: libgomp's workers
    return len(os.listdir("/proc/self/task")) - threading.active_count()

def work():
    x = torch.randn(1_000_000)
    for _ in range(3):
        x = x.exp().clamp(max=1.0)

def settled(want):  # an ended thread's workers leave a moment after it (bounded)
    deadline = time.monotonic() + 10
    while native() != want and time.monotonic() < deadline:
        time.sleep(0.02)
    return native()

base = native()
call_in_new_thread(work)
after_new = settled(base)
pool = ThreadPoolExecutor(1)
pool.submit(work).result()
time.sleep(0.5)
after_pool = native()
print(json.dumps({"base": base, "after_new": after_new, "after_pool": after_pool}))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_one_off_torch_work_leaves_no_openmp_team_behind() -> None:
    """The mechanism itself, in a fresh interpreter: parallel torch work on a thread that
    ends leaves no OpenMP worker running; the same work on a persistent thread keeps one
    (what slowed the chat step)."""
    out = subprocess.run(
        [sys.executable, "-c", _TEAMS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["after_new"] == counts["base"]
    assert counts["after_pool"] > counts["base"]
