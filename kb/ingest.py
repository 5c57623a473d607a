"""Ingestion: a vector-store file is a job that workers claim, read, chunk, embed and store.

Jobs live in the backend (``vector_store_files`` rows in ``in_progress``). A worker claims
the oldest one with a lease it renews while working, so several workers (and, on a shared
backend, several replicas) run side by side, and a job whose worker died is taken over
once its lease runs out. Documents are read as a stream of sections with every budget
enforced while reading; chunks are embedded and committed in batches, each batch in one
transaction and keyed by content hash, so an interrupted job resumes without duplicates.
A file is ``completed`` only after all its chunks are committed, and a file that yields
no text fails with a reason. A job interrupted more than ``max_job_attempts`` times fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from core.errors import APIError, is_disk_full
from kb.backend import KnowledgeBackend
from kb.chunking import ChunkingStrategy, chunk_text
from kb.config import KnowledgeSettings
from kb.fetch import FetchError, fetch_url
from kb.files import safe_filename
from kb.loaders import LoaderError, LoaderLimits, Section, iter_document
from kb.loaders.pdf import OcrPage
from kb.ports import EmbeddingProvider, Progress, embed_both
from kb.sql.chunks import content_hash
from kb.types import ChunkRecord, FileRecord, LastError, StoreFile

__all__ = ["Ingestor", "chunk_sections", "last_error"]

log = logging.getLogger(__name__)

_OPENAI_ERROR_CODES = {"invalid_file", "unsupported_file", "server_error"}


def _failure(exc: Exception) -> tuple[str, str]:
    """The ``last_error`` of a file whose ingestion raised ``exc``."""
    if is_disk_full(exc):
        return "server_error", (
            "the knowledge base's storage is full; free space and add the file again"
        )
    if isinstance(exc, APIError):
        return "invalid_file", exc.message
    if isinstance(exc, ValueError | OSError):
        return "invalid_file", str(exc)
    return "server_error", f"the file could not be processed ({type(exc).__name__})"


def last_error(code: str, message: str) -> LastError:
    """last_error in the API's enum (the SDK types it); the detail goes in the message."""
    return LastError(code if code in _OPENAI_ERROR_CODES else "invalid_file", message)


def chunk_sections(
    sections: list[Section],
    strategy: ChunkingStrategy,
    count: Callable[[list[str]], list[int]],
    file_id: str,
    start: int = 0,
) -> list[ChunkRecord]:
    out: list[ChunkRecord] = []
    for section in sections:
        for chunk in chunk_text(section.text, strategy, count, prefix=section.prefix):
            out.append(
                ChunkRecord(
                    file_id,
                    start + len(out),
                    chunk.text,
                    chunk.token_count,
                    page=section.page,
                    sheet=section.sheet,
                    row=section.row,
                    heading=section.prefix or None,
                )
            )
    return out


class _Cancelled(Exception):
    """The job was cancelled or detached while it ran."""


@dataclass
class _Job:
    sf: StoreFile
    owner: str
    lease_lost: bool = False


