"""KnowledgeBase: files -> loaders -> chunks -> embeddings -> SQLite (truth) -> FAISS (derived).

Embeddings come from an ``EmbeddingProvider`` (the gateway's batched embedding service in
production, the engine itself in the CLI, a fake in tests), so ingestion shares the
batching of /v1/embeddings. A collection (= vector store) remembers its embedding model
and dimension; searching it with another model is a 400.

Ingestion is a job recorded in SQLite (a ``vector_store_files`` row in ``in_progress``).
Chunks are committed in batches, each batch in one transaction, and are keyed by content
hash, so a job that is interrupted (``kill -9``) resumes at restart and adds only what is
missing; a job interrupted more than ``max_job_attempts`` times is marked failed with the
reason. A file is reported ``completed`` only after all its chunks are committed. The
FAISS index is derived: at load it is compared with SQLite's chunk ids and repaired (missing
vectors added, stale ids removed), or rebuilt when unreadable. Past ``ann_threshold``
chunks the index is rebuilt as IVF in a background thread while searches go on against
the exact index.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from engines.base import Tokenizer
from engines.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from gateway.settings import KnowledgeSettings
from kb.chunking import ChunkingStrategy, chunk_text
from kb.fetch import FetchError, fetch_url
from kb.filters import compile_filter
from kb.index import VectorIndex
from kb.loaders import LoaderError, LoaderLimits, Section, kinds_for, load_document
from kb.search import Hit, hybrid_search
from kb.store import ChunkRecord, KnowledgeStore, content_hash

__all__ = ["EmbeddingProvider", "KnowledgeBase", "Reranker", "SearchResult"]

log = logging.getLogger(__name__)

Reranker = Callable[[str, list[str]], Awaitable[list[float]]]
Progress = Callable[[str, str, int, int], None]


class EmbeddingProvider(Protocol):
    async def embed(self, model: str, texts: list[str]) -> tuple[np.ndarray, list[int]]: ...

    def tokenizer(self, model: str) -> Tokenizer: ...

    def dimensions(self, model: str) -> int: ...


@dataclass(frozen=True, slots=True)
class SearchResult:
    vector_store_id: str
    chunk_id: int
    file_id: str
    filename: str
    text: str
    score: float
    attributes: dict[str, Any]
    position: int
    page: int | None
    sheet: str | None
    row: int | None
    dense_rank: int | None
    keyword_rank: int | None
    rerank_score: float | None = None


@dataclass(slots=True)
class SearchOutcome:
    queries: list[str]
    results: list[SearchResult] = field(default_factory=list)


_OPENAI_ERROR_CODES = {"invalid_file", "unsupported_file", "server_error"}


def _last_error(code: str, message: str) -> dict[str, str]:
    """last_error in the API's enum (the SDK types it); the detail goes in the message."""
    return {"code": code if code in _OPENAI_ERROR_CODES else "invalid_file", "message": message}


