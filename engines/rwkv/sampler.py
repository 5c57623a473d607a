"""Sampling for every row of the batch at once, on the device.

Each row keeps its own parameters in the pool (temperature, top-p, top-k, penalties with
decay, seed, step counter). Randomness is counter-based: row ``r`` at its step ``t`` draws
``u = hash(seed_r, t)``, and the token is the inverse CDF of its (penalised, tempered,
truncated) distribution at ``u``. A row's token therefore depends only on its own logits,
seed and step, never on its neighbours: the same seed gives the same text batched or
alone. Penalty counts live in the pool too and decay in place. The only host transfer per
step is the chosen ids (and log-probs for the rows that ask).
"""

from __future__ import annotations

import os
from typing import Any

from engines.generation import SamplingParams

__all__ = ["CANDIDATES", "fields", "kind", "sample", "set_row", "uniform"]

CANDIDATES = 1024
_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    c &= _MASK64
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _shr(x: Any, s: int) -> Any:
    """Logical right shift of int64 (torch shifts signed values arithmetically)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix(x: Any) -> Any:
    """splitmix64's finaliser on int64 tensors (wrapping multiplication)."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def uniform(seed: Any, step: Any) -> Any:
    """One uniform in (0, 1) per row, from its seed and step (int64 tensors)."""
    import torch

    h = _mix(seed ^ _mix(step))
    return (_shr(h, 11).to(torch.float64) + 0.5) * (2.0**-53)


def fields(capacity: int, vocab: int, device: str) -> dict[str, Any]:
    import torch

    def f(dtype: Any, *shape: int) -> Any:
        return torch.zeros((capacity, *shape), dtype=dtype, device=device)

    return {
        "temperature": f(torch.float32),
        "top_p": f(torch.float32),
        "top_k": f(torch.int64),
        "presence": f(torch.float32),
        "frequency": f(torch.float32),
        "decay": f(torch.float32),
        "seed": f(torch.int64),
        "step": f(torch.int64),
        "counts": f(torch.float32, vocab),
    }


def row_values(params: SamplingParams, choice: int) -> dict[str, Any]:
    import torch

    seed = params.seed
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1
    mixed = (seed * 1_000_003 + choice) % (2**63)
    return {
        "temperature": torch.tensor(params.temperature),
        "top_p": torch.tensor(params.top_p),
        "top_k": torch.tensor(params.top_k),
        "presence": torch.tensor(params.presence_penalty),
        "frequency": torch.tensor(params.frequency_penalty),
        "decay": torch.tensor(params.penalty_decay),
        "seed": torch.tensor(mixed),
        "step": torch.tensor(0),
        "counts": torch.tensor(0.0),
    }


def set_row(pool: Any, row: int, params: SamplingParams, choice: int) -> None:
    pool.write(row, row_values(params, choice))


def kind(params: SamplingParams) -> str:
    """How a row samples: greedy, from its whole distribution (full), within its top-k
    alone (topk), or within a nucleus (cut: top-p, with or without top-k)."""
    if params.temperature <= 0:
        return "greedy"
    if params.top_p < 1.0:
        return "cut"
    return "topk" if params.top_k > 0 else "full"


