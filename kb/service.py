"""KnowledgeBase: the one door into the knowledge base.

Routes, MCP, the CLI, metrics and RAG call this façade, never its parts. It takes typed
arguments (parsing request shapes is the caller's job) and returns typed read models.
Its parts: ``Files`` (file objects), ``Ingestor`` (ingestion jobs), ``Reembedder``
(re-embed jobs), ``Retriever`` (search), all over one ``KnowledgeBackend`` (SQLite +
FAISS by default, PostgreSQL + pgvector when shared by several replicas). Stores are
named by id or, wherever an id is accepted, by a name unique among the stores the caller
sees.

Every public method runs as ``who`` (a ``core.tenancy.Principal``; the local admin when
not given, for the CLI and internal callers). Stores and files belong to a project:
lists are filtered in SQL to what ``who`` sees, another project's object is missing
(``NotFoundError``, exactly like an unknown id), and creations go to ``who.project``.
Store files, batches, jobs and chunks are reached through their store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidRequestError, NotFoundError
from core.tenancy import LOCAL_ADMIN, Principal
from kb.backend import KnowledgeBackend
from kb.chunking import ChunkingStrategy
from kb.config import KnowledgeSettings
from kb.fetch import FetchError, check_url, fetch_url, stored_url, url_filename
from kb.files import Files
from kb.filters import scalar_problem
from kb.ingest import Ingestor
from kb.loaders import LoaderLimits, kinds_for
from kb.ports import EmbeddingProvider, Progress, Reranker
from kb.reembed import Reembedder
from kb.retrieval import Retriever, SearchQuery
from kb.types import (
    Attributes,
    AttributeValue,
    Batch,
    ChunkView,
    Collection,
    Expiry,
    FileRecord,
    FileStatus,
    IngestOptions,
    Job,
    Page,
    PageRequest,
    SearchOutcome,
    StoreFile,
    StoreStats,
    StoreView,
)
from kb.websearch import WebSearchJobs

__all__ = ["UNSET", "BatchItem", "KnowledgeBase", "KnowledgeSnapshot", "check_attributes"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


@dataclass(frozen=True, slots=True)
class BatchItem:
    file_id: str
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


@dataclass(frozen=True, slots=True)
class KnowledgeSnapshot:
    stores: list[tuple[Collection, StoreStats, str | None]]
    queued: int  # files waiting for or in ingestion (every replica's, on a shared backend)
    ingesting: int  # files this process is ingesting now


def check_attributes(attributes: object) -> Attributes:
    """OpenAI's limits: at most 16 keys, keys <= 64 chars, values str (<= 512) | num | bool."""
    if not isinstance(attributes, dict) or len(attributes) > 16:
        raise InvalidRequestError(
            "attributes must be an object with at most 16 keys", param="attributes"
        )
    out: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or len(key) > 64:
            raise InvalidRequestError(
                "attribute keys are strings of at most 64 characters", param="attributes"
            )
        if isinstance(value, str) and len(value) > 512:
            raise InvalidRequestError(
                f"attribute {key!r} is longer than 512 characters", param="attributes"
            )
        if not isinstance(value, str | int | float | bool):
            raise InvalidRequestError(
                f"attribute {key!r} must be a string, number or boolean", param="attributes"
            )
        problem = scalar_problem(key)
        if problem is not None:
            raise InvalidRequestError(f"an attribute key {problem}", param="attributes")
        if (problem := scalar_problem(value)) is not None:
            raise InvalidRequestError(f"attribute {key!r} {problem}", param="attributes")
        out[key] = value
    return out


def _check_store_text(name: str | None, metadata: dict[str, str] | None) -> None:
    """A store's name and metadata are kept as text on every backend (no NUL in them)."""
    if name is not None and (problem := scalar_problem(name)) is not None:
        raise InvalidRequestError(f"the name {problem}", param="name")
    for key, value in (metadata or {}).items():
        if (problem := scalar_problem(key) or scalar_problem(value)) is not None:
            raise InvalidRequestError(f"metadata {key!r} {problem}", param="metadata")


