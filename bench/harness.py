"""What the chat benchmarks share: an engine in process and synthetic prompts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["InProcess", "prompt_tokens", "sync"]


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class InProcess:
    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        from engines.base import ModelInfo
        from engines.rwkv.engine import RWKVChatEngine

        self.engine = RWKVChatEngine(ModelInfo("bench", "chat", "rwkv"), path, options)

    async def run(
        self,
        tokens: list[int],
        max_tokens: int,
        bounds: list[int] | None = None,
        constraint: Any = None,
    ) -> tuple[float, float, int]:
        """(seconds to first token, seconds total, tokens generated)."""
        from engines.generation import GenerationRequest, SamplingParams, TokenEvent

        params = SamplingParams(max_tokens=max_tokens, top_p=0.85)
        req = GenerationRequest(tokens, params, boundaries=bounds or [])
        if constraint is not None:
            req.constraint = constraint
        started = time.perf_counter()
        first, count = 0.0, 0
        async for ev in self.engine.generate(req):
            if isinstance(ev, TokenEvent):
                count += 1
                if count == 1:
                    first = time.perf_counter() - started
        return first, time.perf_counter() - started, count

    def close(self) -> None:
        self.engine.close()


def prompt_tokens(n: int, salt: int) -> list[int]:
    """``n`` distinct-ish token ids (a random model reads anything)."""
    return [(salt * 7919 + i * 104729) % 65000 + 1 for i in range(n)]
