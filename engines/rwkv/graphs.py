"""The decode step captured as CUDA graphs, one per batch-size bucket (1, 2, 4, ... up to
the batch size). Every input and output is static memory: the pool's token and state rows
for ``[:bucket]`` and a logits buffer, so replaying a graph is one launch for the whole
step. A batch of ``B`` runs in the smallest bucket ``>= B``; the rows past ``B`` are free
pool rows whose contents do not matter.

Models load in worker threads, so another model may be running kernels while one captures.
CUDA's default ("global") capture mode fails a capture when any thread makes an unsafe
call meanwhile; the engine captures in "thread_local" mode by default, and captures are
serialised process-wide so two models never capture at once."""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DecodeGraphs", "buckets"]

log = logging.getLogger(__name__)
_CAPTURE_LOCK = threading.Lock()


def buckets(max_batch: int) -> list[int]:
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    out.append(max_batch)
    return out


class DecodeGraphs:
    def __init__(
        self,
        run: Callable[[int], Any],
        max_batch: int,
        *,
        capture_error_mode: str = "thread_local",
        cuda: Any = None,
    ) -> None:
        """``run(b)``: the eager step over the first ``b`` pool rows, returning logits.
        ``cuda``: the graph API (``torch.cuda`` when None)."""
        self._run = run
        self.sizes = buckets(max_batch)
        self.capture_error_mode = capture_error_mode
        self._cuda = cuda
        self._graphs: dict[int, tuple[Any, Any]] = {}

    def capture(self) -> None:
        cuda = self._cuda
        if cuda is None:
            import torch

            cuda = torch.cuda
        with _CAPTURE_LOCK:
            side = cuda.Stream()
            side.wait_stream(cuda.current_stream())
            with cuda.stream(side):
                for b in self.sizes:  # warm-up runs: allocations and kernel choices settle
                    for _ in range(2):
                        self._run(b)
            cuda.current_stream().wait_stream(side)
            mempool = cuda.graph_pool_handle()
            for b in reversed(self.sizes):  # largest first, so smaller ones reuse its memory
                graph = cuda.CUDAGraph()
                with cuda.graph(graph, pool=mempool, capture_error_mode=self.capture_error_mode):
                    out = self._run(b)
                self._graphs[b] = (graph, out)
            cuda.synchronize()
        log.info(
            "decode captured as CUDA graphs for batch sizes %s (%s capture)",
            self.sizes,
            self.capture_error_mode,
        )

    def __call__(self, batch: int) -> Any:
        b = self.sizes[bisect.bisect_left(self.sizes, batch)]
        graph, out = self._graphs[b]
        graph.replay()
        return out[:batch]
