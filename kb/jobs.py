"""Background store jobs (re-embedding, web-search ingestion): each kept as a ``jobs`` row,
run as a task, resumed after a restart, cancelled on shutdown. The kinds only say how
one runs."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from kb.backend import KnowledgeBackend
from kb.types import Job

__all__ = ["JobRunner"]


class JobRunner:
    kind: str

    def __init__(self, backend: KnowledgeBackend) -> None:
        self.backend = backend
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[str] = set()

    async def _launch(self, cid: str, params: dict[str, object], total: int) -> Job:
        """Record a new in-progress job of this kind and start running it."""
        now = int(time.time())
        job = Job(
            f"job_{uuid.uuid4().hex}",
            self.kind,
            cid,
            "in_progress",
            params,
            0,
            total,
            None,
            now,
            now,
        )
        await asyncio.to_thread(self.backend.add_job, job)
        self.spawn(job.id)
        return job

    def spawn(self, job_id: str) -> None:
        """Run the job, unless this process already runs it (a job started while the
        knowledge base was still resuming would otherwise run twice)."""
        if job_id in self._running:
            return
        task = asyncio.get_running_loop().create_task(self.run(job_id), name=f"kb-job-{job_id}")
        self._tasks.add(task)
        self._running.add(job_id)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._running.discard(job_id)

        task.add_done_callback(done)

    async def resume(self) -> None:
        for job in await asyncio.to_thread(self.backend.jobs, "in_progress"):
            if job.kind == self.kind:
                self.spawn(job.id)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._running.clear()

    async def wait(self, timeout: float = 60.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def run(self, job_id: str) -> None:
        raise NotImplementedError
