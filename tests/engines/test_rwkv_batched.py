"""The batched decode step equals the package's own forward, for x060 and x070."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engines.rwkv_model import BatchedStep, detect_version, load_rwkv, load_state_file
from engines.rwkv_tiny import write_rwkv_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rwkv")
    # Wider than the serving fixtures, with 4 heads and 3 layers, different seeds.
    return {
        v: write_rwkv_checkpoint(out / f"{v}.pth", v, n_layer=3, n_embd=256, seed=11)
        for v in ("x060", "x070")
    }


@pytest.mark.parametrize("version", ["x060", "x070"])
@pytest.mark.parametrize(("strategy", "tol"), [("cpu fp32", 1e-4), ("cpu bf16", 0.0)])
def test_batched_step_matches_package_forward(
    checkpoints: dict[str, Path], version: str, strategy: str, tol: float
) -> None:
    assert detect_version(checkpoints[version]) == version
    lm = load_rwkv(checkpoints[version], strategy)
    step = BatchedStep(lm)
    prompts = [[1, 2, 3, 4, 5], [100, 200], [5000, 6000, 7000], [42], [9, 8, 7, 6]]
    ref_states, tokens = [], []
    for p in prompts:
        logits, state = lm.forward(p, lm.zero_state())
        ref_states.append(state)
        tokens.append(int(logits.argmax()))
    stacked = step.stack(ref_states)
    ref_tokens = list(tokens)
    max_diff = 0.0
    for _ in range(32):
        batched = step(tokens, stacked)
        for j in range(len(prompts)):
            ref, ref_states[j] = lm.forward([ref_tokens[j]], ref_states[j])
            max_diff = max(max_diff, float((ref - batched[j]).abs().max()))
            ref_tokens[j] = int(ref.argmax())
        tokens = [int(t) for t in batched.argmax(-1)]
        assert tokens == ref_tokens
    # bf16: the same ops in the same order, so results stay within bf16 rounding (here 0).
    assert max_diff <= tol


def test_x060_and_x070_are_served_side_by_side(checkpoints: dict[str, Path]) -> None:
    a = load_rwkv(checkpoints["x060"], "cpu fp32")
    b = load_rwkv(checkpoints["x070"], "cpu fp32")
    la, _ = a.forward([1, 2, 3], a.zero_state())
    lb, _ = b.forward([1, 2, 3], b.zero_state())
    assert a.version == "x060" and b.version == "x070"
    assert la.shape == lb.shape == (65536,)
    assert torch.isfinite(la).all() and torch.isfinite(lb).all()


def test_state_file_layout_and_shape_checks(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    from engines.rwkv_tiny import write_state_file

    good = write_state_file(tmp_path / "s.pth", n_layer=3, n_embd=256)
    sd = torch.load(str(good), weights_only=True)
    for version in ("x060", "x070"):
        lm = load_rwkv(checkpoints[version], "cpu fp32")
        state = load_state_file(good, lm)
        raw = sd["blocks.1.att.time_state"].float()
        expected = raw.transpose(1, 2) if version == "x060" else raw
        assert torch.equal(state[1 * 3 + 1], expected)
    wrong = write_state_file(tmp_path / "w.pth", n_layer=3, n_embd=128)
    with pytest.raises(ValueError, match="shape"):
        load_state_file(wrong, lm)
    short = write_state_file(tmp_path / "short.pth", n_layer=2, n_embd=256)
    with pytest.raises(ValueError, match="lacks"):
        load_state_file(short, lm)
