"""Truncated sampling over a top-k preselection picks what a sort of the whole vocabulary
picks (nuclei wider than the candidates, top-k beyond them, rows alone or batched), and
the log-probabilities gathered for the whole batch at once are each row's own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.base import ModelInfo
from engines.generation import GenerationRequest, SamplingParams, TokenEvent
from engines.rwkv import sampler
from engines.rwkv.engine import RWKVChatEngine
from engines.rwkv.pool import RowPool

V = 65536


def _pool(cases: list[SamplingParams]) -> RowPool:
    pool = RowPool(len(cases), sampler.fields(len(cases), V, "cpu"))
    for i, p in enumerate(cases):
        pool.alloc(i)
        sampler.set_row(pool, i, p, 0)
    return pool


def _full_sort(logits: torch.Tensor, p: SamplingParams, u: float) -> int:
    """The sampler's semantics over a sort of the whole vocabulary (an untruncated row
    draws in vocabulary order)."""
    probs = torch.softmax(logits.float() / max(p.temperature, 1e-6), dim=-1)
    if p.top_p >= 1.0 and p.top_k <= 0:
        cum = torch.cumsum(probs, dim=-1)
        at = torch.tensor([u * float(cum[-1])], dtype=cum.dtype)
        return min(int(torch.searchsorted(cum, at)), V - 1)
    sp, si = torch.sort(probs, descending=True)
    keep = (torch.cumsum(sp, dim=-1) - sp) < p.top_p
    if p.top_k > 0:
        keep[p.top_k :] = False
    keep[0] = True
    cum = torch.cumsum(sp * keep, dim=-1)
    idx = int(torch.searchsorted(cum, torch.tensor([u * float(cum[-1])], dtype=cum.dtype)))
    return int(si[min(idx, V - 1)])


def _cases() -> tuple[list[SamplingParams], torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    cases = [
        SamplingParams(temperature=1.0, top_p=0.9, seed=1),  # flat: nucleus >> candidates
        SamplingParams(temperature=0.8, top_p=0.95, seed=2),  # peaked: fits the candidates
        SamplingParams(temperature=1.0, top_k=3000, seed=3),  # top-k beyond the candidates
        SamplingParams(temperature=1.3, top_k=40, top_p=0.5, seed=4),
        SamplingParams(temperature=1.0, seed=5),  # untruncated, beside truncated rows
        SamplingParams(temperature=0.7, top_p=0.3, seed=6),
    ]
    scales = [0.05, 6.0, 0.5, 3.0, 1.0, 2.0]
    logits = torch.stack([torch.randn(V, generator=g) * s for s in scales])
    return cases, logits


def _uniforms(cases: list[SamplingParams], step: int) -> list[float]:
    """Each row's uniform draw at ``step`` (what its token is the inverse CDF at)."""
    pool = _pool(cases)
    pool.tensors["step"].fill_(step)
    return [float(v) for v in sampler.uniform(pool.tensors["seed"], pool.tensors["step"])]


def _sample(cases: list[SamplingParams], logits: torch.Tensor, step: int = 0) -> list[int]:
    pool = _pool(cases)
    pool.tensors["step"].fill_(step)
    tokens, _ = sampler.sample(
        pool,
        logits,
        penalised=False,
        want_logprobs=False,
        kinds=frozenset(sampler.kind(p) for p in cases),
        max_top_k=max(p.top_k for p in cases),
    )
    return [int(t) for t in tokens]


def test_truncated_sampling_over_candidates_equals_a_full_sort() -> None:
    cases, logits = _cases()
    for step in range(6):
        u = _uniforms(cases, step)
        want = [_full_sort(logits[i], p, u[i]) for i, p in enumerate(cases)]
        assert _sample(cases, logits, step) == want
    # The flat row's nucleus is wider than the candidates (its full sort was needed).
    flat = torch.softmax(logits[0], dim=-1)
    assert float(torch.topk(flat, sampler.CANDIDATES).values.sum()) < cases[0].top_p


def test_a_rows_draw_is_the_same_alone_or_beside_others() -> None:
    cases, logits = _cases()
    batched = _sample(cases, logits)
    alone = [_sample([p], logits[i : i + 1])[0] for i, p in enumerate(cases)]
    assert batched == alone
    # Without the host's largest top_k, the sampler reads it from the pool.
    pool = _pool(cases)
    tokens, _ = sampler.sample(pool, logits, penalised=False, want_logprobs=False)
    assert [int(t) for t in tokens] == batched


