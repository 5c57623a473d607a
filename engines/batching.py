"""Dynamic batching: concurrent requests are coalesced into one forward, one future per item.

A batch that raises fails exactly its own futures with an ``EngineError`` (a 500-class
OpenAI error) and marks the batcher unhealthy until a later batch succeeds; nothing waits
forever. The compute function runs off the event loop, one batch at a time, so a model is
never entered by two threads at once: on an ``IdleWorker`` whose thread ends after a short
idle spell (no OpenMP team of an idle embedder outlives its burst to slow the chat step,
see ``core.threads``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from core.errors import EngineError, EngineUnavailableError, QueueFullError
from core.threads import IdleWorker

__all__ = ["BatchObserver", "DynamicBatcher"]

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


class BatchObserver(Protocol):
    def batch_done(self, name: str, size: int, seconds: float, ok: bool) -> None: ...

    def queue_depth(self, name: str, depth: int) -> None: ...


@dataclass(slots=True)
class _Item(Generic[I, R]):
    value: I
    future: asyncio.Future[R]


class DynamicBatcher(Generic[I, R]):
    def __init__(
        self,
        name: str,
        fn: Callable[[list[I]], Sequence[R]],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        observer: BatchObserver | None = None,
        worker_idle_s: float = 0.5,
    ) -> None:
        self.name = name
        self._fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._observer = observer
        self._worker = IdleWorker(f"engine-{name}", worker_idle_s)
        self._queue: deque[_Item[I, R]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.healthy = True
        self.last_error: str | None = None
        # Waiting for company only pays when requests overlap; a lone caller (the last
        # batch held one item) is served at once.
        self._last_batch_size = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"batcher-{self.name}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(EngineUnavailableError(f"{self.name} is shutting down"))

    async def submit(self, items: Sequence[I]) -> list[R]:
        """Queue ``items`` and wait for all their results (in order)."""
        if self._task is None:
            raise EngineUnavailableError(f"model {self.name!r} is not running")
        if len(self._queue) + len(items) > self.max_queue:
            raise QueueFullError(
                f"model {self.name!r} has {len(self._queue)} items queued; try again shortly"
            )
        loop = asyncio.get_running_loop()
        batch = [_Item[I, R](value, loop.create_future()) for value in items]
        self._queue.extend(batch)
        self._report_depth()
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(b.future for b in batch)))
        except BaseException:
            # Cancelled or failed: whatever is still queued for this caller is dropped.
            for b in batch:
                b.future.cancel()
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            overlapping = self._last_batch_size > 1 or len(self._queue) > 1
            if len(self._queue) < self.max_batch_size and self.max_wait > 0 and overlapping:
                deadline = loop.time() + self.max_wait
                while len(self._queue) < self.max_batch_size:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except TimeoutError:
                        break
            batch: list[_Item[I, R]] = []
            while self._queue and len(batch) < self.max_batch_size:
                item = self._queue.popleft()
                if not item.future.done():
                    batch.append(item)
            self._report_depth()
            if batch:
                self._last_batch_size = len(batch)
                await self._execute(batch)

    async def _execute(self, batch: list[_Item[I, R]]) -> None:
        started = time.perf_counter()
        values = [b.value for b in batch]
        try:
            results = await self._worker.run(self._fn, values)
            if len(results) != len(batch):
                raise RuntimeError(f"engine returned {len(results)} results for {len(batch)}")
        except asyncio.CancelledError:
            for b in batch:
                if not b.future.done():
                    b.future.set_exception(EngineUnavailableError(f"{self.name} stopped"))
            raise
        except Exception as exc:
            log.exception("batch failed", extra={"model": self.name, "batch_size": len(batch)})
            self.healthy = False
            self.last_error = f"{type(exc).__name__}: {exc}"
            for b in batch:
                if not b.future.done():
                    b.future.set_exception(
                        EngineError(f"model {self.name!r} failed to process the batch")
                    )
            self._observe(len(batch), started, ok=False)
            return
        self.healthy = True
        for b, r in zip(batch, results, strict=True):
            if not b.future.done():
                b.future.set_result(r)
        self._observe(len(batch), started, ok=True)

    def _observe(self, size: int, started: float, ok: bool) -> None:
        if self._observer is not None:
            self._observer.batch_done(self.name, size, time.perf_counter() - started, ok)

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(self.name, len(self._queue))