def strategy_from(spec: dict[str, Any] | None) -> ChunkingStrategy:
    if not spec or spec.get("type") in (None, "auto"):
        return ChunkingStrategy()
    if spec.get("type") != "static":
        raise InvalidRequestError(
            "chunking_strategy.type must be 'auto' or 'static'", param="chunking_strategy"
        )
    static = spec.get("static")
    if not isinstance(static, dict):
        raise InvalidRequestError(
            "chunking_strategy.static is required for a static strategy",
            param="chunking_strategy",
        )
    try:
        return ChunkingStrategy(
            int(static.get("max_chunk_size_tokens", 800)),
            int(static.get("chunk_overlap_tokens", 400)),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(str(exc), param="chunking_strategy") from None


def strategy_json(s: ChunkingStrategy) -> dict[str, Any]:
    return {
        "type": "static",
        "static": {
            "max_chunk_size_tokens": s.max_chunk_size_tokens,
            "chunk_overlap_tokens": s.chunk_overlap_tokens,
        },
    }


def _rewrite(query: str) -> str:
    """A deterministic query rewrite: drop politeness and question scaffolding that only
    dilutes both the keyword and the dense query."""
    q = query.strip()
    q = re.sub(
        r"^(please\s+)?(can|could|would) you (please\s+)?(tell me|explain|show me)\s+",
        "",
        q,
        flags=re.I,
    )
    q = re.sub(r"^(i (want|need|would like) to know|tell me)\s+", "", q, flags=re.I)
    q = re.sub(r"^(请问|请告诉我|我想知道)", "", q)
    q = q.rstrip(" ?？!！.。")
    return q or query.strip()


class KnowledgeBase:
    def __init__(
        self,
        data_dir: Path,
        provider: EmbeddingProvider,
        settings: KnowledgeSettings | None = None,
        *,
        default_model: str | None = None,
        reranker: Reranker | None = None,
        ann_threshold: int | None = None,
    ) -> None:
        self.settings = settings or KnowledgeSettings()
        self.dir = data_dir
        self.files_dir = data_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.store = KnowledgeStore(data_dir / "kb.sqlite")
        self.provider = provider
        self.default_model = default_model or self.settings.embedding_model
        self.reranker = reranker
        self.ann_threshold = ann_threshold or self.settings.ann_threshold
        self.limits = LoaderLimits(
            max_pdf_pages=self.settings.max_pdf_pages,
            max_sheet_rows=self.settings.max_sheet_rows,
            max_extracted_chars=self.settings.max_extracted_chars,
            max_xlsx_uncompressed_bytes=self.settings.max_xlsx_uncompressed_bytes,
            max_xlsx_compression_ratio=self.settings.max_xlsx_compression_ratio,
            allowed_kinds=kinds_for(self.settings.allowed_extensions),
        )
        self._indexes: dict[str, VectorIndex] = {}
        self._dirty: set[str] = set()
        self._index_lock = threading.Lock()
        self._write_locks: dict[str, asyncio.Lock] = {}
        self._queue: asyncio.Queue[tuple[str, str]] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._upgrades: set[str] = set()
        self._touched: dict[str, int] = {}
        self.progress: Progress | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the ingestion workers and resume what a previous run left unfinished."""
        self._queue = asyncio.Queue()
        for n in range(self.settings.ingest_workers):
            self._spawn(self._worker(), f"kb-ingest-{n}")
        for row in self.store.pending_files():
            self._queue.put_nowait((row["collection_id"], row["file_id"]))
        for job in self.store.jobs("in_progress"):
            self._spawn(self._run_job(job["id"]), f"kb-job-{job['id']}")
        for batch in self.store.open_batches():
            self._refresh_batch(batch["collection_id"], batch["id"])

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await asyncio.to_thread(self.flush)

    async def drain(self) -> None:
        """Wait until every queued ingestion has finished (CLI, tests)."""
        if self._queue is not None:
            await self._queue.join()
        while self._upgrades:
            await asyncio.sleep(0.05)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def loaded_index(self, cid: str) -> VectorIndex | None:
        return self._indexes.get(cid)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def flush(self) -> None:
        """Save every index changed since it was last saved."""
        with self._index_lock:
            dirty, self._dirty = self._dirty, set()
            for cid in dirty:
                index = self._indexes.get(cid)
                if index is not None and not index.building:
                    index.save(self._index_path(cid))
                elif index is not None:
                    self._dirty.add(cid)

    def close(self) -> None:
        self.flush()
        self.store.close()

    def _lock_for(self, cid: str) -> asyncio.Lock:
        lock = self._write_locks.get(cid)
        if lock is None:
            lock = self._write_locks[cid] = asyncio.Lock()
        return lock

    # -- files ---------------------------------------------------------------------------

    def new_upload_path(self) -> tuple[str, Path]:
        """A fresh file id and the temporary path an upload streams into."""
        file_id = f"file-{uuid.uuid4().hex}"
        return file_id, self.files_dir / f"{file_id}.part"

    def register_file(
        self,
        file_id: str,
        part: Path,
        filename: str,
        purpose: str,
        size: int,
        digest: str,
        source_url: str | None = None,
    ) -> dict[str, Any]:
        """Move a fully written upload into place and record it."""
        path = self.files_dir / file_id
        os.replace(part, path)
        row = {
            "id": file_id,
            "filename": filename,
            "bytes": size,
            "purpose": purpose,
            "sha256": digest,
            "path": str(path),
            "source_url": source_url,
            "created_at": int(time.time()),
        }
        self.store.add_file(row)
        return row

    def _check_size(self, size: int, what: str) -> None:
        if size > self.settings.max_upload_bytes:
            raise PayloadTooLargeError(
                f"{what} is larger than {self.settings.max_upload_bytes} bytes "
                "(knowledge.max_upload_bytes)"
            )

    def add_file_bytes(
        self, data: bytes, filename: str, purpose: str = "assistants", source_url: str | None = None
    ) -> dict[str, Any]:
        self._check_size(len(data), "the file")
        file_id, part = self.new_upload_path()
        part.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        return self.register_file(file_id, part, filename, purpose, len(data), digest, source_url)

    def add_file_path(self, src: Path, purpose: str = "assistants") -> dict[str, Any]:
        size = src.stat().st_size
        self._check_size(size, str(src))
        file_id, part = self.new_upload_path()
        digest = hashlib.sha256()
        with open(src, "rb") as fh, open(part, "wb") as out:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        return self.register_file(file_id, part, src.name, purpose, size, digest.hexdigest())

    def file(self, file_id: str) -> dict[str, Any]:
        row = self.store.file(file_id)
        if row is None:
            raise NotFoundError(f"no file with id {file_id!r}", param="file_id")
        return row

    async def delete_file_object(self, file_id: str) -> None:
        """Delete a file everywhere: from every vector store holding it, then its bytes."""
        row = self.file(file_id)
        for cid in self.store.stores_with_file(file_id):
            await self.detach(cid, file_id)
        self.store.delete_file(file_id)
        Path(row["path"]).unlink(missing_ok=True)

    # -- collections ---------------------------------------------------------------------

    def create_collection(
        self,
        name: str | None,
        embedding_model: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        expires_after: dict[str, Any] | None = None,
        chunking_strategy: dict[str, Any] | None = None,
    ) -> str:
        model = embedding_model or self.default_model
        if not model:
            raise InvalidRequestError("no embedding model is configured for vector stores")
        if chunking_strategy:
            strategy_from(chunking_strategy)  # a bad strategy is a 400 before anything exists
        dims = self.provider.dimensions(model)
        cid = f"vs_{uuid.uuid4().hex}"
        self.store.create_collection(cid, name, model, dims, metadata)
        self.store.update_collection(
            cid,
            expires_after=_json(expires_after),
            last_active_at=int(time.time()),
            chunking_strategy=_json(chunking_strategy),
        )
        return cid

    def collection(self, cid: str) -> dict[str, Any]:
        col = self.store.collection(cid)
        if col is None:
            raise NotFoundError(f"no vector store with id {cid!r}", param="vector_store_id")
        return col

    def collections(self) -> list[dict[str, Any]]:
        return self.store.list_collections()

    def collection_by_name(self, name: str) -> dict[str, Any]:
        """A store by id or, for the CLI and MCP, by its unique name."""
        col = self.store.collection(name)
        if col is not None:
            return col
        matches = [c for c in self.store.list_collections() if c["name"] == name]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFoundError(f"no vector store named or with id {name!r}", param="vector_store")
        raise InvalidRequestError(f"several vector stores are named {name!r}; use the id")

    def delete_collection(self, cid: str) -> None:
        self.collection(cid)
        self.store.delete_collection(cid)
        with self._index_lock:
            self._indexes.pop(cid, None)
            self._dirty.discard(cid)
        self._index_path(cid).unlink(missing_ok=True)
        self._index_path(cid).with_name(f"{cid}.faiss.deleted.npy").unlink(missing_ok=True)

    def touch(self, cid: str) -> None:
        """Record use (expires_after counts from it): at most one write a minute per store,
        so searches do not queue behind ingestion for the writer lock."""
        now = int(time.time())
        if now - self._touched.get(cid, 0) >= 60:
            self._touched[cid] = now
            self.store.update_collection(cid, last_active_at=now)

    # -- index lifecycle -----------------------------------------------------------------

    def _index_path(self, cid: str) -> Path:
        return self.dir / "indexes" / f"{cid}.faiss"

    def _index_options(self) -> dict[str, Any]:
        s = self.settings
        return {
            "ann_threshold": self.ann_threshold,
            "ann": s.ann_index,
            "nprobe": s.ann_nprobe,
            "hnsw_m": s.hnsw_m,
            "ef_construction": s.hnsw_ef_construction,
            "ef_search": s.hnsw_ef_search,
        }

    def _new_index(self, dims: int) -> VectorIndex:
        return VectorIndex(dims, **self._index_options())

    def index(self, cid: str) -> VectorIndex:
        """The collection's FAISS index: cached, else loaded and repaired against SQLite,
        else rebuilt from SQLite."""
        with self._index_lock:
            cached = self._indexes.get(cid)
            if cached is not None:
                return cached
            col = self.collection(cid)
            dims = int(col["dimensions"])
            path = self._index_path(cid)
            index: VectorIndex | None = None
            if path.exists():
                try:
                    index = VectorIndex.load(path, dims, **self._index_options())
                    self._repair(cid, index)
                except Exception:
                    log.exception("index unreadable; rebuilding", extra={"collection": cid})
                    index = None
            if index is None:
                index = self._build(dims, *self.store.vectors(cid))
                index.save(path)
            self._indexes[cid] = index
            return index

    def _repair(self, cid: str, index: VectorIndex) -> None:
        have = index.ids()
        truth = self.store.chunk_ids(cid)
        stale = have - truth
        missing = truth - have
        if not stale and not missing:
            return
        log.warning(
            "index disagrees with SQLite; repairing",
            extra={"collection": cid, "missing": len(missing), "stale": len(stale)},
        )
        index.remove(sorted(stale))
        index.add(*self.store.vectors(cid, missing))
        index.save(self._index_path(cid))

    def _build(self, dims: int, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        index = self._new_index(dims)
        if len(ids) >= self.ann_threshold:
            index.build_ann(ids, vectors)
        else:
            index.add(ids, vectors)
        return index

    def rebuild(self, cid: str) -> int:
        col = self.collection(cid)
        ids, vectors = self.store.vectors(cid)
        index = self._build(int(col["dimensions"]), ids, vectors)
        index.save(self._index_path(cid))
        with self._index_lock:
            self._indexes[cid] = index
            self._dirty.discard(cid)
        return len(index)

    def _maybe_upgrade(self, cid: str, index: VectorIndex) -> None:
        """Past the threshold, build the ANN index in a thread; searches keep using the
        exact index until the swap."""
        due = (index.kind == "flat" and len(index) >= self.ann_threshold) or index.needs_compaction
        if not due or cid in self._upgrades:
            return
        self._upgrades.add(cid)

        async def run() -> None:
            try:
                started = time.perf_counter()
                if await asyncio.to_thread(index.upgrade_to_ann):
                    self._dirty.add(cid)
                    log.info(
                        "index switched to %s",
                        index.kind,
                        extra={
                            "collection": cid,
                            "vectors": len(index),
                            "seconds": round(time.perf_counter() - started, 2),
                        },
                    )
            finally:
                self._upgrades.discard(cid)

        self._spawn(run(), f"kb-ann-{cid}")

    # -- vector store files (ingestion jobs) ---------------------------------------------

    def attach(
        self,
        cid: str,
        file_id: str,
        *,
        attributes: dict[str, Any] | None = None,
        chunking_strategy: dict[str, Any] | None = None,
        batch_id: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add a file to a store and queue its ingestion; attaching it again is a no-op."""
        col = self.collection(cid)
        self.file(file_id)
        spec = chunking_strategy or _loads(col.get("chunking_strategy"))
        if not spec or spec.get("type") in (None, "auto"):
            strategy = self._auto_strategy(str(col["embedding_model"]))
        else:
            strategy = strategy_from(spec)
        _check_attributes(attributes)
        if self.store.attach_file(
            cid,
            file_id,
            attributes=attributes or {},
            chunking_strategy=strategy_json(strategy),
            batch_id=batch_id,
            options=options,
        ):
            self._enqueue(cid, file_id)
        row = self.store.store_file(cid, file_id)
        assert row is not None
        return row

    def _auto_strategy(self, model: str) -> ChunkingStrategy:
        """OpenAI's auto (800 tokens, 400 overlap), shrunk to what the embedding model
        reads: a chunk longer than the model's input would be embedded truncated."""
        size = 800
        max_tokens = getattr(self.provider, "max_tokens", None)
        if max_tokens is not None:
            size = max(100, min(size, int(max_tokens(model))))
        return ChunkingStrategy(size, min(400, size // 2))

    def _enqueue(self, cid: str, file_id: str) -> None:
        if self._queue is not None:
            self._queue.put_nowait((cid, file_id))

    def store_file(self, cid: str, file_id: str) -> dict[str, Any]:
        self.collection(cid)
        row = self.store.store_file(cid, file_id)
        if row is None:
            raise NotFoundError(f"file {file_id!r} is not in vector store {cid!r}", param="file_id")
        return row

    def update_attributes(self, cid: str, file_id: str, attributes: dict[str, Any]) -> None:
        self.store_file(cid, file_id)
        _check_attributes(attributes)
        self.store.update_store_file(cid, file_id, attributes=attributes)

    async def detach(self, cid: str, file_id: str) -> int:
        """Remove a file from a store: its chunks leave SQLite, both FTS indexes and FAISS."""
        self.store_file(cid, file_id)
        async with self._lock_for(cid):
            self.store.update_store_file(cid, file_id, status="cancelled")
            removed = await self._drop_chunks(cid, file_id)
            self.store.detach_file(cid, file_id)
        return removed

    async def _drop_chunks(self, cid: str, file_id: str) -> int:
        ids = await asyncio.to_thread(self.store.delete_file_chunks, cid, file_id)
        index = await asyncio.to_thread(self.index, cid)
        index.remove(ids)
        self._dirty.add(cid)
        self._maybe_upgrade(cid, index)
        return len(ids)

    def create_batch(
        self,
        cid: str,
        files: list[dict[str, Any]],
        chunking_strategy: dict[str, Any] | None = None,
    ) -> str:
        self.collection(cid)
        for f in files:
            self.file(f["file_id"])
        batch_id = f"vsfb_{uuid.uuid4().hex}"
        self.store.add_batch(batch_id, cid)
        for f in files:
            self.attach(
                cid,
                f["file_id"],
                attributes=f.get("attributes"),
                chunking_strategy=f.get("chunking_strategy") or chunking_strategy,
                batch_id=batch_id,
            )
        self._refresh_batch(cid, batch_id)
        return batch_id

    def batch(self, cid: str, batch_id: str) -> dict[str, Any]:
        row = self.store.batch(batch_id)
        if row is None or row["collection_id"] != cid:
            raise NotFoundError(f"no file batch {batch_id!r} in {cid!r}", param="batch_id")
        return row

    async def cancel_batch(self, cid: str, batch_id: str) -> None:
        self.batch(cid, batch_id)
        for row in self.store.store_files(cid, status="in_progress", batch_id=batch_id):
            self.store.update_store_file(cid, row["file_id"], status="cancelled")
        self.store.set_batch_status(batch_id, "cancelled")

    def _refresh_batch(self, cid: str, batch_id: str | None) -> None:
        if not batch_id:
            return
        batch = self.store.batch(batch_id)
        if batch is None or batch["status"] != "in_progress":
            return
        counts = self.store.file_counts(cid, batch_id)
        if counts["in_progress"] == 0:
            status = "failed" if counts["failed"] and not counts["completed"] else "completed"
            self.store.set_batch_status(batch_id, status)

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            cid, file_id = await self._queue.get()
            try:
                await self._ingest(cid, file_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ingestion crashed", extra={"collection": cid, "file_id": file_id})
            finally:
                self._queue.task_done()
                if self._queue.empty():
                    await asyncio.to_thread(self.flush)

    def _fail(self, cid: str, file_id: str, code: str, message: str) -> None:
        self.store.update_store_file(
            cid, file_id, status="failed", last_error=_last_error(code, message)
        )
        log.warning(
            "ingestion failed: %s",
            message,
            extra={"collection": cid, "file_id": file_id, "error": message},
        )

    def _still_running(self, cid: str, file_id: str) -> bool:
        row = self.store.store_file(cid, file_id)
        return row is not None and row["status"] == "in_progress"

    async def _ingest(self, cid: str, file_id: str) -> None:
        row = self.store.store_file(cid, file_id)
        if row is None or row["status"] != "in_progress":
            return
        attempts = int(row["attempts"]) + 1
        self.store.update_store_file(cid, file_id, attempts=attempts)
        try:
            if attempts > self.settings.max_job_attempts:
                self._fail(
                    cid,
                    file_id,
                    "server_error",
                    f"ingestion was interrupted {attempts - 1} times; giving up "
                    "(knowledge.max_job_attempts)",
                )
                return
            file = self.store.file(file_id)
            if file is None or not Path(file["path"]).exists():
                self._fail(cid, file_id, "invalid_file", "the file's content is missing")
                return
            try:
                await self._ingest_file(cid, file, row)
            except LoaderError as exc:
                self._fail(cid, file_id, exc.code, exc.message)
                return
            except (InvalidRequestError, ValueError) as exc:
                self._fail(cid, file_id, "invalid_file", str(exc))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("ingestion error", extra={"collection": cid, "file_id": file_id})
                self._fail(cid, file_id, "server_error", f"{type(exc).__name__}: {exc}")
                return
            if not self._still_running(cid, file_id):
                # Cancelled while running: what it added goes again.
                async with self._lock_for(cid):
                    await self._drop_chunks(cid, file_id)
                return
            self.store.update_store_file(
                cid,
                file_id,
                status="completed",
                last_error=None,
                usage_bytes=self.store.file_usage_bytes(cid, file_id),
            )
        finally:
            self._refresh_batch(cid, row.get("batch_id"))

    async def _ingest_file(self, cid: str, file: dict[str, Any], row: dict[str, Any]) -> None:
        file_id = file["id"]
        options = row.get("options") or {}
        doc = await asyncio.to_thread(
            load_document,
            Path(file["path"]),
            file["filename"],
            self.limits,
            content_type=options.get("content_type"),
            password=options.get("password"),
        )
        col = self.collection(cid)
        model = str(col["embedding_model"])
        tok = self.provider.tokenizer(model)
        strategy = strategy_from(row["chunking_strategy"])
        title = doc.title or file["filename"]
        records = await asyncio.to_thread(
            _chunk_sections, doc.sections, strategy, tok.count, file_id, title
        )
        total = len(records)
        batch = self.settings.embed_batch_size
        for start in range(0, total, batch):
            if not self._still_running(cid, file_id):
                return
            part = records[start : start + batch]
            await self._add_records(cid, part)
            if self.progress is not None:
                self.progress(cid, file_id, min(start + batch, total), total)

    async def _add_records(self, cid: str, records: list[ChunkRecord]) -> None:
        """Embed what the collection lacks and commit the batch in one transaction."""
        while True:
            model = str(self.collection(cid)["embedding_model"])
            hashes = [content_hash(r.text) for r in records]
            known = self.store.existing_hashes(cid, hashes)
            fresh = [i for i, h in enumerate(hashes) if h not in known]
            dims = self.provider.dimensions(model)
            vectors = np.zeros((len(records), dims), np.float32)
            if fresh:
                vecs, _ = await self.provider.embed(model, [records[i].text for i in fresh])
                vectors[fresh] = vecs
            async with self._lock_for(cid):
                if str(self.collection(cid)["embedding_model"]) != model:
                    continue  # re-embedded meanwhile: embed again with the new model
                index = await asyncio.to_thread(self.index, cid)
                added = await asyncio.to_thread(self.store.add_chunks, cid, records, vectors)
                if added:
                    index.add(np.array([c for _, c in added]), vectors[[i for i, _ in added]])
                    self._dirty.add(cid)
                    self._maybe_upgrade(cid, index)
            return

    async def add_text(
        self,
        cid: str,
        text: str,
        *,
        title: str = "text.txt",
        attributes: dict[str, Any] | None = None,
        chunking_strategy: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store ``text`` as a file and ingest it now (MCP add_text, tests)."""
        self.collection(cid)
        name = title if "." in title else f"{title}.txt"
        row = self.add_file_bytes(text.encode("utf-8"), name)
        self.attach(cid, row["id"], attributes=attributes, chunking_strategy=chunking_strategy)
        if self._queue is None:
            await self._ingest(cid, row["id"])
        else:
            await self.wait_file(cid, row["id"])
        return self.store_file(cid, row["id"])

    async def ingest_url(
        self, cid: str, url: str, *, attributes: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Fetch a web page (SSRF-checked) and ingest it; a refused or failed fetch is a 400."""
        self.collection(cid)
        try:
            fetched = await fetch_url(url, self.settings.url)
        except FetchError as exc:
            raise InvalidRequestError(exc.message, param="url", code=exc.code) from None
        row = self.add_file_bytes(fetched.body, fetched.filename, source_url=fetched.final_url)
        attrs = {"url": fetched.final_url, **(attributes or {})}
        return self.attach(
            cid,
            row["id"],
            attributes=attrs,
            options={"content_type": fetched.content_type},
        )

    async def wait_file(self, cid: str, file_id: str, timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            row = self.store_file(cid, file_id)
            if row["status"] != "in_progress" or time.monotonic() > deadline:
                return row
            await asyncio.sleep(0.02)

    # -- re-embed jobs -------------------------------------------------------------------

    def reembed(self, cid: str, model: str) -> dict[str, Any]:
        self.collection(cid)
        self.provider.dimensions(model)  # unknown model -> 404 before the job starts
        for job in self.store.jobs("in_progress"):
            if job["collection_id"] == cid:
                raise InvalidRequestError(
                    f"vector store {cid!r} already has a running job {job['id']}",
                    code="job_in_progress",
                )
        job_id = f"job_{uuid.uuid4().hex}"
        self.store.add_job(job_id, "reembed", cid, {"model": model})
        self.store.update_job(job_id, total=self.store.count(cid))
        self._spawn(self._run_job(job_id), f"kb-job-{job_id}")
        created = self.store.job(job_id)
        assert created is not None
        return created

    def job(self, cid: str, job_id: str) -> dict[str, Any]:
        job = self.store.job(job_id)
        if job is None or job["collection_id"] != cid:
            raise NotFoundError(f"no job {job_id!r} in {cid!r}", param="job_id")
        return job

    async def _run_job(self, job_id: str) -> None:
        found = self.store.job(job_id)
        if found is None or found["kind"] != "reembed":
            return
        job = found
        cid = job["collection_id"]
        model = job["params"]["model"]
        try:
            dims = self.provider.dimensions(model)
            while True:
                todo = self.store.unstaged_chunks(cid, job_id, self.settings.embed_batch_size)
                if not todo:
                    async with self._lock_for(cid):
                        if self.store.unstaged_chunks(cid, job_id, 1):
                            continue
                        self.store.swap_staged(cid, job_id, model, dims)
                        with self._index_lock:
                            self._indexes.pop(cid, None)
                        await asyncio.to_thread(self.rebuild, cid)
                    break
                vecs, _ = await self.provider.embed(model, [t for _, t in todo])
                self.store.stage_embeddings(
                    job_id, [(i, v) for (i, _), v in zip(todo, vecs, strict=True)]
                )
                self.store.update_job(
                    job_id, progress=self.store.staged_count(job_id), total=self.store.count(cid)
                )
            total = self.store.count(cid)
            self.store.update_job(job_id, status="completed", progress=total, total=total)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("re-embed failed", extra={"job": job_id})
            self.store.drop_staging(job_id)
            self.store.update_job(job_id, status="failed", error=f"{type(exc).__name__}: {exc}")

    # -- search --------------------------------------------------------------------------

    async def search(
        self,
        cid: str,
        query: str | list[str],
        k: int = 10,
        *,
        filters: dict[str, Any] | None = None,
        rerank: bool | None = None,
        score_threshold: float = 0.0,
        rewrite_query: bool = False,
        mode: str = "hybrid",
        model: str | None = None,
        weights: tuple[float, float] | None = None,
        fusion: str | None = None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> SearchOutcome:
        col = self.collection(cid)
        if model is not None and model != col["embedding_model"]:
            raise InvalidRequestError(
                f"vector store {cid!r} was embedded with {col['embedding_model']!r}, "
                f"not {model!r}; re-embed it to search with another model",
                param="model",
                code="embedding_model_mismatch",
            )
        if mode not in ("hybrid", "dense", "keyword"):
            raise InvalidRequestError("mode must be hybrid, dense or keyword", param="mode")
        queries = [query] if isinstance(query, str) else list(query)
        queries = [q for q in queries if isinstance(q, str) and q.strip()]
        if not queries:
            raise InvalidRequestError("'query' must be a non-empty string", param="query")
        if rewrite_query:
            queries = [_rewrite(q) for q in queries]
        allowed: set[int] | None = None
        if filters or predicate is not None:
            preds = [compile_filter(filters)] if filters else []
            if predicate is not None:
                preds.append(predicate)
            keep = [
                r["file_id"]
                for r in self.store.store_files(cid)
                if all(p(r["attributes"]) for p in preds)
            ]
            allowed = await asyncio.to_thread(self.store.chunk_ids_of_files, cid, keep)
            allowed_files: set[str] | None = set(keep)
        else:
            allowed_files = None
        qvecs, _ = await self.provider.embed(str(col["embedding_model"]), queries)
        index = await asyncio.to_thread(self.index, cid)
        dense_w, keyword_w = weights or (self.settings.dense_weight, self.settings.keyword_weight)
        use_rerank = self.reranker is not None and (rerank is None or rerank)
        want = max(k, self.settings.rerank_candidates) if use_rerank else k

        def run() -> list[Hit]:
            per_query = [
                hybrid_search(
                    self.store,
                    index,
                    cid,
                    q,
                    qv,
                    want,
                    mode=mode,
                    candidates=self.settings.search_candidates,
                    rrf_k=self.settings.rrf_k,
                    dense_weight=dense_w,
                    keyword_weight=keyword_w,
                    allowed=allowed,
                    fusion=fusion or self.settings.fusion,
                )
                for q, qv in zip(queries, qvecs, strict=True)
            ]
            if len(per_query) == 1:
                return per_query[0]
            # Several queries: a chunk keeps its best score over them.
            best: dict[int, Hit] = {}
            for hits in per_query:
                for h in hits:
                    if h.chunk_id not in best or h.score > best[h.chunk_id].score:
                        best[h.chunk_id] = h
            return sorted(best.values(), key=lambda h: (-h.score, h.chunk_id))[:want]

        hits = await asyncio.to_thread(run)
        rows = self.store.chunks([h.chunk_id for h in hits])
        # A deduplicated chunk is reported under a file the filter allowed.
        owners = (
            self.store.chunk_owners([h.chunk_id for h in hits]) if allowed_files is not None else {}
        )
        picked: dict[int, str] = {}
        for h in hits:
            r = rows.get(h.chunk_id)
            if r is None:
                continue
            fid = r["file_id"]
            if allowed_files is not None and fid not in allowed_files:
                fid = next((f for f in owners.get(h.chunk_id, []) if f in allowed_files), fid)
            picked[h.chunk_id] = fid
        details = self.store.store_file_details(cid, set(picked.values()))
        results: list[SearchResult] = []
        for h in hits:
            if h.chunk_id not in picked:
                continue
            r = rows[h.chunk_id]
            fid = picked[h.chunk_id]
            info = details.get(fid, {})
            results.append(
                SearchResult(
                    vector_store_id=cid,
                    chunk_id=h.chunk_id,
                    file_id=fid,
                    filename=str(info.get("filename") or fid),
                    text=r["text"],
                    score=min(1.0, h.score),
                    attributes=info.get("attributes", {}),
                    position=r["position"],
                    page=r["page"],
                    sheet=r["sheet"],
                    row=r["row"],
                    dense_rank=h.dense_rank,
                    keyword_rank=h.keyword_rank,
                )
            )
        if use_rerank and results:
            assert self.reranker is not None
            scores = await self.reranker(" ".join(queries), [r.text for r in results])
            results = [_with_score(r, s) for r, s in zip(results, scores, strict=True)]
            results.sort(key=lambda r: -r.score)
        results = [r for r in results if r.score >= score_threshold][:k]
        self.touch(cid)
        return SearchOutcome(queries, results)

    # -- reading -------------------------------------------------------------------------

    def file_chunks(
        self, cid: str, file_id: str, *, after: int = -1, limit: int = 100
    ) -> list[dict[str, Any]]:
        self.store_file(cid, file_id)
        return self.store.file_chunks(cid, file_id, after=after, limit=limit)

    def read_chunk(self, chunk_id: int, neighbours: int = 0) -> list[dict[str, Any]]:
        """A chunk and up to ``neighbours`` chunks either side of it in its file."""
        row = self.store.chunks([chunk_id]).get(chunk_id)
        if row is None:
            raise NotFoundError(f"no chunk with id {chunk_id}", param="chunk_id")
        if neighbours <= 0:
            return [row]
        around = self.store.file_chunks(
            row["collection_id"],
            row["file_id"],
            after=row["position"] - neighbours - 1,
            limit=2 * neighbours + 1,
        )
        return [
            {**c, "collection_id": row["collection_id"], "file_id": row["file_id"]} for c in around
        ]


def _with_score(r: SearchResult, score: float) -> SearchResult:
    return replace(r, score=float(score), rerank_score=float(score))


def _chunk_sections(
    sections: list[Section],
    strategy: ChunkingStrategy,
    count: Callable[[list[str]], list[int]],
    file_id: str,
    title: str,
) -> list[ChunkRecord]:
    out: list[ChunkRecord] = []
    for section in sections:
        for chunk in chunk_text(section.text, strategy, count, prefix=section.prefix):
            out.append(
                ChunkRecord(
                    file_id,
                    len(out),
                    chunk.text,
                    chunk.token_count,
                    page=section.page,
                    sheet=section.sheet,
                    row=section.row,
                )
            )
    return out


def _check_attributes(attributes: dict[str, Any] | None) -> None:
    """OpenAI's limits: at most 16 keys, keys <= 64 chars, values str (<= 512) | num | bool."""
    if attributes is None:
        return
    if not isinstance(attributes, dict) or len(attributes) > 16:
        raise InvalidRequestError(
            "attributes must be an object with at most 16 keys", param="attributes"
        )
    for key, value in attributes.items():
        if not isinstance(key, str) or len(key) > 64:
            raise InvalidRequestError(
                "attribute keys are strings of at most 64 characters", param="attributes"
            )
        if isinstance(value, str):
            if len(value) > 512:
                raise InvalidRequestError(
                    f"attribute {key!r} is longer than 512 characters", param="attributes"
                )
        elif not isinstance(value, int | float | bool):
            raise InvalidRequestError(
                f"attribute {key!r} must be a string, number or boolean", param="attributes"
            )


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _loads(value: Any) -> Any:
    return json.loads(value) if value else None