def test_top_k_rows_draw_from_the_logits_without_normalising_the_vocabulary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows truncated by top-k alone draw what a full sort draws, with no softmax over the
    vocabulary and candidates sized by their own largest top_k (not the nucleus' 1,024);
    a top-k of 1 is the argmax."""
    g = torch.Generator().manual_seed(9)
    cases = [
        SamplingParams(temperature=1.0, top_k=40, seed=11),
        SamplingParams(temperature=0.6, top_k=5, seed=12),
        SamplingParams(temperature=1.7, top_k=200, seed=13),
        SamplingParams(temperature=1.0, top_k=1, seed=14),
        SamplingParams(temperature=0.0, seed=15),  # greedy beside them
    ]
    logits = torch.stack([torch.randn(V, generator=g) * s for s in (0.3, 4.0, 1.0, 2.0, 1.0)])
    softmaxes: list[tuple[int, ...]] = []
    topks: list[int] = []
    real_softmax, real_topk = torch.softmax, torch.topk

    def spy_softmax(t: torch.Tensor, *a: Any, **kw: Any) -> torch.Tensor:
        softmaxes.append(tuple(t.shape))
        return real_softmax(t, *a, **kw)

    def spy_topk(t: torch.Tensor, k: int, *a: Any, **kw: Any) -> Any:
        topks.append(k)
        return real_topk(t, k, *a, **kw)

    for step in range(8):
        u = _uniforms(cases, step)
        want = [_full_sort(logits[i], p, u[i]) for i, p in enumerate(cases[:4])]
        want.append(int(logits[4].argmax()))
        monkeypatch.setattr(torch, "softmax", spy_softmax)
        monkeypatch.setattr(torch, "topk", spy_topk)
        got = _sample(cases, logits, step)
        monkeypatch.undo()
        assert got == want
        assert got[3] == int(logits[3].argmax())
    assert softmaxes == []
    assert topks and set(topks) == {200}


_ROW = st.builds(
    SamplingParams,
    temperature=st.sampled_from([0.0, 0.5, 1.0, 1.6]),
    top_p=st.sampled_from([1.0, 1.0, 0.9, 0.5]),
    top_k=st.sampled_from([0, 0, 1, 7, 60, 1500]),
    seed=st.integers(0, 2**31),
)


@settings(max_examples=30, derandomize=True, deadline=None)
@given(rows=st.lists(st.tuples(_ROW, st.sampled_from([0.05, 1.0, 5.0])), min_size=2, max_size=6))
def test_any_rows_draw_alone_what_they_draw_batched(
    rows: list[tuple[SamplingParams, float]],
) -> None:
    """The sampler's promise over random batches (greedy, full, top-k, nucleus and mixes,
    flat to peaked logits): a row's token is its own, batched or alone."""
    g = torch.Generator().manual_seed(len(rows))
    cases = [p for p, _ in rows]
    logits = torch.stack([torch.randn(V, generator=g) * scale for _, scale in rows])
    for step in (0, 3):
        batched = _sample(cases, logits, step)
        alone = [_sample([p], logits[i : i + 1], step)[0] for i, p in enumerate(cases)]
        assert batched == alone


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> Any:
    e = RWKVChatEngine(
        ModelInfo("t", "chat", "rwkv"),
        tiny_dir / "rwkv7-tiny-random.pth",
        {"strategy": "cpu fp32", "prefix_cache_bytes": 0},
    )
    yield e
    e.close()


async def _events(engine: RWKVChatEngine, req: GenerationRequest) -> list[TokenEvent]:
    return [ev async for ev in engine.generate(req) if isinstance(ev, TokenEvent)]


async def test_batched_logprobs_are_each_rows_own(engine: RWKVChatEngine) -> None:
    prompt = [(j * 37) % 60000 + 1 for j in range(7)]
    asks = [
        SamplingParams(max_tokens=6, temperature=0.0, logprobs=True, top_logprobs=4),
        SamplingParams(max_tokens=6, temperature=1.0, seed=9, logprobs=True),
        SamplingParams(max_tokens=6, temperature=1.0, seed=10),
        SamplingParams(max_tokens=6, temperature=0.9, seed=11, logprobs=True, top_logprobs=2),
    ]
    results = await asyncio.gather(*(_events(engine, GenerationRequest(prompt, p)) for p in asks))
    lm = engine.lm
    for p, events in zip(asks, results, strict=True):
        assert events
        state = lm.zero_state()
        logits, state = lm.forward(prompt, state)
        for ev in events:
            ref = torch.log_softmax(logits.float(), dim=-1)
            if not p.logprobs:
                assert ev.logprob is None and ev.top_logprobs == ()
            else:
                assert ev.logprob == pytest.approx(float(ref[ev.token_id]), abs=1e-4)
                assert len(ev.top_logprobs) == p.top_logprobs
                values, ids = torch.topk(ref, p.top_logprobs)
                for top, v, i in zip(ev.top_logprobs, values, ids, strict=True):
                    assert top.logprob == pytest.approx(float(v), abs=1e-4)
                    assert bytes(top.bytes) == bytes(engine.tokenizer.idx2token.get(int(i), b""))
            logits, state = lm.forward([ev.token_id], state)