def sample(
    pool: Any,
    logits: Any,
    *,
    penalised: bool,
    want_logprobs: bool,
    kinds: frozenset[str] = frozenset({"greedy", "full", "topk", "cut"}),
    max_top_k: int | None = None,
) -> tuple[Any, Any | None]:
    """Tokens ``[B]`` for the first ``B = len(logits)`` rows (device tensor) and, when
    asked, their log-probabilities ``[B, V]`` (before temperature, after penalties).
    ``kinds`` (what the rows need, known on the host) skips the work no row needs: greedy
    rows take the argmax, top-k rows draw among their candidates straight from the logits
    (no softmax or sort over the vocabulary), and only full and nucleus rows normalise
    the whole vocabulary. ``max_top_k``, the rows' largest ``top_k`` (known on the host;
    None: read from the pool), sizes the candidates. Each row's draw is computed the same
    way whatever its neighbours are."""
    import torch

    B = logits.shape[0]
    x = logits.float()

    def view(name: str) -> Any:
        return pool.tensors[name][:B]

    if penalised:
        counts = view("counts")
        x = x - (view("presence")[:, None] * (counts > 0) + view("frequency")[:, None] * counts)
    logprobs = torch.log_softmax(x, dim=-1) if want_logprobs else None
    temp = view("temperature")
    tokens = x.argmax(dim=-1)
    if kinds - {"greedy"}:
        u = uniform(view("seed"), view("step")).to(torch.float32)
        top_p, top_k = view("top_p"), view("top_k")
        if max_top_k is None:
            max_top_k = int(top_k.max())
        drawn = tokens
        if "topk" in kinds:
            only_k = (top_p >= 1.0) & (top_k > 0)
            drawn = torch.where(only_k, _top_k(x, temp, u, top_k, max_top_k), drawn)
        if kinds & {"full", "cut"}:
            probs = torch.softmax(x / temp.clamp(min=1e-6)[:, None], dim=-1)
            if "cut" in kinds:
                cut = _truncated(probs, u, top_p, top_k, max_top_k)
                drawn = torch.where(top_p < 1.0, cut, drawn)
            if "full" in kinds:
                whole = (top_p >= 1.0) & (top_k <= 0)
                drawn = torch.where(whole, _inverse_cdf(probs, u), drawn)
        tokens = torch.where(temp <= 0, tokens, drawn)
    if penalised:
        counts = view("counts")
        counts.mul_(view("decay")[:, None])
        counts[torch.arange(B, device=x.device), tokens] += 1.0
    view("step").add_(1)
    return tokens, logprobs


def _inverse_cdf(probs: Any, u: Any) -> Any:
    import torch

    cum = torch.cumsum(probs, dim=-1)
    idx = torch.searchsorted(cum, (u * cum[:, -1]).unsqueeze(-1)).squeeze(-1)
    return idx.clamp(max=probs.shape[-1] - 1)


def _top_k(x: Any, temp: Any, u: Any, top_k: Any, max_top_k: int) -> Any:
    """Inverse-CDF sampling within each row's ``top_k`` most likely tokens, from the
    logits: the candidates' weights relative to the row's best, ``exp((x - x_max) / T)``,
    need no normaliser over the vocabulary (the draw scales ``u`` by the kept total).
    A row's weights involve its own top ``top_k`` candidates alone, so its draw does not
    depend on how many candidates its neighbours asked for."""
    import torch

    k = max(1, min(x.shape[-1], max_top_k))
    cand_x, cand_i = torch.topk(x, k, dim=-1)
    weights = ((cand_x - cand_x[:, :1]) / temp.clamp(min=1e-6)[:, None]).exp()
    rank = torch.arange(k, device=x.device)[None, :]
    weights = weights * (rank < top_k[:, None])
    pick = _inverse_cdf(weights, u)
    return cand_i.gather(-1, pick.unsqueeze(-1)).squeeze(-1)


def _truncated(probs: Any, u: Any, top_p: Any, top_k: Any, max_top_k: int) -> Any:
    """Inverse-CDF sampling within each row's top-k / nucleus, over a top-k preselection
    of ``max(CANDIDATES, largest top_k)`` candidates rather than a sort of the whole
    vocabulary. Exact: a row that truncates by top-p alone and whose nucleus is wider than
    the candidates is sorted in full (one host check per step tells whether any is)."""
    import torch

    V = probs.shape[-1]
    k = min(V, max(CANDIDATES, max_top_k))
    cand_p, cand_i = torch.topk(probs, k, dim=-1)
    if k < V:
        wide = (top_k <= 0) & (top_p < 1.0) & (cand_p.sum(-1) < top_p)
        if bool(wide.any()):
            rows = wide.nonzero().flatten()
            full_p, full_i = torch.sort(probs[rows], dim=-1, descending=True)
            cand_p = torch.cat([cand_p, torch.zeros_like(probs[:, : V - k])], dim=-1)
            cand_i = torch.cat([cand_i, torch.zeros_like(cand_i[:, :1]).expand(-1, V - k)], dim=-1)
            cand_p[rows], cand_i[rows] = full_p, full_i
    rank = torch.arange(cand_p.shape[-1], device=probs.device)[None, :]
    keep = (torch.cumsum(cand_p, dim=-1) - cand_p) < top_p[:, None]
    keep &= (top_k[:, None] <= 0) | (rank < top_k[:, None])
    keep[:, 0] = True
    kept = cand_p * keep
    pick = _inverse_cdf(kept, u)
    return cand_i.gather(-1, pick.unsqueeze(-1)).squeeze(-1)
