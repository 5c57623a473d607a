"""The RWKV scheduler on the tiny checkpoint: seeded sampling is the same batched or alone,
the row pool survives joins, leaves, cancellations and a full batch, long prefills do not
stall decoding, stalled readers free their slot, and one key cannot crowd out others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.base import ModelInfo
from engines.generation import FinishEvent, GenerationRequest, SamplingParams, TokenEvent
from engines.rwkv.engine import RWKVChatEngine


@pytest.fixture(scope="module")
def make(tiny_dir: Path) -> Iterator[Any]:
    engines: list[RWKVChatEngine] = []

    def build(**options: Any) -> RWKVChatEngine:
        engine = RWKVChatEngine(
            ModelInfo("t", "chat", "rwkv"),
            tiny_dir / "rwkv7-tiny-random.pth",
            {"strategy": "cpu fp32", "prefix_cache_bytes": 0, **options},
        )
        engines.append(engine)
        return engine

    yield build
    for e in engines:
        e.close()


def prompt(i: int, n: int = 6) -> list[int]:
    return [(i * 131 + j * 17) % 60000 + 1 for j in range(n)]


async def collect(engine: RWKVChatEngine, req: GenerationRequest) -> list[int]:
    tokens: list[int] = []
    async for ev in engine.generate(req):
        if isinstance(ev, TokenEvent):
            tokens.append(ev.token_id)
        elif ev.reason == "error":
            raise ev.error or RuntimeError("failed")
    return tokens


def params(**kw: Any) -> SamplingParams:
    return SamplingParams(**{"max_tokens": 24, **kw})


async def test_seeded_sampling_is_the_same_batched_or_alone(make: Any) -> None:
    engine = make(max_batch_size=8)
    cases = [
        params(temperature=0.9, top_p=0.8, seed=5),
        params(temperature=1.2, seed=6),
        params(temperature=0.7, top_k=20, seed=7),
        params(temperature=1.0, presence_penalty=0.5, frequency_penalty=0.3, seed=8),
        params(temperature=0.0),
    ]
    alone = [await collect(engine, GenerationRequest(prompt(i), p)) for i, p in enumerate(cases)]
    noise = [GenerationRequest(prompt(50 + i), params(seed=100 + i)) for i in range(3)]
    together = await asyncio.gather(
        *(collect(engine, GenerationRequest(prompt(i), p)) for i, p in enumerate(cases)),
        *(collect(engine, r) for r in noise),
    )
    assert together[: len(cases)] == alone
    # n choices draw different streams from one seed; the same seed repeats them.
    req = GenerationRequest(prompt(9), params(temperature=1.0, seed=3), n=3)
    first = await _choices(engine, req)
    assert len({tuple(c) for c in first}) == 3
    assert (
        await _choices(engine, GenerationRequest(prompt(9), params(temperature=1.0, seed=3), n=3))
        == first
    )


async def _choices(engine: RWKVChatEngine, req: GenerationRequest) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(req.n)]
    async for ev in engine.generate(req):
        if isinstance(ev, TokenEvent):
            out[ev.index].append(ev.token_id)
    return out


async def test_the_row_pool_survives_joins_leaves_and_cancellations(make: Any) -> None:
    engine = make(max_batch_size=3, max_prefill_batch=2, max_queued=64)
    lengths = [5, 17, 3, 30, 9, 1, 22, 12]
    reqs = [
        GenerationRequest(prompt(i, 4 + i), params(max_tokens=n, temperature=0))
        for i, n in enumerate(lengths)
    ]
    alone = [await collect(engine, r) for r in reqs]

    async def cancelled(i: int) -> None:
        handle = engine.submit(GenerationRequest(prompt(200 + i), params(max_tokens=500)))
        seen = 0
        async for ev in engine.events(handle):
            seen += isinstance(ev, TokenEvent)
            if seen == 3 + i:
                break  # closing the iterator cancels the request

    fresh = [GenerationRequest(r.prompt_tokens, r.params) for r in reqs]
    results = await asyncio.gather(
        *(collect(engine, r) for r in fresh), *(cancelled(i) for i in range(4))
    )
    # Rows moved as sequences left; each one kept its own state throughout.
    assert list(results[: len(reqs)]) == alone
    assert [len(t) for t in alone] == lengths
    for _ in range(200):
        if not engine.active and not engine.queued:
            break
        await asyncio.sleep(0.01)
    assert engine.active == 0 and len(engine.decode_pool) == 0 and len(engine.prefill_pool) == 0


async def test_a_long_prefill_does_not_stall_decoding(make: Any) -> None:
    engine = make(max_batch_size=4, max_prefill_chunk=32, step_token_budget=40)
    progress: list[int] = []
    long_first: list[int] = []

    async def running() -> None:
        n = 0
        async for ev in engine.generate(
            GenerationRequest(prompt(1), params(max_tokens=60, temperature=0))
        ):
            if isinstance(ev, TokenEvent):
                n += 1
                progress.append(n)
                if n == 2:
                    started.set()

    async def long_prompt() -> None:
        await started.wait()
        before = len(progress)
        async for ev in engine.generate(GenerationRequest(prompt(2, 1200), params(max_tokens=1))):
            if isinstance(ev, TokenEvent):
                long_first.append(len(progress) - before)

    started = asyncio.Event()
    await asyncio.gather(running(), long_prompt())
    # 1,200 prompt tokens at 32 a step: the running stream decoded all along.
    assert long_first and long_first[0] >= 30


async def test_a_stalled_reader_frees_its_slot(make: Any) -> None:
    engine = make(max_batch_size=1, stalled_reader_timeout_s=0.3, stalled_reader_events=4)
    stalled = engine.submit(GenerationRequest(prompt(3), params(max_tokens=5000)))
    started = time.monotonic()
    other = await asyncio.wait_for(
        collect(engine, GenerationRequest(prompt(4), params(max_tokens=4))), 60
    )
    assert len(other) == 4 and time.monotonic() - started < 60
    assert engine.stats["stalled_readers"] == 1
    events = []
    while not stalled.queue.empty():
        events.append(stalled.queue.get_nowait())
    assert isinstance(events[-1], FinishEvent) and events[-1].reason == "error"


async def test_one_key_cannot_hold_every_slot_while_others_wait(make: Any) -> None:
    engine = make(max_batch_size=2, max_share_per_key=0.5)
    finished: list[str] = []

    async def run(owner: str, i: int) -> None:
        req = GenerationRequest(prompt(i), params(max_tokens=20, temperature=0), owner=owner)
        await collect(engine, req)
        finished.append(f"{owner}{i}")

    tasks = [asyncio.create_task(run("a", i)) for i in range(4)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(run("b", 9)))
    await asyncio.gather(*tasks)
    # b's request did not wait behind all of a's: it finished among the first two.
    assert "b9" in finished[:2]
    assert engine.stats["deferred_for_fairness"] > 0


async def test_the_step_token_budget_bounds_the_prompt_tokens_of_every_step(make: Any) -> None:
    """Prompts far longer than the budget (and with a chunk size above it) advance at most
    the budget less the running rows per step, all the while a stream decodes."""
    engine = make(max_batch_size=4, max_prefill_chunk=256, step_token_budget=24)
    long_prompts = [prompt(71, 300), prompt(72, 250)]
    results = await asyncio.gather(
        collect(engine, GenerationRequest(prompt(70), params(max_tokens=40, temperature=0))),
        *(collect(engine, GenerationRequest(p, params(max_tokens=2))) for p in long_prompts),
    )
    assert all(results)
    prompt_tokens = 6 + 300 + 250
    assert engine.stats["prefill_tokens"] == prompt_tokens
    assert 0 < engine.stats["max_step_tokens"] <= 24
    assert engine.stats["prefill_steps"] >= prompt_tokens // 24


async def test_the_linear_kernel_is_reported_and_int8_serves(make: Any) -> None:
    import torch

    packed = make(max_batch_size=2)
    onednn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    assert packed.info.extra["linear"] == ("onednn" if onednn else "dense")
    quantized = make(max_batch_size=2, linear_kernel="int8")
    assert quantized.info.extra["linear"] == "int8"
    tokens = await collect(quantized, GenerationRequest(prompt(90), params(max_tokens=6)))
    assert 0 < len(tokens) <= 6
    with pytest.raises(ValueError, match="cpu fp32"):
        make(strategy="cpu bf16", linear_kernel="int8")
