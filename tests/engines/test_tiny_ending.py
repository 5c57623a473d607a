"""The "-ending" tiny checkpoints finish their turns by themselves on random weights."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from engines.base import ModelInfo
from engines.generation import FinishEvent, GenerationRequest, SamplingParams
from engines.rwkv.engine import RWKVChatEngine


async def _finish(engine: RWKVChatEngine, temperature: float, seed: int) -> tuple[str, int]:
    params = SamplingParams(max_tokens=120, temperature=temperature, seed=seed)
    async for ev in engine.generate(GenerationRequest([1, 2, 3, seed + 10], params)):
        if isinstance(ev, FinishEvent):
            return ev.reason, ev.completion_tokens
    raise AssertionError("no finish event")


@pytest.mark.parametrize("name", ["rwkv6-tiny", "rwkv7-tiny"])
async def test_an_ending_checkpoint_ends_its_turns_within_a_few_dozen_tokens(
    tiny_dir: Path, name: str
) -> None:
    ending = RWKVChatEngine(
        ModelInfo(name, "chat", "rwkv"), tiny_dir / f"{name}-ending.pth", {"strategy": "cpu fp32"}
    )
    random = RWKVChatEngine(
        ModelInfo(name, "chat", "rwkv"), tiny_dir / f"{name}-random.pth", {"strategy": "cpu fp32"}
    )
    try:
        for temperature in (0.0, 1.0):
            runs = [await _finish(ending, temperature, seed) for seed in range(12)]
            assert all(reason == "stop" for reason, _ in runs), runs
            assert statistics.median(n for _, n in runs) <= 40, runs
        # The plain random checkpoint of the same shape mostly runs to the budget.
        plain = [await _finish(random, 1.0, seed) for seed in range(4)]
        assert sum(reason == "length" for reason, _ in plain) >= 3, plain
    finally:
        ending.close()
        random.close()
