"""The GPU path's device logic, checked on CPU: where the embedding lives, the CUDA-graph
capture mode, and the fallback from a failing WKV kernel to the torch form."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from engines.rwkv.forward import Forward
from engines.rwkv.graphs import DecodeGraphs
from engines.rwkv.model import load_rwkv
from engines.rwkv.options import RWKVOptions
from engines.rwkv.wkv import Wkv, wkv6_chunked, wkv7_chunked, wkv7_sequential
from engines.rwkv_tiny import write_rwkv_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rwkv-dev")
    return {
        v: write_rwkv_checkpoint(out / f"{v}.pth", v, n_layer=2, n_embd=128, seed=3)
        for v in ("x060", "x070")
    }


# -- the embedding ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_the_embedding_lives_on_the_device_and_dtype_the_step_computes_in(
    checkpoints: dict[str, Path], version: str
) -> None:
    """The package keeps x060's embedding on the host; a step on another device (here the
    meta device standing in for a GPU) looks tokens up in a table on its own device."""
    lm = load_rwkv(checkpoints[version], "cpu fp32")
    on_device = dataclasses.replace(lm, device="meta", dtype=torch.float16)
    fwd = Forward(on_device, Wkv("meta", "torch"))
    assert fwd.emb.device.type == "meta"
    assert fwd.emb.dtype == torch.float16
    # Tokens from the host are looked up on the step's device.
    x = fwd.embed(torch.tensor([[1, 2, 3]]))
    assert x.device.type == "meta"
    assert tuple(x.shape) == (1, 3, lm.n_embd)


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_the_embedding_lookup_equals_the_packages_table(
    checkpoints: dict[str, Path], version: str
) -> None:
    lm = load_rwkv(checkpoints[version], "cpu bf16")
    fwd = Forward(lm, Wkv("cpu", "torch"))
    table = lm.model.w["emb.weight"] if version == "x060" else lm.model.z["emb.weight"]
    tokens = torch.tensor([[5, 65535], [0, 42]])
    got = fwd.embed(tokens)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, table[tokens].to(torch.bfloat16))


# -- CUDA graphs -----------------------------------------------------------------------


class _GraphAPI:
    """The part of torch.cuda's graph API that capture uses, recording each capture's
    arguments; a replay records its graph."""

    def __init__(self) -> None:
        self.captures: list[dict[str, Any]] = []
        self.replayed: list[Any] = []
        api = self

        class _Graph:
            def replay(self) -> None:
                api.replayed.append(self)

        class _Stream:
            def wait_stream(self, other: Any) -> None:
                pass

        self.CUDAGraph = _Graph
        self.Stream = _Stream
        self._stream = _Stream()

    def current_stream(self) -> Any:
        return self._stream

    @contextlib.contextmanager
    def stream(self, s: Any) -> Iterator[None]:
        yield

    def graph_pool_handle(self) -> object:
        return object()

    @contextlib.contextmanager
    def graph(self, graph: Any, **kwargs: Any) -> Iterator[None]:
        self.captures.append(kwargs)
        yield

    def synchronize(self) -> None:
        pass


def test_decode_graphs_capture_thread_locally_by_default() -> None:
    api = _GraphAPI()
    runs: list[int] = []

    def run(b: int) -> torch.Tensor:
        runs.append(b)
        return torch.full((b, 4), float(b))

    default = RWKVOptions().cuda_graph_capture_mode
    assert default == "thread_local"
    graphs = DecodeGraphs(run, 5, capture_error_mode=default, cuda=api)
    graphs.capture()
    assert graphs.sizes == [1, 2, 4, 5]
    assert [c["capture_error_mode"] for c in api.captures] == ["thread_local"] * 4
    assert all("pool" in c for c in api.captures)
    # A batch of 3 replays the bucket of 4 and reads its first 3 rows.
    out = graphs(3)
    assert tuple(out.shape) == (3, 4) and float(out[0, 0]) == 4.0
    assert len(api.replayed) == 1


def test_the_capture_mode_is_an_engine_option() -> None:
    assert RWKVOptions(cuda_graph_capture_mode="global").cuda_graph_capture_mode == "global"
    with pytest.raises(ValueError, match="cuda_graph_capture_mode"):
        RWKVOptions(cuda_graph_capture_mode="sometimes")  # type: ignore[arg-type]


# -- WKV fallback ----------------------------------------------------------------------


def _raising(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("PassManager::run failed")  # what a Triton compile failure raises


def _wkv7_inputs(P: int, T: int, H: int, N: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    r, k, v = (torch.randn(P, T, H, N, generator=g) for _ in range(3))
    logw = -0.606531 * torch.sigmoid(torch.randn(P, T, H, N, generator=g))
    kk = torch.nn.functional.normalize(torch.randn(P, T, H, N, generator=g), dim=-1)
    a, b = -kk, kk * torch.sigmoid(torch.randn(P, T, H, N, generator=g))
    s0 = torch.randn(P, H, N, N, generator=g)
    return s0, r, logw, k, v, a, b


def test_a_failing_wkv_kernel_falls_back_to_the_torch_form_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    told: list[str] = []
    wkv = Wkv("cuda", "fla", 16, name="m", kernels=(_raising, _raising))
    wkv.on_fallback = told.append
    assert wkv.backend == "fla"
    s0, r, logw, k, v, a, b = _wkv7_inputs(3, 21, 2, 8)
    lengths = torch.tensor([21, 5, 13])
    with caplog.at_level(logging.WARNING, logger="engines.rwkv.wkv"):
        o, s = wkv.rwkv7(s0, r, logw, k, v, a, b, lengths)
        again, _ = wkv.rwkv7(s0, r, logw, k, v, a, b, lengths)
    assert wkv.backend == "torch"
    assert told == [wkv.fallback_reason] and "RuntimeError" in told[0]
    assert len([rec for rec in caplog.records if "fla WKV kernel failed" in rec.message]) == 1
    # The torch form, row by row at each row's own length.
    for i, n in enumerate(lengths.tolist()):
        ref_o, ref_s = wkv7_chunked(
            s0[i : i + 1], *(t[i : i + 1, :n] for t in (r, logw, k, v, a, b)), 16
        )
        assert torch.allclose(o[i, :n], ref_o[0], atol=1e-5)
        assert torch.allclose(s[i], ref_s[0], atol=1e-5)
    assert torch.equal(o, again)


def test_a_failing_rwkv6_kernel_falls_back_too() -> None:
    wkv = Wkv("cuda", "fla", 16, kernels=(_raising, _raising))
    g = torch.Generator().manual_seed(2)
    r, k, v = (torch.randn(2, 9, 2, 8, generator=g) for _ in range(3))
    logw = -torch.exp(torch.randn(2, 9, 2, 8, generator=g))
    u, s0 = torch.randn(2, 8, generator=g), torch.randn(2, 2, 8, 8, generator=g)
    o, s = wkv.rwkv6(s0, r, logw, k, v, u)
    ref_o, ref_s = wkv6_chunked(s0, r, logw, k, v, u, 16)
    assert wkv.backend == "torch"
    assert torch.equal(o, ref_o) and torch.equal(s, ref_s)


def _fla7_by_recurrence(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    initial_state: torch.Tensor,
    cu_seqlens_cpu: torch.Tensor | None = None,
    lower_bound: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``chunk_rwkv7``'s contract (key-row states, packed rows, the decay bound it is
    promised) computed by the token-by-token recurrence."""
    assert lower_bound is not None and float(w.min()) >= lower_bound
    assert float(w.max()) < 0  # no padding position reaches the kernel
    bounds = cu_seqlens_cpu.tolist() if cu_seqlens_cpu is not None else None
    rows = [(slice(None), i) for i in range(r.shape[0])] if bounds is None else []
    if bounds is not None:
        rows = [(slice(bounds[i], bounds[i + 1]), i) for i in range(len(bounds) - 1)]
    outs, states = [], []
    for span, i in rows:
        batch = slice(i, i + 1) if bounds is None else slice(0, 1)
        o, s = wkv7_sequential(
            initial_state[i : i + 1].transpose(-1, -2),
            *(t[batch, span] for t in (r, w, k, v, a, b)),
        )
        outs.append(o)
        states.append(s)
    out = torch.cat(outs, dim=1 if bounds is not None else 0)
    return out, torch.cat(states).transpose(-1, -2)


