"""Per-sequence sampling: RWKV-style penalties with decay, temperature, top-k, top-p."""

from __future__ import annotations

import math
import os
from typing import Any

from engines.generation import SamplingParams

__all__ = ["Sampler"]


class Sampler:
    """Holds one sequence's RNG and penalty counts; ``sample`` picks the next token."""

    def __init__(self, params: SamplingParams, choice_index: int = 0) -> None:
        import torch

        self.p = params
        seed = params.seed
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") >> 1
        # Each of the n choices gets its own stream; the same seed gives the same text.
        self.gen = torch.Generator().manual_seed((seed * 1_000_003 + choice_index) % (2**63))
        self.occurrence: dict[int, float] = {}

    def sample(self, logits: Any) -> tuple[int, Any]:
        """Next token and the (penalised) log-probabilities it was drawn from."""
        import torch

        p = self.p
        logits = logits.float().cpu()
        if self.occurrence and (p.presence_penalty or p.frequency_penalty):
            ids = torch.tensor(list(self.occurrence.keys()), dtype=torch.long)
            counts = torch.tensor(list(self.occurrence.values()), dtype=torch.float32)
            logits = logits.clone()
            logits[ids] -= p.presence_penalty + counts * p.frequency_penalty
        logprobs = torch.log_softmax(logits, dim=-1)
        if p.temperature <= 0.0:
            token = int(torch.argmax(logits))
        else:
            scaled = logits / p.temperature
            if p.top_k and p.top_k > 0:
                kth = torch.topk(scaled, min(p.top_k, scaled.numel())).values[-1]
                scaled = scaled.masked_fill(scaled < kth, -math.inf)
            probs = torch.softmax(scaled, dim=-1)
            if 0.0 < p.top_p < 1.0:
                sorted_probs, order = torch.sort(probs, descending=True)
                cum = torch.cumsum(sorted_probs, dim=-1)
                drop = cum - sorted_probs > p.top_p
                sorted_probs[drop] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            token = int(torch.multinomial(probs, 1, generator=self.gen))
        if p.presence_penalty or p.frequency_penalty:
            for key in self.occurrence:
                self.occurrence[key] *= p.penalty_decay
            self.occurrence[token] = self.occurrence.get(token, 0.0) + 1.0
        return token, logprobs
