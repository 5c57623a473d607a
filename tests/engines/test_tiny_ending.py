"""The "-ending" tiny checkpoints finish their turns by themselves on random weights."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from engines.base import ModelInfo
from engines.generation import FinishEvent, GenerationRequest, SamplingParams
from engines.rwkv.engine import RWKVChatEngine


async def _finish(
    engine: RWKVChatEngine, temperature: float, seed: int, budget: int = 250
) -> tuple[str, int]:
    params = SamplingParams(max_tokens=budget, temperature=temperature, seed=seed)
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
            # Turn lengths are roughly geometric (median ~30 sampled): a rare seed runs
            # long, and which one depends on the last bit of the kernels' arithmetic
            # (another CPU's oneDNN kernels draw other seeds); one in twelve may.
            assert sum(reason == "stop" for reason, _ in runs) >= 11, runs
            assert statistics.median(n for _, n in runs) <= 40, runs
        # The plain random checkpoint of the same shape mostly runs to the budget.
        plain = [await _finish(random, 1.0, seed, 120) for seed in range(4)]
        assert sum(reason == "length" for reason, _ in plain) >= 3, plain
    finally:
        ending.close()
        random.close()


async def test_the_embedded_demo_model_ends_its_chat_turns_with_stop(tmp_path: Path) -> None:
    from gateway.app import create_app
    from gateway.settings import Settings
    from tests.conftest import asgi_client

    settings = Settings(data_dir=tmp_path, load_in_background=False, log_json=False)
    assert any(m.path == "builtin:rwkv7-tiny-random" for m in settings.models)
    async with asgi_client(create_app(settings)) as http:
        for seed in range(4):
            r = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "rwkv7-tiny-random",
                    "messages": [{"role": "user", "content": "Hi"}],
                    # Turn lengths have a long tail (seeds 0-11: 2 to 87 tokens, and one
                    # past 200 when the step's fp32 rounding differs), so the budget is
                    # ample; the median is what the test above bounds.
                    "max_tokens": 400,
                    "seed": seed,
                },
            )
            assert r.status_code == 200, r.text
            choice = r.json()["choices"][0]
            assert choice["finish_reason"] == "stop", choice
