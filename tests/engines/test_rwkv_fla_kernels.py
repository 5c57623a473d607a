"""flash-linear-attention's Triton kernels (``chunk_rwkv7``, ``chunk_rwkv6``) through the
project's ``Wkv``, run by Triton's interpreter on CPU tensors (tiny shapes, fp32, padded
batches), against the token-by-token recurrence; and a model's chunked prefill through
them against the torch form. The GPU runs these same kernels compiled.

The interpreter must be switched on before Triton builds fla's kernels, so the checks run
in a child process (this file, run as a module) that prints its measurements as JSON; the
tests here assert on them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


# -- the child: shims and measurements -------------------------------------------------


def _shims() -> None:
    """Three gaps between Triton 3.6's interpreter and fla 0.6's kernels, closed here."""
    import builtins

    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter
    from triton.runtime.autotuner import Autotuner

    # 1. The autotuner benchmarks its configs through a GPU driver, which the interpreter
    #    lacks: take each kernel's first config, unmeasured (timings do not matter here).
    prune = Autotuner.prune_configs
    Autotuner.prune_configs = lambda self, kwargs: prune(self, kwargs)[:1]  # type: ignore[method-assign]
    Autotuner.do_bench = property(lambda self: lambda fn, quantiles: [0.0, 0.0, 0.0])  # type: ignore[assignment, method-assign]

    # 2. fla binds ``gather = tl.gather`` at import, a builtin the interpreter only
    #    replaces on ``tl`` itself: route the alias through ``tl`` at call time.
    def gather(src: Any, index: Any, axis: Any, _builder: Any = None) -> Any:
        return tl.gather(src, index, axis)

    # 3. Interpreted ``for`` loops yield Python ints where compiled ones yield tensors
    #    (fla calls ``i_t.to(tl.int64)``), and a one-element bound (``min(BC, T - ...)``)
    #    must index as a scalar, which numpy >= 2.4 no longer does for 1-d arrays.
    class LoopInt(int):
        def to(self, *args: Any, **kwargs: Any) -> LoopInt:
            return self

    class Range:
        def __init__(self, *args: Any) -> None:
            self._r = builtins.range(*(int(a) for a in args))

        def __iter__(self) -> Any:
            return (LoopInt(i) for i in self._r)

        def __len__(self) -> int:
            return len(self._r)

    patch_tensor = interpreter._patch_lang_tensor

    def patch_tensor_index(tensor: Any, scope: Any) -> None:
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).flat[0]))

    interpreter._patch_lang_tensor = patch_tensor_index  # type: ignore[assignment]

    import fla.ops.rwkv6
    import fla.ops.rwkv7  # noqa: F401  # the kernels' modules, loaded to be patched

    for name, module in list(sys.modules.items()):
        if name.startswith("fla.ops.") and module is not None:
            if getattr(module, "gather", None) is tl.gather:
                module.gather = gather  # type: ignore[attr-defined]
            module.range = Range  # type: ignore[attr-defined]


def _measure() -> dict[str, Any]:
    import tempfile

    import torch

    from engines.rwkv.forward import Forward
    from engines.rwkv.model import load_rwkv
    from engines.rwkv.wkv import Wkv, wkv6_sequential, wkv7_sequential
    from engines.rwkv_tiny import write_rwkv_checkpoint

    out: dict[str, Any] = {}
    fla = Wkv("cpu", "fla", 16)
    out["backend"] = fla.backend
    g = torch.Generator().manual_seed(0)
    P, T, H, N = 3, 70, 2, 16  # 70 tokens: a full 64-token chunk and a part
    lengths = torch.tensor([70, 9, 33])

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    r, k, v = rand(P, T, H, N), rand(P, T, H, N), rand(P, T, H, N)
    logw = -0.606531 * torch.sigmoid(rand(P, T, H, N))
    kk = torch.nn.functional.normalize(rand(P, T, H, N), dim=-1)
    a, b = -kk, kk * torch.sigmoid(rand(P, T, H, N))
    s0 = 0.3 * rand(P, H, N, N)
    for lens in (None, lengths):
        o, s = fla.rwkv7(s0, r, logw, k, v, a, b, lens)
        d_o = d_s = 0.0
        for i in range(P):
            n = T if lens is None else int(lens[i])
            ref_o, ref_s = wkv7_sequential(
                s0[i : i + 1], *(t[i : i + 1, :n] for t in (r, logw, k, v, a, b))
            )
            d_o = max(d_o, float((o[i, :n] - ref_o[0]).abs().max()))
            d_s = max(d_s, float((s[i] - ref_s[0]).abs().max()))
        key = "padded" if lens is not None else "equal"
        out[f"rwkv7_{key}"] = {"out": d_o, "state": d_s}

    w6 = -torch.exp(rand(P, T, H, N).clamp(max=2))
    u = rand(H, N)
    for lens in (None, lengths):
        o, s = fla.rwkv6(s0, r, w6, k, v, u, lens)
        d_o = d_s = 0.0
        for i in range(P):
            n = T if lens is None else int(lens[i])
            ref_o, ref_s = wkv6_sequential(
                s0[i : i + 1], *(t[i : i + 1, :n] for t in (r, w6, k, v)), u
            )
            d_o = max(d_o, float((o[i, :n] - ref_o[0]).abs().max()))
            d_s = max(d_s, float((s[i] - ref_s[0]).abs().max()))
        key = "padded" if lens is not None else "equal"
        out[f"rwkv6_{key}"] = {"out": d_o, "state": d_s}
    out["fell_back"] = fla.fallback_reason

    # A model's batched prefill (padded prompts) through the kernels and the torch form.
    with tempfile.TemporaryDirectory() as tmp:
        for version in ("x060", "x070"):
            path = write_rwkv_checkpoint(
                Path(tmp) / f"{version}.pth", version, n_layer=1, n_embd=64, seed=5
            )
            lm = load_rwkv(path, "cpu fp32")
            prompts = [
                [(i * 7919 + j * 31) % 60000 + 1 for j in range(n)]
                for i, n in enumerate((21, 4, 13))
            ]
            tokens = torch.zeros((3, 21), dtype=torch.long)
            for i, p in enumerate(prompts):
                tokens[i, : len(p)] = torch.tensor(p)
            lens = torch.tensor([len(p) for p in prompts])
            results = []
            for kernel in ("fla", "torch"):
                wkv = Wkv("cpu", kernel, 16)
                st = [torch.stack([t] * 3) for t in lm.zero_state()]
                logits = Forward(lm, wkv)(tokens, st, lens)
                results.append((wkv.backend, logits, st))
            (b1, l1, s1), (_, l2, s2) = results
            out[f"prefill_{version}"] = {
                "backend": b1,
                "logits": float((l1 - l2).abs().max()),
                "state": max(float((x - y).abs().max()) for x, y in zip(s1, s2, strict=True)),
            }
    return out


def _child() -> None:
    import warnings

    # fla warns that it runs on a CPU and that fp32 is not its usual dtype: both are this
    # lane's point.
    warnings.simplefilter("ignore")
    _shims()
    sys.stdout.write(json.dumps(_measure()) + "\n")


# -- the tests ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured() -> dict[str, Any]:
    for module in ("triton", "fla"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the dev extra installs it)")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.engines.test_rwkv_fla_kernels"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_the_lane_runs_fla_and_not_the_fallback(measured: dict[str, Any]) -> None:
    assert measured["backend"] == "fla"
    assert measured["fell_back"] is None
    assert measured["prefill_x060"]["backend"] == measured["prefill_x070"]["backend"] == "fla"


@pytest.mark.parametrize("version", ["rwkv7", "rwkv6"])
@pytest.mark.parametrize("batch", ["equal", "padded"])
def test_flas_kernel_through_wkv_equals_the_sequential_recurrence(
    measured: dict[str, Any], version: str, batch: str
) -> None:
    diffs = measured[f"{version}_{batch}"]
    assert diffs["out"] <= 2e-3 and diffs["state"] <= 2e-3, diffs


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_a_models_padded_prefill_through_fla_equals_the_torch_form(
    measured: dict[str, Any], version: str
) -> None:
    diffs = measured[f"prefill_{version}"]
    assert diffs["logits"] <= 2e-3 and diffs["state"] <= 2e-3, diffs


if __name__ == "__main__":
    _child()
