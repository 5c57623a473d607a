"""The background thread of a keyword-index rebuild, shared by both backends: one at a
time per backend, stoppable, joined on close."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["RebuildThread"]


class RebuildThread:
    """Runs ``body(stop)`` on a daemon thread; ``stop`` is set when the backend closes."""

    _rebuild: threading.Thread | None = None
    _rebuild_stop: threading.Event | None = None

    def rebuild_running(self) -> bool:
        return self._rebuild is not None and self._rebuild.is_alive()

    def start_rebuild_thread(self, body: Callable[[threading.Event], None]) -> None:
        stop = threading.Event()
        self._rebuild_stop = stop
        self._rebuild = threading.Thread(
            target=body, args=(stop,), name="kb-stem-rebuild", daemon=True
        )
        self._rebuild.start()

    def wait_stemmed_rebuild(self, timeout: float | None = None) -> None:
        if self._rebuild is not None:
            self._rebuild.join(timeout)

    def stop_stemmed_rebuild(self) -> None:
        if self._rebuild_stop is not None:
            self._rebuild_stop.set()
        self.wait_stemmed_rebuild(30)
