"""State files keep the dtype the model runs in, read back bit for bit, and the directory
forgets what is past its retention age or a dead writer's temporary files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from engines.rwkv.states import DiskStates, StateIdentity, StateWrite, prefix_digests


def _store(directory: Path, **kw: float) -> DiskStates:
    ident = StateIdentity(model="m", weights="w" * 64, states={"": "z" * 64})
    return DiskStates(directory, ident, int(kw.get("max_bytes", 2**30)), kw.get("retention_s", 0.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_a_state_reads_back_bit_for_bit_in_the_dtype_it_was_saved_in(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    gen = torch.Generator().manual_seed(3)
    state = [torch.randn((4, 8), generator=gen).to(dtype), torch.randn((2, 3, 3), generator=gen)]
    logits = torch.randn(16, generator=gen)
    digest = prefix_digests([1, 2, 3], [3])[3]
    store = _store(tmp_path)
    store.save(StateWrite("", digest, 3, [*state, logits]))
    got = _store(tmp_path).load("", digest, 3, [torch.zeros_like(t) for t in state], "cpu")
    assert got is not None
    loaded, loaded_logits = got
    assert [t.dtype for t in loaded] == [t.dtype for t in state]
    assert all(torch.equal(a, b) for a, b in zip(loaded, state, strict=True))
    assert torch.equal(loaded_logits, logits)
    # A state of another shape or dtype than the model's is refused.
    wrong = [torch.zeros((4, 8), dtype=torch.float64), torch.zeros((2, 3, 3))]
    assert _store(tmp_path).load("", digest, 3, wrong, "cpu") is None


def test_expired_states_and_a_dead_writers_temporary_files_are_removed(tmp_path: Path) -> None:
    state = [torch.ones(4)]
    store = _store(tmp_path, retention_s=60.0)
    for i in range(2):
        store.save(StateWrite("", prefix_digests([i], [1])[1], 1, [*state, torch.ones(2)]))
    old, fresh = sorted(tmp_path.rglob("*.rwkvstate"))
    dead = old.with_name(old.name + ".1.1.tmp")
    live = old.with_name(old.name + ".2.2.tmp")
    dead.write_bytes(b"partial")
    live.write_bytes(b"partial")
    long_ago = time.time() - 7200
    os.utime(old, (long_ago, long_ago))
    os.utime(dead, (long_ago, long_ago))
    _store(tmp_path, retention_s=60.0)
    assert sorted(tmp_path.rglob("*.rwkvstate")) == [fresh]
    assert not dead.exists()
    assert live.exists()  # may be another process's write in flight


def test_a_full_budget_drops_the_least_recently_used_state(tmp_path: Path) -> None:
    state, logits = [torch.ones(256)], torch.ones(2)
    store = _store(tmp_path)
    digests = [prefix_digests([i], [1])[1] for i in range(3)]
    for d in digests[:2]:
        store.save(StateWrite("", d, 1, [*state, logits]))
    one = max(p.stat().st_size for p in tmp_path.rglob("*.rwkvstate"))
    first = store.blobs.path(store.key("", digests[0]))
    long_ago = time.time() - 100
    os.utime(store.blobs.path(store.key("", digests[1])), (long_ago, long_ago))
    assert store.load("", digests[0], 1, [torch.zeros(256)], "cpu") is not None  # now recent
    # Room for two states, not three (a header's length varies by a few bytes).
    store.max_bytes = 2 * one + 64
    store.save(StateWrite("", digests[2], 1, [*state, logits]))
    kept = set(tmp_path.rglob("*.rwkvstate"))
    assert kept == {first, store.blobs.path(store.key("", digests[2]))}
