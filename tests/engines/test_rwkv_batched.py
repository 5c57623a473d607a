"""The batched decode step and the chunked, batched prefill equal the package's own
forward (its token-by-token recurrence), for x060 and x070."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engines.rwkv.forward import Forward
from engines.rwkv.linear import LinearKind
from engines.rwkv.model import LoadedRWKV, detect_version, load_rwkv, load_state_file
from engines.rwkv.wkv import Wkv
from engines.rwkv_tiny import write_rwkv_checkpoint


def stack(states: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [torch.stack([s[j] for s in states]) for j in range(len(states[0]))]


def forward(lm: LoadedRWKV, chunk: int = 16, linear: LinearKind = "dense") -> Forward:
    return Forward(lm, Wkv(lm.device, "torch", chunk), linear)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rwkv")
    # Wider than the serving fixtures, with 4 heads and 3 layers, different seeds.
    return {
        v: write_rwkv_checkpoint(out / f"{v}.pth", v, n_layer=3, n_embd=256, seed=11)
        for v in ("x060", "x070")
    }


@pytest.mark.parametrize("version", ["x060", "x070"])
@pytest.mark.parametrize(
    ("strategy", "linear", "tol", "rows"),
    [
        ("cpu fp32", "dense", 1e-4, 5),
        ("cpu fp32", "onednn", 1e-4, 5),
        ("cpu fp32", "onednn", 1e-4, 1),  # one row takes the packed products too
        ("cpu bf16", "dense", 0.0, 5),
    ],
)
def test_batched_step_matches_package_forward(
    checkpoints: dict[str, Path],
    version: str,
    strategy: str,
    linear: LinearKind,
    tol: float,
    rows: int,
) -> None:
    assert detect_version(checkpoints[version]) == version
    lm = load_rwkv(checkpoints[version], strategy)
    step = forward(lm, linear=linear)
    prompts = [[1, 2, 3, 4, 5], [100, 200], [5000, 6000, 7000], [42], [9, 8, 7, 6]][:rows]
    ref_states, tokens = [], []
    for p in prompts:
        logits, state = lm.forward(p, lm.zero_state())
        ref_states.append(state)
        tokens.append(int(logits.argmax()))
    stacked = stack(ref_states)
    ref_tokens = list(tokens)
    max_diff = 0.0
    for _ in range(32):
        batched = step(torch.tensor(tokens)[:, None], stacked)
        for j in range(len(prompts)):
            ref, ref_states[j] = lm.forward([ref_tokens[j]], ref_states[j])
            max_diff = max(max_diff, float((ref - batched[j]).abs().max()))
            ref_tokens[j] = int(ref.argmax())
        tokens = [int(t) for t in batched.argmax(-1)]
        assert tokens == ref_tokens
    # bf16: the same ops in the same order, so results stay within bf16 rounding (here 0).
    assert max_diff <= tol


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_int8_linears_stay_close_to_fp32_and_mostly_agree_greedily(
    checkpoints: dict[str, Path], version: str
) -> None:
    """Dynamically quantized weights are approximate: fed the same tokens as the fp32
    step, the logits stay within a fraction of their spread and the greedy choice is
    mostly the same (a random model's top two are often close, so not always)."""
    lm = load_rwkv(checkpoints[version], "cpu fp32")
    exact, approx = forward(lm), forward(lm, linear="int8")
    assert approx.mm.packed and not exact.mm.packed
    prompts = [[1, 2, 3, 4, 5], [100, 200], [5000, 6000, 7000], [42]]
    st_exact = stack([lm.zero_state() for _ in prompts])
    st_approx = stack([lm.zero_state() for _ in prompts])
    lengths = torch.tensor([len(p) for p in prompts])
    tokens = torch.zeros((len(prompts), max(map(len, prompts))), dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.tensor(p)
    a, b = exact(tokens, st_exact, lengths), approx(tokens, st_approx, lengths)
    worst, agree, steps = 0.0, 0, 16
    for _ in range(steps):
        worst = max(worst, float((a - b).abs().max() / a.std()))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        chosen = a.argmax(-1)[:, None]
        a, b = exact(chosen, st_exact), approx(chosen, st_approx)
    # Measured on these models: at most 0.41 of the spread, 90-92 % agreement.
    assert 0.0 < worst <= 0.6
    assert agree >= 0.75 * steps * len(prompts)


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


@pytest.mark.parametrize("linear", ["dense", "onednn"])
@pytest.mark.parametrize("version", ["x060", "x070"])
def test_chunked_prefill_equals_the_sequential_recurrence(
    checkpoints: dict[str, Path], tmp_path: Path, version: str, linear: LinearKind
) -> None:
    """Across chunk boundaries, from a State file and from a mid-prompt (cached) state."""
    from engines.rwkv_tiny import write_state_file

    lm = load_rwkv(checkpoints[version], "cpu fp32")
    step = forward(lm, chunk=16, linear=linear)
    state_file = load_state_file(write_state_file(tmp_path / "s.pth", n_layer=3, n_embd=256), lm)
    prompt = [(i * 7919) % 60000 + 1 for i in range(53)]  # 53 = 3 chunks and a bit
    for initial in (lm.zero_state(), state_file):
        ref_logits, ref_state = lm.forward(prompt, [t.clone() for t in initial])
        st = stack([[t.clone() for t in initial]])
        logits = step(torch.tensor([prompt]), st)
        assert float((logits[0] - ref_logits).abs().max()) <= 1e-4
        for a, b in zip(st, ref_state, strict=True):
            assert float((a[0] - b).abs().max()) <= 1e-4
        # Resuming from the state after a prefix (what the prefix cache does).
        _, mid = lm.forward(prompt[:20], [t.clone() for t in initial])
        st = stack([mid])
        logits = step(torch.tensor([prompt[20:]]), st)
        assert float((logits[0] - ref_logits).abs().max()) <= 1e-4


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_batched_prefill_of_different_lengths_equals_each_alone(
    checkpoints: dict[str, Path], version: str
) -> None:
    lm = load_rwkv(checkpoints[version], "cpu fp32")
    step = forward(lm, chunk=8)
    prompts = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [300, 301], [42] * 19, [7]]
    T = max(map(len, prompts))
    tokens = torch.zeros((len(prompts), T), dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.tensor(p)
    st = stack([lm.zero_state() for _ in prompts])
    logits = step(tokens, st, torch.tensor([len(p) for p in prompts]))
    for i, p in enumerate(prompts):
        alone = stack([lm.zero_state()])
        ref = step(torch.tensor([p]), alone)
        assert float((logits[i] - ref[0]).abs().max()) <= 1e-4
        for a, b in zip(st, alone, strict=True):
            assert float((a[i] - b[0]).abs().max()) <= 1e-4


def test_the_wkv_mapping_matches_flash_linear_attentions_reference() -> None:
    """fla's own torch reference of the recurrence its CUDA kernels compute (the DPLR delta
    rule) gives our outputs and states with our argument mapping, so the GPU path computes
    what the CPU path does."""
    import importlib.util

    from engines.rwkv.wkv import wkv7_chunked

    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fla-core is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    naive_path = root / "ops/generalized_delta_rule/dplr/naive.py"
    mod_spec = importlib.util.spec_from_file_location("fla_dplr_naive", naive_path)
    assert mod_spec is not None and mod_spec.loader is not None
    naive = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(naive)
    torch.manual_seed(0)
    B, T, H, N = 2, 40, 3, 8
    r, k, v = (torch.randn(B, T, H, N) for _ in range(3))
    logw = -0.606531 * torch.sigmoid(torch.randn(B, T, H, N))
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N), dim=-1)
    a, b = -kk, kk * torch.sigmoid(torch.randn(B, T, H, N))
    s0 = torch.randn(B, H, N, N)
    ours, our_state = wkv7_chunked(s0, r, logw, k, v, a, b, 16)

    def heads(t: torch.Tensor) -> torch.Tensor:  # fla's reference takes [B, H, T, N]
        return t.transpose(1, 2)

    ref, ref_state = naive.dplr_recurrence(
        heads(r) * N**0.5,
        heads(k),
        heads(v),
        heads(a),
        heads(b),
        heads(logw),
        initial_state=s0.transpose(-1, -2),
        output_final_state=True,
    )
    assert float((ours - heads(ref)).abs().max()) <= 1e-4
    assert float((our_state - ref_state.transpose(-1, -2)).abs().max()) <= 1e-4