class KnowledgeBase:
    def __init__(
        self,
        backend: KnowledgeBackend,
        provider: EmbeddingProvider,
        settings: KnowledgeSettings | None = None,
        *,
        default_model: str | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.settings = settings or KnowledgeSettings()
        self.backend = backend
        self.provider = provider
        self.default_model = default_model or self.settings.embedding_model
        s = self.settings
        self.limits = LoaderLimits(
            max_pdf_pages=s.max_pdf_pages,
            max_sheet_rows=s.max_sheet_rows,
            max_extracted_chars=s.max_extracted_chars,
            max_xlsx_uncompressed_bytes=s.max_xlsx_uncompressed_bytes,
            max_xlsx_compression_ratio=s.max_xlsx_compression_ratio,
            max_text_bytes=s.max_text_bytes,
            max_cells_per_row=s.max_cells_per_row,
            max_cell_chars=s.max_cell_chars,
            max_header_chars=s.max_header_chars,
            max_html_depth=s.max_html_depth,
            allowed_kinds=kinds_for(s.allowed_extensions),
            allowed_extensions=frozenset(e.lower() for e in s.allowed_extensions),
        )
        self.files = Files(backend, s)
        self.ingestor = Ingestor(backend, provider, s, self.limits, on_done=self._file_done)
        if s.ocr:
            from kb.loaders.ocr import tesseract_ocr

            self.ingestor.ocr = tesseract_ocr(s.ocr_languages, s.ocr_page_timeout_s)
        self.reembedder = Reembedder(backend, provider, s)
        self.web = WebSearchJobs(backend, s.web_search, self._ingest_found)
        self.retriever = Retriever(backend, provider, s, reranker)
        self._touched: dict[str, int] = {}

    @classmethod
    def open_sqlite(
        cls,
        directory: Path,
        provider: EmbeddingProvider,
        settings: KnowledgeSettings | None = None,
        **kwargs: object,
    ) -> KnowledgeBase:
        """A knowledge base on the embedded SQLite + FAISS backend in ``directory``."""
        from kb.store import SqliteBackend

        return cls(SqliteBackend(directory, settings), provider, settings, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def open_backend(
        cls,
        directory: Path,
        provider: EmbeddingProvider,
        settings: KnowledgeSettings | None = None,
        **kwargs: object,
    ) -> KnowledgeBase:
        """The backend ``settings.backend`` names: SQLite in ``directory``, or the
        PostgreSQL database at ``settings.postgres.dsn``."""
        return cls(open_backend(directory, settings), provider, settings, **kwargs)  # type: ignore[arg-type]

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the ingestion workers and resume what a previous run left unfinished."""
        await asyncio.to_thread(self.backend.startup)
        self.ingestor.start()
        await self.reembedder.resume()
        await self.web.resume()
        for batch in await asyncio.to_thread(self.backend.open_batches):
            await self._refresh_batch(batch.id)

    async def stop(self) -> None:
        await self.ingestor.stop()
        await self.reembedder.stop()
        await self.web.stop()
        await asyncio.to_thread(self.backend.flush)

    def close(self) -> None:
        self.backend.close()

    async def drain(self) -> None:
        """Wait until every queued ingestion and index build has finished (CLI, tests)."""
        if self.ingestor.started:
            await self.ingestor.drain()
        await asyncio.to_thread(self.backend.wait_maintenance)

    @property
    def progress(self) -> Progress | None:
        return self.ingestor.progress

    @progress.setter
    def progress(self, fn: Progress | None) -> None:
        self.ingestor.progress = fn

    @property
    def ingesting(self) -> int:
        return self.ingestor.busy

    # -- files ---------------------------------------------------------------------------

    def new_upload(self) -> tuple[str, Path]:
        return self.files.new_upload()

    async def register_upload(
        self,
        file_id: str,
        part: Path,
        filename: str,
        purpose: str,
        size: int,
        digest: str,
        *,
        who: Principal = LOCAL_ADMIN,
    ) -> FileRecord:
        return await self.files.register(
            file_id, part, filename, purpose, size, digest, project=who.project
        )

    async def add_file_bytes(
        self,
        data: bytes,
        filename: str,
        purpose: str = "assistants",
        source_url: str | None = None,
        *,
        who: Principal = LOCAL_ADMIN,
    ) -> FileRecord:
        return await self.files.add_bytes(data, filename, purpose, source_url, who.project)

    async def add_file_path(
        self, src: Path, purpose: str = "assistants", *, who: Principal = LOCAL_ADMIN
    ) -> FileRecord:
        return await self.files.add_path(src, purpose, who.project)

    async def file(self, file_id: str, *, who: Principal = LOCAL_ADMIN) -> FileRecord:
        return await self.files.get(file_id, who)

    async def list_files(
        self, purpose: str | None, page: PageRequest, *, who: Principal = LOCAL_ADMIN
    ) -> Page[FileRecord]:
        return await asyncio.to_thread(self.backend.list_files, purpose, page, who.visible)

    async def file_content(
        self, file_id: str, *, who: Principal = LOCAL_ADMIN
    ) -> tuple[FileRecord, Iterator[bytes]]:
        record = await self.files.get(file_id, who)
        return record, self.backend.read_file(file_id)

    async def delete_file(self, file_id: str, *, who: Principal = LOCAL_ADMIN) -> None:
        """Delete a file everywhere: from every store holding it, then its bytes."""
        await self.files.get(file_id, who)
        for cid in await asyncio.to_thread(self.backend.stores_with_file, file_id):
            await self._detach(cid, file_id)
        await asyncio.to_thread(self.backend.delete_file, file_id)

    # -- stores --------------------------------------------------------------------------

    async def collection(self, ref: str, *, who: Principal = LOCAL_ADMIN) -> Collection:
        """A store ``who`` sees, by id or, when unambiguous, by name. Names are looked up
        among the stores ``who`` sees; an admin seeing every project who finds the name in
        several takes its own project's store when exactly one there has it, else the name
        is ambiguous (400, naming it): picking one of two other projects' stores silently
        would act on whichever happened to be older."""
        col = await asyncio.to_thread(self.backend.collection, ref)
        if col is not None and who.sees(col.project):
            return col
        named = await asyncio.to_thread(self.backend.collections_named, ref, who.visible)
        if len(named) > 1 and who.visible is None:
            own = [c for c in named if c.project == who.project]
            named = own if len(own) == 1 else named
        if len(named) == 1:
            return named[0]
        if not named:
            raise NotFoundError(f"no vector store with id or name {ref!r}", param="vector_store_id")
        raise InvalidRequestError(
            f"several vector stores are named {ref!r}; use the id", param="vector_store_id"
        )

    async def view(self, col: Collection) -> StoreView:
        return StoreView(
            col, await asyncio.to_thread(self.backend.stats, col.id), self.backend.name
        )

    async def store(self, ref: str, *, who: Principal = LOCAL_ADMIN) -> StoreView:
        return await self.view(await self.collection(ref, who=who))

    async def stores(self, page: PageRequest, *, who: Principal = LOCAL_ADMIN) -> Page[StoreView]:
        found = await asyncio.to_thread(self.backend.list_collections, page, who.visible)
        return Page([await self.view(c) for c in found.data], found.has_more)

    async def all_stores(self, *, who: Principal = LOCAL_ADMIN) -> list[Collection]:
        """Every store ``who`` sees, oldest first."""
        found = await asyncio.to_thread(self.backend.all_collections)
        return [c for c in found if who.sees(c.project)]

    async def create_store(
        self,
        name: str | None,
        embedding_model: str | None = None,
        metadata: dict[str, str] | None = None,
        *,
        expires_after: Expiry | None = None,
        chunking_strategy: ChunkingStrategy | None = None,
        file_ids: list[str] | None = None,
        who: Principal = LOCAL_ADMIN,
    ) -> StoreView:
        _check_store_text(name, metadata)
        model = embedding_model or self.default_model
        if not model:
            raise InvalidRequestError("no embedding model is configured for vector stores")
        for fid in file_ids or []:
            await self.files.get(fid, who)
        now = int(time.time())
        col = Collection(
            id=f"vs_{uuid.uuid4().hex}",
            name=name,
            embedding_model=model,
            dimensions=self.provider.dimensions(model),
            metadata=dict(metadata or {}),
            created_at=now,
            expires_after=expires_after,
            last_active_at=now,
            chunking_strategy=chunking_strategy,
            project=who.project,
        )
        await asyncio.to_thread(self.backend.create_collection, col)
        for fid in file_ids or []:
            await self.attach(col.id, fid, chunking_strategy=chunking_strategy, who=who)
        return await self.view(col)

    async def update_store(
        self,
        ref: str,
        *,
        name: str | _Unset | None = UNSET,
        metadata: dict[str, str] | _Unset | None = UNSET,
        expires_after: Expiry | _Unset | None = UNSET,
        who: Principal = LOCAL_ADMIN,
    ) -> StoreView:
        _check_store_text(
            None if isinstance(name, _Unset) else name,
            None if isinstance(metadata, _Unset) else metadata,
        )
        col = await self.collection(ref, who=who)
        fields: dict[str, object] = {}
        if not isinstance(name, _Unset):
            fields["name"] = name
        if not isinstance(metadata, _Unset):
            fields["metadata"] = metadata or {}
        if not isinstance(expires_after, _Unset):
            fields["expires_after"] = (
                {"anchor": expires_after.anchor, "days": expires_after.days}
                if expires_after
                else None
            )
            fields["last_active_at"] = int(time.time())
        await asyncio.to_thread(self.backend.update_collection, col.id, fields)
        return await self.store(col.id)

    async def delete_store(self, ref: str, *, who: Principal = LOCAL_ADMIN) -> str:
        col = await self.collection(ref, who=who)
        await asyncio.to_thread(self.backend.delete_collection, col.id)
        return col.id

    async def touch(self, cid: str) -> None:
        """Record use (expires_after counts from it): at most one write a minute per store,
        so searches do not queue behind ingestion for the writer."""
        now = int(time.time())
        if now - self._touched.get(cid, 0) >= 60:
            self._touched[cid] = now
            await asyncio.to_thread(self.backend.update_collection, cid, {"last_active_at": now})

    # -- files in stores -----------------------------------------------------------------

    def _auto_strategy(self, model: str) -> ChunkingStrategy:
        """OpenAI's auto (800 tokens, 400 overlap), shrunk to what the embedding model
        reads: a chunk longer than the model's input would be embedded truncated."""
        size = 800
        limit = self.provider.max_tokens(model)
        if limit is not None:
            size = max(100, min(size, int(limit)))
        return ChunkingStrategy(size, min(400, size // 2))

    async def attach(
        self,
        ref: str,
        file_id: str,
        *,
        attributes: Attributes | None = None,
        chunking_strategy: ChunkingStrategy | None = None,
        options: IngestOptions | None = None,
        batch_id: str | None = None,
        who: Principal = LOCAL_ADMIN,
    ) -> StoreFile:
        """Add a file to a store and queue its ingestion; attaching it again is a no-op.
        The file must be one ``who`` sees (another project's is missing)."""
        col = await self.collection(ref, who=who)
        await self.files.get(file_id, who)
        attrs = check_attributes(attributes) if attributes is not None else {}
        strategy = (
            chunking_strategy or col.chunking_strategy or self._auto_strategy(col.embedding_model)
        )
        now = int(time.time())
        sf = StoreFile(
            collection_id=col.id,
            file_id=file_id,
            status="in_progress",
            last_error=None,
            attributes=attrs,
            chunking_strategy=strategy,
            usage_bytes=0,
            created_at=now,
            updated_at=now,
            batch_id=batch_id,
            options=options or IngestOptions(),
        )
        if await asyncio.to_thread(self.backend.attach, sf):
            self.ingestor.wake()
        return await self.store_file(col.id, file_id)

    async def store_file(
        self, ref: str, file_id: str, *, who: Principal = LOCAL_ADMIN
    ) -> StoreFile:
        col = await self.collection(ref, who=who)
        sf = await asyncio.to_thread(self.backend.store_file, col.id, file_id)
        if sf is None:
            raise NotFoundError(
                f"file {file_id!r} is not in vector store {col.id!r}", param="file_id"
            )
        return sf

    async def store_files(
        self,
        ref: str,
        page: PageRequest,
        *,
        status: FileStatus | None = None,
        batch_id: str | None = None,
        who: Principal = LOCAL_ADMIN,
    ) -> Page[StoreFile]:
        col = await self.collection(ref, who=who)
        if batch_id is not None:
            await self.batch(col.id, batch_id)
        return await asyncio.to_thread(
            lambda: self.backend.list_store_files(col.id, page, status=status, batch_id=batch_id)
        )

    async def completed_digests(self, ref: str, *, who: Principal = LOCAL_ADMIN) -> set[str]:
        """The sha256 of the files a store holds completed (CLI: skip unchanged files)."""
        col = await self.collection(ref, who=who)
        return await asyncio.to_thread(self.backend.completed_digests, col.id)

    async def update_attributes(
        self, ref: str, file_id: str, attributes: Attributes, *, who: Principal = LOCAL_ADMIN
    ) -> StoreFile:
        sf = await self.store_file(ref, file_id, who=who)
        attrs = check_attributes(attributes)
        await asyncio.to_thread(self.backend.set_attributes, sf.collection_id, file_id, dict(attrs))
        return await self.store_file(sf.collection_id, file_id)

    async def detach(self, ref: str, file_id: str, *, who: Principal = LOCAL_ADMIN) -> int:
        """Remove a file from a store: its chunks leave the store and its indexes."""
        sf = await self.store_file(ref, file_id, who=who)
        return await self._detach(sf.collection_id, file_id)

    async def _detach(self, cid: str, file_id: str) -> int:
        b = self.backend
        await asyncio.to_thread(b.set_file_state, cid, file_id, "cancelled", clear_secrets=True)
        removed = await asyncio.to_thread(b.delete_file_chunks, cid, file_id)
        await asyncio.to_thread(b.detach, cid, file_id)
        return removed

    async def add_text(
        self,
        ref: str,
        text: str,
        *,
        title: str = "text.txt",
        attributes: Attributes | None = None,
        chunking_strategy: ChunkingStrategy | None = None,
        who: Principal = LOCAL_ADMIN,
    ) -> StoreFile:
        """Store ``text`` as a file of the store's project and ingest it (MCP add_text,
        tests); returns when done."""
        col = await self.collection(ref, who=who)
        if attributes is not None:
            check_attributes(attributes)
        name = title if "." in title else f"{title}.txt"
        record = await self.files.add_bytes(text.encode("utf-8"), name, project=col.project)
        await self.attach(
            col.id, record.id, attributes=attributes, chunking_strategy=chunking_strategy
        )
        return await self.wait_file(col.id, record.id)

    async def ingest_url(
        self,
        ref: str,
        url: str,
        *,
        attributes: Attributes | None = None,
        who: Principal = LOCAL_ADMIN,
    ) -> StoreFile:
        """Queue a web page for a store, as a job: the answer comes at once with the file
        ``in_progress``; the ingestion fetches it (SSRF-checked, under knowledge.url's total
        deadline and byte cap) into a file of the store's project, and a refused or failed
        fetch fails the file with the reason. A URL that could never be fetched is a 400."""
        col = await self.collection(ref, who=who)
        attrs = check_attributes(attributes) if attributes is not None else {}
        try:
            check_url(url, self.settings.url)
        except FetchError as exc:
            raise InvalidRequestError(exc.message, param="url", code=exc.code) from None
        url_kept = stored_url(url)[:512]
        record = await self.files.add_bytes(
            b"", url_filename(url), source_url=url_kept, project=col.project
        )
        return await self.attach(
            col.id,
            record.id,
            attributes=check_attributes({"url": url_kept, **attrs}),
            options=IngestOptions(fetch_url=url),
            who=who,
        )

    async def wait_file(
        self, ref: str, file_id: str, timeout: float = 600.0, *, who: Principal = LOCAL_ADMIN
    ) -> StoreFile:
        """The store file once its ingestion has ended (or as it is after ``timeout``). Without
        running workers (a tool using the KB directly) the ingestion runs here."""
        if not self.ingestor.started:
            self.ingestor.start()
            try:
                await self.ingestor.drain(timeout)
            finally:
                await self.ingestor.stop()
        deadline = time.monotonic() + timeout
        while True:
            sf = await self.store_file(ref, file_id, who=who)
            if sf.status != "in_progress" or time.monotonic() > deadline:
                return sf
            await asyncio.sleep(0.02)

    # -- batches -------------------------------------------------------------------------

    async def create_batch(
        self,
        ref: str,
        items: list[BatchItem],
        chunking_strategy: ChunkingStrategy | None = None,
        *,
        who: Principal = LOCAL_ADMIN,
    ) -> Batch:
        col = await self.collection(ref, who=who)
        for item in items:
            await self.files.get(item.file_id, who)
            if item.attributes is not None:
                check_attributes(item.attributes)
        batch = Batch(f"vsfb_{uuid.uuid4().hex}", col.id, "in_progress", int(time.time()))
        await asyncio.to_thread(self.backend.add_batch, batch)
        for item in items:
            await self.attach(
                col.id,
                item.file_id,
                attributes=item.attributes,
                chunking_strategy=item.chunking_strategy or chunking_strategy,
                batch_id=batch.id,
            )
        await self._refresh_batch(batch.id)
        return await self.batch(col.id, batch.id)

    async def batch(self, ref: str, batch_id: str, *, who: Principal = LOCAL_ADMIN) -> Batch:
        col = await self.collection(ref, who=who)
        found = await asyncio.to_thread(self.backend.batch, batch_id)
        if found is None or found.collection_id != col.id:
            raise NotFoundError(f"no file batch {batch_id!r} in {col.id!r}", param="batch_id")
        counts = await asyncio.to_thread(self.backend.file_counts, col.id, batch_id)
        return Batch(found.id, found.collection_id, found.status, found.created_at, counts)

    async def cancel_batch(self, ref: str, batch_id: str, *, who: Principal = LOCAL_ADMIN) -> Batch:
        batch = await self.batch(ref, batch_id, who=who)
        page = PageRequest(limit=100_000, order="asc")
        running = await asyncio.to_thread(
            lambda: self.backend.list_store_files(
                batch.collection_id, page, status="in_progress", batch_id=batch_id
            )
        )
        for sf in running.data:
            await asyncio.to_thread(
                self.backend.set_file_state,
                batch.collection_id,
                sf.file_id,
                "cancelled",
                clear_secrets=True,
            )
        await asyncio.to_thread(self.backend.set_batch_status, batch_id, "cancelled")
        return await self.batch(batch.collection_id, batch_id)

    async def _refresh_batch(self, batch_id: str | None) -> None:
        if not batch_id:
            return
        batch = await asyncio.to_thread(self.backend.batch, batch_id)
        if batch is None or batch.status != "in_progress":
            return
        counts = await asyncio.to_thread(self.backend.file_counts, batch.collection_id, batch_id)
        if counts.in_progress == 0:
            status = "failed" if counts.failed and not counts.completed else "completed"
            await asyncio.to_thread(self.backend.set_batch_status, batch_id, status)

    def _file_done(self, sf: StoreFile) -> None:
        if sf.batch_id:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._refresh_batch(sf.batch_id))

    # -- chunks --------------------------------------------------------------------------

    async def file_chunks(
        self,
        ref: str,
        file_id: str,
        *,
        after: int = -1,
        limit: int = 100,
        who: Principal = LOCAL_ADMIN,
    ) -> list[ChunkView]:
        sf = await self.store_file(ref, file_id, who=who)
        return await asyncio.to_thread(
            self.backend.file_chunks, sf.collection_id, file_id, after, limit
        )

    async def read_chunk(
        self, chunk_id: int, neighbours: int = 0, *, who: Principal = LOCAL_ADMIN
    ) -> list[ChunkView]:
        """A chunk of a store ``who`` sees and up to ``neighbours`` chunks either side of
        it in its file."""
        found = (await asyncio.to_thread(self.backend.chunks, [chunk_id])).get(chunk_id)
        col = (
            await asyncio.to_thread(self.backend.collection, found.collection_id)
            if found is not None
            else None
        )
        if found is None or col is None or not who.sees(col.project):
            raise NotFoundError(f"no chunk with id {chunk_id}", param="chunk_id")
        if neighbours <= 0:
            return [found]
        return await asyncio.to_thread(
            self.backend.file_chunks,
            found.collection_id,
            found.file_id,
            found.position - neighbours - 1,
            2 * neighbours + 1,
        )

    async def file_record(self, file_id: str, *, who: Principal = LOCAL_ADMIN) -> FileRecord | None:
        found = await asyncio.to_thread(self.backend.file, file_id)
        return found if found is not None and who.sees(found.project) else None

    # -- jobs ------------------------------------------------------------------------------

    async def reembed(self, ref: str, model: str, *, who: Principal = LOCAL_ADMIN) -> Job:
        return await self.reembedder.start_job(await self.collection(ref, who=who), model)

    async def web_search(
        self,
        ref: str,
        query: str,
        *,
        max_results: int | None = None,
        attributes: Attributes | None = None,
        who: Principal = LOCAL_ADMIN,
    ) -> Job:
        """Search the web (the configured provider) and ingest the results, as a job."""
        col = await self.collection(ref, who=who)
        attrs = check_attributes(attributes) if attributes is not None else {}
        return await self.web.start_job(col, query, max_results, attrs)

    async def _ingest_found(self, cid: str, url: str, attributes: Attributes) -> StoreFile:
        """One web search result, fetched here: the search job (already off the request)
        records a result that cannot be fetched as failed and goes on with the others."""
        col = await self.collection(cid)
        try:
            fetched = await fetch_url(url, self.settings.url)
        except FetchError as exc:
            raise InvalidRequestError(exc.message, param="url", code=exc.code) from None
        url_kept = stored_url(fetched.final_url)[:512]
        record = await self.files.add_bytes(
            fetched.body, fetched.filename, source_url=url_kept, project=col.project
        )
        return await self.attach(
            col.id,
            record.id,
            attributes=check_attributes({"url": url_kept, **attributes}),
            options=IngestOptions(content_type=fetched.content_type),
        )

    async def job(self, ref: str, job_id: str, *, who: Principal = LOCAL_ADMIN) -> Job:
        col = await self.collection(ref, who=who)
        job = await asyncio.to_thread(self.backend.job, job_id)
        if job is None or job.collection_id != col.id:
            raise NotFoundError(f"no job {job_id!r} in {col.id!r}", param="job_id")
        return job

    async def jobs(self, ref: str | None = None, *, who: Principal = LOCAL_ADMIN) -> list[Job]:
        cid = (await self.collection(ref, who=who)).id if ref else None
        found = await asyncio.to_thread(self.backend.jobs, None, cid)
        if cid is not None or who.visible is None:
            return found
        seen = {c.id for c in await self.all_stores(who=who)}
        return [j for j in found if j.collection_id in seen]

    # -- figures -------------------------------------------------------------------------

    def snapshot(self) -> KnowledgeSnapshot:
        """Every store's figures and index kind, read synchronously (metrics scrapes run
        in a worker thread)."""
        b = self.backend
        stores = [(c, b.stats(c.id), b.index_kind(c.id)) for c in b.all_collections()]
        return KnowledgeSnapshot(stores, b.in_progress_count(), self.ingestor.busy)

    # -- search and maintenance ----------------------------------------------------------

    async def search(
        self, ref: str, query: SearchQuery, *, who: Principal = LOCAL_ADMIN
    ) -> SearchOutcome:
        col = await self.collection(ref, who=who)
        outcome = await self.retriever.search(col, query)
        await self.touch(col.id)
        return outcome

    async def rebuild(self, ref: str, *, who: Principal = LOCAL_ADMIN) -> tuple[int, str]:
        col = await self.collection(ref, who=who)
        return await asyncio.to_thread(self.backend.rebuild_index, col.id)

    async def index_kind(self, ref: str, *, who: Principal = LOCAL_ADMIN) -> str | None:
        col = await self.collection(ref, who=who)
        return self.backend.index_kind(col.id)


def open_backend(directory: Path, settings: KnowledgeSettings | None = None) -> KnowledgeBackend:
    """The storage backend the settings name (``knowledge.backend``)."""
    s = settings or KnowledgeSettings()
    if s.backend == "postgres":
        from kb.pg import PostgresBackend

        if not s.postgres.dsn:
            raise ValueError(
                "knowledge.backend is postgres but knowledge.postgres.dsn is not set "
                "(RWKV_RAG_KNOWLEDGE__POSTGRES__DSN)"
            )
        return PostgresBackend(s.postgres.dsn, s)
    from kb.store import SqliteBackend

    return SqliteBackend(directory, s)