def test_prefill_rows_reach_the_kernel_packed_with_their_decay_bound_kept() -> None:
    wkv = Wkv("cuda", "fla", 16, kernels=(_fla7_by_recurrence, _raising))
    wkv.probe("x070", 2, 8, torch.float32, "cpu")
    assert wkv.backend == "fla" and wkv.fallback_reason is None
    s0, r, logw, k, v, a, b = _wkv7_inputs(3, 21, 2, 8)
    lengths = torch.tensor([21, 5, 13])
    o, s = wkv.rwkv7(s0, r, logw, k, v, a, b, lengths)
    whole, _ = wkv.rwkv7(s0, r, logw, k, v, a, b)
    assert wkv.backend == "fla"
    for i, n in enumerate(lengths.tolist()):
        ref_o, ref_s = wkv7_chunked(
            s0[i : i + 1], *(t[i : i + 1, :n] for t in (r, logw, k, v, a, b)), 16
        )
        assert torch.allclose(o[i, :n], ref_o[0], atol=1e-4)
        assert torch.allclose(s[i], ref_s[0], atol=1e-4)
    ref_whole, _ = wkv7_chunked(s0, r, logw, k, v, a, b, 16)
    assert torch.allclose(whole, ref_whole, atol=1e-4)


def test_a_kernel_that_fails_or_computes_something_else_falls_back_at_load() -> None:
    raising = Wkv("cuda", "fla", 16, kernels=(_raising, _raising))
    raising.probe("x060", 2, 8, torch.float32, "cpu")
    assert raising.backend == "torch" and "RuntimeError" in (raising.fallback_reason or "")

    def zeros(r: torch.Tensor, *args: Any, initial_state: torch.Tensor, **kw: Any) -> Any:
        return torch.zeros_like(r), torch.zeros_like(initial_state)

    wrong = Wkv("cuda", "fla", 16, kernels=(zeros, zeros))
    wrong.probe("x070", 2, 8, torch.float32, "cpu")
    assert wrong.backend == "torch" and "differs" in (wrong.fallback_reason or "")
