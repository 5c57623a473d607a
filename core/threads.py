"""Where torch's CPU work runs: one long-lived thread per engine, everything else on
threads that end with their work.

torch's CPU build parallelises an op through OpenMP (libgomp). Every thread that runs a
parallel op becomes the master of its own team of workers, and the team lives as long as
that thread. libgomp's workers wait for the next parallel region by spinning, but once
the process holds more OpenMP threads than the machine has CPUs they stop spinning almost
at once and sleep, so every parallel region of every team then pays a futex wake-up. On a
2-core machine one extra idle team (the thread that loaded a model, a persistent worker
that embedded one batch) made each parallel region of the chat step ~70 µs slower: a
4-row decode step went from 32 to 49 ms (``docs/benchmarks.md``).

So: an engine's hot loop keeps its thread (the RWKV scheduler); one-off torch work
(loading a model) runs on a fresh thread that exits when it is done, taking its team with
it; and work that comes in bursts (embedding and rerank batches) runs on an
``IdleWorker``, one thread that serves a burst and ends after a short idle spell. A fresh
thread per batch would cost its first torch call's set-up every time (a one-text MiniLM
batch: 16 ms on a new thread, 12 ms on a warm one). ``torch.set_num_threads(1)`` is no way
to keep a side thread out of this: it also sets the process-wide count every new thread
starts from.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["IdleWorker", "call_in_new_thread", "in_new_thread"]

R = TypeVar("R")


def call_in_new_thread(fn: Callable[..., R], *args: Any, name: str = "torch-once") -> R:
    """``fn(*args)`` on a new thread, waited for; its result, or its exception re-raised."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


def _bridge(fn: Callable[..., R], args: tuple[Any, ...]) -> tuple[asyncio.Future[R], Any]:
    """A future on the running loop and the call that settles it from another thread.
    The call does nothing once the future is cancelled (an await given up before the call
    started); a ``StopIteration`` from ``fn`` becomes a ``RuntimeError`` (a future cannot
    hold one, and the awaiter would wait forever)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[R] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def call() -> None:
        if future.cancelled():
            return
        try:
            result = fn(*args)
        except StopIteration as exc:
            error = RuntimeError(f"{getattr(fn, '__name__', fn)!r} raised StopIteration")
            error.__cause__ = exc
            outcome: tuple[bool, Any] = (False, error)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome = (False, exc)
        else:
            outcome = (True, result)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, *outcome)

    return future, call


async def in_new_thread(fn: Callable[..., R], *args: Any, name: str = "torch-once") -> R:
    """``fn(*args)`` on a new thread that ends with it, awaited without blocking the loop.
    Cancelling the await does not stop ``fn`` once it runs (no thread can be stopped);
    its result is dropped."""
    future, call = _bridge(fn, args)
    threading.Thread(target=call, name=name, daemon=True).start()
    return await future


class IdleWorker:
    """One thread that runs submitted calls in order, and ends once it has waited
    ``idle_s`` with nothing to do (the next call starts another)."""

    def __init__(self, name: str, idle_s: float = 0.5) -> None:
        self.name = name
        self.idle_s = idle_s
        self._cond = threading.Condition()
        self._calls: deque[Callable[[], None]] = deque()
        self._running = False
        self.threads_started = 0

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` on the worker, awaited without blocking the loop. A call whose
        await is cancelled before it starts is skipped; once it runs, it runs out and its
        result is dropped."""
        future, call = _bridge(fn, args)
        with self._cond:
            self._calls.append(call)
            if self._running:
                self._cond.notify()
            else:
                thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                try:
                    thread.start()
                except BaseException:  # no thread (none left, or shutting down): not queued
                    self._calls.pop()
                    raise
                self._running = True
                self.threads_started += 1
        return await future

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._calls:
                    self._cond.wait(self.idle_s)
                if not self._calls:
                    self._running = False
                    return
                call = self._calls.popleft()
            call()
