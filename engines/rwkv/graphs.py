"""The decode step captured as CUDA graphs, one per batch-size bucket (1, 2, 4, ... up to
the batch size). Every input and output is static memory: the pool's token and state rows
for ``[:bucket]`` and a logits buffer, so replaying a graph is one launch for the whole
step. A batch of ``B`` runs in the smallest bucket ``>= B``; the rows past ``B`` are free
pool rows whose contents do not matter."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["DecodeGraphs", "buckets"]

log = logging.getLogger(__name__)


def buckets(max_batch: int) -> list[int]:
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    out.append(max_batch)
    return out


class DecodeGraphs:
    def __init__(self, run: Callable[[int], Any], max_batch: int) -> None:
        """``run(b)``: the eager step over the first ``b`` pool rows, returning logits."""
        self._run = run
        self.sizes = buckets(max_batch)
        self._graphs: dict[int, tuple[Any, Any]] = {}

    def capture(self) -> None:
        import torch

        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # torch leaves it untyped
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for b in self.sizes:  # warm-up runs: allocations and kernel choices settle
                for _ in range(2):
                    self._run(b)
        torch.cuda.current_stream().wait_stream(side)
        mempool = torch.cuda.graph_pool_handle()
        for b in reversed(self.sizes):  # largest first, so smaller ones reuse its memory
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=mempool):
                out = self._run(b)
            self._graphs[b] = (graph, out)
        torch.cuda.synchronize()
        log.info("decode captured as CUDA graphs for batch sizes %s", self.sizes)

    def __call__(self, batch: int) -> Any:
        b = self.sizes[bisect.bisect_left(self.sizes, batch)]
        graph, out = self._graphs[b]
        graph.replay()
        return out[:batch]
