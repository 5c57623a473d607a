"""Re-embedding a store with another model, as a resumable job.

New vectors are staged beside the old ones in batches (each batch committed), so a job
interrupted by a restart resumes where it stopped; searches keep using the old vectors
until the last batch, when the swap happens in one transaction and the index is rebuilt.
"""

from __future__ import annotations

import asyncio
import logging

from core.errors import InvalidRequestError
from kb.backend import KnowledgeBackend
from kb.config import KnowledgeSettings
from kb.jobs import JobRunner
from kb.ports import EmbeddingProvider
from kb.types import Collection, Job

__all__ = ["Reembedder"]

log = logging.getLogger(__name__)


class Reembedder(JobRunner):
    kind = "reembed"

    def __init__(
        self, backend: KnowledgeBackend, provider: EmbeddingProvider, settings: KnowledgeSettings
    ) -> None:
        super().__init__(backend)
        self.provider = provider
        self.settings = settings

    async def start_job(self, col: Collection, model: str) -> Job:
        self.provider.dimensions(model)  # an unknown model is a 404 before the job starts
        running = await asyncio.to_thread(self.backend.jobs, "in_progress", col.id)
        if running:
            raise InvalidRequestError(
                f"vector store {col.id!r} already has a running job {running[0].id}",
                code="job_in_progress",
            )
        total = await asyncio.to_thread(self.backend.count, col.id)
        return await self._launch(col.id, {"model": model}, total)

    async def run(self, job_id: str) -> None:
        job = await asyncio.to_thread(self.backend.job, job_id)
        if job is None or job.kind != "reembed":
            return
        cid, model = job.collection_id, str(job.params["model"])
        b = self.backend
        try:
            dims = self.provider.dimensions(model)
            batch = self.settings.embed_batch_size
            while True:
                while todo := await asyncio.to_thread(b.unstaged_chunks, cid, job_id, batch):
                    vecs, _ = await self.provider.embed(model, [t for _, t in todo])
                    rows = [(i, v) for (i, _), v in zip(todo, vecs, strict=True)]
                    await asyncio.to_thread(b.stage_embeddings, job_id, rows)
                    staged = await asyncio.to_thread(b.staged_count, job_id)
                    total = await asyncio.to_thread(b.count, cid)
                    await asyncio.to_thread(b.update_job, job_id, progress=staged, total=total)
                if await asyncio.to_thread(b.swap_staged, cid, job_id, model, dims):
                    break
            total = await asyncio.to_thread(b.count, cid)
            await asyncio.to_thread(
                b.update_job, job_id, status="completed", progress=total, total=total
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the job records why it failed; the store keeps its vectors
            log.exception("re-embed failed", extra={"job": job_id})
            await asyncio.to_thread(b.drop_staging, job_id)
            await asyncio.to_thread(
                b.update_job, job_id, status="failed", error=f"{type(exc).__name__}: {exc}"
            )
