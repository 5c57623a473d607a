"""Sampling for a batch of sequences, each with its own parameters and RNG.

RWKV-style penalties with decay, temperature, top-k and top-p. The softmax and a top-k
pre-selection run once over the whole batch; nucleus sampling then works on the
``CANDIDATES`` most likely tokens of each row, falling back to a full sort for a row
whose nucleus is wider. Each row's result depends only on its own logits and RNG, so a
sequence samples the same tokens alone or in a batch.
"""

from __future__ import annotations

import os
from typing import Any

from engines.generation import SamplingParams

__all__ = ["CANDIDATES", "Sampler", "sample_rows"]

CANDIDATES = 1024


class Sampler:
    """One sequence's sampling state: its RNG and its penalty counts."""

    def __init__(self, params: SamplingParams, choice_index: int = 0) -> None:
        import torch

        self.p = params
        seed = params.seed
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") >> 1
        # Each of the n choices gets its own stream; the same seed gives the same text.
        self.gen = torch.Generator().manual_seed((seed * 1_000_003 + choice_index) % (2**63))
        self.occurrence: dict[int, float] = {}

    @property
    def penalised(self) -> bool:
        return bool(self.occurrence) and bool(self.p.presence_penalty or self.p.frequency_penalty)

    def observe(self, token: int) -> None:
        p = self.p
        if p.presence_penalty or p.frequency_penalty:
            for key in self.occurrence:
                self.occurrence[key] *= p.penalty_decay
            self.occurrence[token] = self.occurrence.get(token, 0.0) + 1.0

    def sample(self, logits: Any) -> tuple[int, Any]:
        tokens, logprobs = sample_rows([self], logits.unsqueeze(0))
        return tokens[0], logprobs[0]


def sample_rows(samplers: list[Sampler], logits: Any) -> tuple[list[int], list[Any]]:
    """Next token of each row of ``logits [B, V]``; log-probs per row when a row asks."""
    import torch

    logits = logits.float()
    if logits.device.type != "cpu":
        logits = logits.cpu()
    if any(s.penalised for s in samplers):
        logits = logits.clone()
        for row, s in enumerate(samplers):
            if s.penalised:
                ids = torch.tensor(list(s.occurrence), dtype=torch.long)
                counts = torch.tensor(list(s.occurrence.values()), dtype=torch.float32)
                logits[row, ids] -= s.p.presence_penalty + counts * s.p.frequency_penalty
    want_lp = [s.p.logprobs for s in samplers]
    log_probs: list[Any] = [None] * len(samplers)
    if any(want_lp):
        all_lp = torch.log_softmax(logits, dim=-1)
        log_probs = [all_lp[i] if w else None for i, w in enumerate(want_lp)]
    temps = torch.tensor(
        [s.p.temperature if s.p.temperature > 0 else 1.0 for s in samplers], dtype=torch.float32
    )
    probs = torch.softmax(logits / temps.unsqueeze(1), dim=-1)
    k = min(CANDIDATES, probs.shape[-1])
    top_probs, top_ids = torch.topk(probs, k, dim=-1)
    tokens: list[int] = []
    for row, s in enumerate(samplers):
        if s.p.temperature <= 0.0:
            token = int(top_ids[row, 0])
        else:
            token = _draw(s, probs[row], top_probs[row], top_ids[row])
        s.observe(token)
        tokens.append(token)
    return tokens, log_probs


def _draw(s: Sampler, probs: Any, top_probs: Any, top_ids: Any) -> int:
    """One row's draw from its top-k / nucleus candidates (the pre-selected top
    ``CANDIDATES`` unless the row needs wider)."""
    import torch

    p, k = s.p, top_probs.shape[-1]
    cand_p, cand_ids = top_probs, top_ids
    if p.top_k and p.top_k > 0:
        if p.top_k > k:
            cand_p, cand_ids = torch.sort(probs, descending=True)
        cand_p, cand_ids = cand_p[: p.top_k], cand_ids[: p.top_k]
    elif p.top_p < 1.0 and float(cand_p.sum()) < p.top_p:
        cand_p, cand_ids = torch.sort(probs, descending=True)  # wide nucleus
    elif p.top_p >= 1.0:
        cand_p, cand_ids = probs, torch.arange(probs.shape[-1])
    if p.top_p < 1.0:
        cum = torch.cumsum(cand_p, dim=-1)
        keep = int(torch.searchsorted(cum, torch.tensor([p.top_p])).item()) + 1
        cand_p, cand_ids = cand_p[:keep], cand_ids[:keep]
    pick = int(torch.multinomial(cand_p, 1, generator=s.gen))
    return int(cand_ids[pick])