class Ingestor:
    def __init__(
        self,
        backend: KnowledgeBackend,
        provider: EmbeddingProvider,
        settings: KnowledgeSettings,
        limits: LoaderLimits,
        *,
        on_done: Callable[[StoreFile], None] | None = None,
    ) -> None:
        self.backend = backend
        self.provider = provider
        self.settings = settings
        self.limits = limits
        self.progress: Progress | None = None
        self.ocr: OcrPage | None = None
        self._on_done = on_done
        self._owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = 0

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._wake = asyncio.Event()
        for n in range(self.settings.ingest_workers):
            task = asyncio.get_running_loop().create_task(self._worker(), name=f"kb-ingest-{n}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._wake.set()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def wake(self) -> None:
        self._wake.set()

    @property
    def busy(self) -> int:
        return self._running

    async def drain(self, timeout: float = 3600.0) -> None:
        """Wait until no ingestion is queued or running (CLI, tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = await asyncio.to_thread(self.backend.in_progress_count)
            if not pending and not self._running:
                return
            self.wake()
            await asyncio.sleep(0.02)

    # -- workers ------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            sf = await asyncio.to_thread(self.backend.claim, self._owner, self.settings.lease_s)
            if sf is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval_s)
                continue
            self._running += 1
            try:
                await self._run(_Job(sf, self._owner))
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one job must not stop the worker
                log.exception(
                    "ingestion crashed",
                    extra={"collection": sf.collection_id, "file_id": sf.file_id},
                )
            finally:
                self._running -= 1
                if not self._running:
                    await asyncio.to_thread(self.backend.flush)

    async def _renew(self, job: _Job) -> None:
        every = max(0.5, self.settings.lease_s / 3)
        while True:
            await asyncio.sleep(every)
            ok = await asyncio.to_thread(
                self.backend.renew,
                job.sf.collection_id,
                job.sf.file_id,
                job.owner,
                self.settings.lease_s,
            )
            if not ok:
                job.lease_lost = True
                return

    async def _run(self, job: _Job) -> None:
        sf = job.sf
        renewer = asyncio.get_running_loop().create_task(self._renew(job))
        try:
            if sf.attempts > self.settings.max_job_attempts:
                await self._fail(
                    sf,
                    "server_error",
                    f"ingestion was interrupted {sf.attempts - 1} times; giving up "
                    "(knowledge.max_job_attempts)",
                )
                return
            try:
                added = await self._ingest(job)
            except LoaderError as exc:
                await self._fail(sf, exc.code, exc.message, drop=True)
                return
            except _Cancelled:
                await asyncio.to_thread(
                    self.backend.delete_file_chunks, sf.collection_id, sf.file_id
                )
                return
            except Exception as exc:
                code, message = _failure(exc)
                where = {"collection": sf.collection_id, "file_id": sf.file_id}
                if is_disk_full(exc):
                    log.error("ingestion stopped: storage full", extra=where)
                elif code == "server_error":
                    # A loader bug fails this file, never leaves it in_progress.
                    log.exception("ingestion failed", extra=where)
                await self._fail(sf, code, message, drop=True)
                return
            if not await self._still_running(job):
                await asyncio.to_thread(
                    self.backend.delete_file_chunks, sf.collection_id, sf.file_id
                )
                return
            usage = await asyncio.to_thread(
                self.backend.file_usage_bytes, sf.collection_id, sf.file_id
            )
            await asyncio.to_thread(
                self.backend.set_file_state,
                sf.collection_id,
                sf.file_id,
                "completed",
                usage_bytes=usage,
                warnings=added.warnings,
                clear_secrets=True,
            )
            self._done(sf)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    def _done(self, sf: StoreFile) -> None:
        if self._on_done is not None:
            self._on_done(sf)

    async def _fail(self, sf: StoreFile, code: str, message: str, *, drop: bool = False) -> None:
        if drop:
            await asyncio.to_thread(self.backend.delete_file_chunks, sf.collection_id, sf.file_id)
        await asyncio.to_thread(
            self.backend.set_file_state,
            sf.collection_id,
            sf.file_id,
            "failed",
            last_error=last_error(code, message),
            clear_secrets=True,
        )
        log.warning(
            "ingestion failed: %s",
            message,
            extra={"collection": sf.collection_id, "file_id": sf.file_id, "error": message},
        )
        self._done(sf)

    async def _still_running(self, job: _Job) -> bool:
        if job.lease_lost:
            return False
        row = await asyncio.to_thread(self.backend.store_file, job.sf.collection_id, job.sf.file_id)
        return row is not None and row.status == "in_progress"

    # -- one file -----------------------------------------------------------------------

    async def _fetched(self, record: FileRecord, url: str) -> tuple[FileRecord, str | None]:
        """Fill the file made for a page with the page (under knowledge.url's deadline and
        byte cap); its record and the page's content type."""
        try:
            page = await fetch_url(url, self.settings.url)
        except FetchError as exc:
            raise LoaderError(f"{exc.message} ({exc.code})") from None
        if len(page.body) > self.settings.max_upload_bytes:
            raise LoaderError(
                f"the page is larger than {self.settings.max_upload_bytes} bytes "
                "(knowledge.max_upload_bytes)",
                "file_too_large",
            )
        part = self.backend.upload_path(record.id)
        await asyncio.to_thread(part.write_bytes, page.body)
        filled = dataclasses.replace(
            record,
            filename=safe_filename(page.filename),
            bytes=len(page.body),
            sha256=hashlib.sha256(page.body).hexdigest(),
        )
        try:
            await asyncio.to_thread(self.backend.replace_file, filled, part)
        finally:
            part.unlink(missing_ok=True)
        return filled, page.content_type

    async def _ingest(self, job: _Job) -> _Outcome:
        sf = job.sf
        cid, file_id = sf.collection_id, sf.file_id
        record = await asyncio.to_thread(self.backend.file, file_id)
        col = await asyncio.to_thread(self.backend.collection, cid)
        if record is None or col is None:
            raise LoaderError("the file's content is missing")
        content_type = sf.options.content_type
        if sf.options.fetch_url and record.bytes == 0:
            record, content_type = await self._fetched(record, sf.options.fetch_url)
        count = self.provider.tokenizer(col.embedding_model).count
        deadline = time.monotonic() + self.settings.max_seconds_per_file
        outcome = _Outcome()
        with self.backend.local_copy(file_id) as path:
            if path is None:
                raise LoaderError("the file's content is missing")
            stream = iter_document(
                path,
                record.filename,
                self.limits,
                content_type=content_type,
                password=sf.options.password,
                ocr=self.ocr,
                ocr_languages=sf.options.ocr_languages,
                deadline=deadline,
                warnings=outcome.warnings,
            )
            position = 0
            chunks = _records(stream, sf.chunking_strategy, count, file_id)
            while True:
                records = await asyncio.to_thread(_take, chunks, self.settings.embed_batch_size)
                if not records:
                    break
                position += len(records)
                if position > self.settings.max_chunks_per_file:
                    raise LoaderError(
                        f"the file makes more than {self.settings.max_chunks_per_file} chunks "
                        "(knowledge.max_chunks_per_file)",
                        "file_too_large",
                    )
                if time.monotonic() > deadline:
                    raise LoaderError(
                        f"ingestion took longer than {self.settings.max_seconds_per_file:g} s "
                        "(knowledge.max_seconds_per_file)",
                        "file_too_large",
                    )
                if not await self._still_running(job):
                    raise _Cancelled
                await self._store(cid, records)
                if self.progress is not None:
                    self.progress(cid, file_id, position, position)
        if position == 0:
            detail = f" ({'; '.join(outcome.warnings)})" if outcome.warnings else ""
            raise LoaderError(f"no text could be extracted from the file{detail}", "empty_file")
        return outcome

    async def _store(self, cid: str, records: list[ChunkRecord]) -> None:
        """Embed what the collection lacks and commit the batch in one transaction; if the
        store was re-embedded meanwhile, embed again with its new model."""
        while True:
            col = await asyncio.to_thread(self.backend.collection, cid)
            if col is None:
                raise _Cancelled
            hashes = [content_hash(r.text) for r in records]
            known = await asyncio.to_thread(self.backend.existing_hashes, cid, hashes)
            fresh = [i for i, h in enumerate(hashes) if h not in known]
            vectors = np.zeros((len(records), col.dimensions), np.float32)
            sparse: list[dict[int, float]] | None = None
            if fresh:
                vecs, lex = await embed_both(
                    self.provider, col.embedding_model, [records[i].text for i in fresh]
                )
                vectors[fresh] = vecs
                if lex is not None:
                    sparse = [{} for _ in records]
                    for i, weights in zip(fresh, lex, strict=True):
                        sparse[i] = weights
            stored = await asyncio.to_thread(
                functools.partial(
                    self.backend.add_chunks,
                    cid,
                    records,
                    vectors,
                    model=col.embedding_model,
                    sparse=sparse,
                )
            )
            if stored is not None:
                return


@dataclass
class _Outcome:
    """What reading a file reported besides its text (pages without text, truncations)."""

    warnings: list[str] = field(default_factory=list)


def _records(
    stream: Iterator[Section],
    strategy: ChunkingStrategy,
    count: Callable[[list[str]], list[int]],
    file_id: str,
) -> Iterator[ChunkRecord]:
    """The document's chunks, lazily: one section at a time is chunked."""
    position = 0
    for section in stream:
        for record in chunk_sections([section], strategy, count, file_id, position):
            position += 1
            yield record


def _take(records: Iterator[ChunkRecord], n: int) -> list[ChunkRecord]:
    return list(itertools.islice(records, n))
