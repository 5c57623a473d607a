"""Web-search ingestion: a query becomes documents in a store, as a job.

The configured provider (``knowledge.web_search``) turns the query into result URLs; each
is fetched through the SSRF-safe fetcher and ingested as a file whose attributes hold the
query (``query``) and the source URL (``url``, credentials and secret parameters
stripped). The job's progress counts the results handled; a result that
cannot be fetched is recorded on the job (``params.failed``) and the others go on.

Providers: SearXNG's JSON API (self-hosted). Another search API is one small class with
``search(query, max_results) -> list[WebResult]``, registered in ``PROVIDERS``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from core.errors import InvalidRequestError
from kb.backend import KnowledgeBackend
from kb.config import WebSearchSettings
from kb.jobs import JobRunner
from kb.types import Attributes, Collection, Job, JobStatus

__all__ = [
    "PROVIDERS",
    "SearxngProvider",
    "WebResult",
    "WebSearchError",
    "WebSearchJobs",
    "WebSearchProvider",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebResult:
    url: str
    title: str = ""


class WebSearchProvider(Protocol):
    async def search(self, query: str, max_results: int) -> list[WebResult]: ...


class SearxngProvider:
    """SearXNG's JSON API: ``GET {url}/search?q=...&format=json``."""

    def __init__(self, settings: WebSearchSettings) -> None:
        if not settings.url:
            raise InvalidRequestError(
                "knowledge.web_search.url is needed for the searxng provider",
                code="web_search_not_configured",
            )
        self.url = settings.url.rstrip("/")
        self.settings = settings

    async def search(self, query: str, max_results: int) -> list[WebResult]:
        body = json.loads(await self._answer(query))
        out: list[WebResult] = []
        for item in body.get("results", []) if isinstance(body, dict) else []:
            url = item.get("url") if isinstance(item, dict) else None
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                out.append(WebResult(url, str(item.get("title") or "")))
            if len(out) >= max_results:
                break
        return list({r.url: r for r in out}.values())

    async def _answer(self, query: str) -> bytes:
        """The provider's answer, read within ``total_timeout_s`` and ``max_response_bytes``
        as it arrives: the read timeout alone lets a provider dribbling a byte at a time hold
        the job forever, and a huge answer would be held whole."""
        s = self.settings
        try:
            async with asyncio.timeout(s.total_timeout_s):
                return await self._read(query)
        except TimeoutError:
            raise WebSearchError(
                f"the search provider did not answer within {s.total_timeout_s:g} s "
                "(knowledge.web_search.total_timeout_s)"
            ) from None

    async def _read(self, query: str) -> bytes:
        limit = self.settings.max_response_bytes
        too_large = WebSearchError(
            f"the search provider answered more than {limit} bytes "
            "(knowledge.web_search.max_response_bytes)"
        )
        params = {"q": query, "format": "json"}
        timeout = httpx.Timeout(self.settings.timeout_s)
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", f"{self.url}/search", params=params) as r,
        ):
            r.raise_for_status()
            declared = r.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise too_large
            body = bytearray()
            async for chunk in r.aiter_bytes():
                body.extend(chunk)
                if len(body) > limit:
                    raise too_large
            return bytes(body)


class WebSearchError(Exception):
    """The provider's answer was refused: too slow or too large."""


PROVIDERS: dict[str, Callable[[WebSearchSettings], WebSearchProvider]] = {
    "searxng": SearxngProvider,
}

# (store id, url, attributes) -> ingest one page (the knowledge base's ingest_url).
IngestUrl = Callable[[str, str, Attributes], Awaitable[Any]]


class WebSearchJobs(JobRunner):
    kind = "web_search"

    def __init__(
        self, backend: KnowledgeBackend, settings: WebSearchSettings, ingest: IngestUrl
    ) -> None:
        super().__init__(backend)
        self.settings = settings
        self.ingest = ingest

    def provider(self) -> WebSearchProvider:
        name = self.settings.provider
        if name is None:
            raise InvalidRequestError(
                "no web search provider is configured (knowledge.web_search.provider, "
                "env RWKV_RAG_KNOWLEDGE__WEB_SEARCH__PROVIDER)",
                code="web_search_not_configured",
            )
        return PROVIDERS[name](self.settings)

    async def start_job(
        self, col: Collection, query: str, max_results: int | None, attributes: Attributes
    ) -> Job:
        self.provider()  # a missing provider is a 400 before the job exists
        if not query.strip():
            raise InvalidRequestError("'query' must be a non-empty string", param="query")
        n = max_results or self.settings.default_results
        if not 1 <= n <= self.settings.max_results:
            raise InvalidRequestError(
                f"max_results is between 1 and {self.settings.max_results} "
                "(knowledge.web_search.max_results)",
                param="max_results",
            )
        params: dict[str, object] = {
            "query": query,
            "max_results": n,
            "attributes": dict(attributes),
            "files": [],
            "failed": [],
        }
        return await self._launch(col.id, params, n)

    async def run(self, job_id: str) -> None:
        job = await asyncio.to_thread(self.backend.job, job_id)
        if job is None or job.kind != "web_search":
            return
        b, p = self.backend, dict(job.params)
        query = str(p["query"])
        try:
            results = await self.provider().search(query, int(str(p["max_results"])))
        except Exception as exc:  # noqa: BLE001 - the provider down or answering garbage: the job says so
            log.warning("web search failed: %s", exc, extra={"job": job_id})
            await asyncio.to_thread(
                b.update_job, job_id, status="failed", error=f"search failed: {exc}"
            )
            return
        files: list[object] = list(p.get("files") or [])  # type: ignore[call-overload]
        failed: list[object] = list(p.get("failed") or [])  # type: ignore[call-overload]
        extra = p.get("attributes") if isinstance(p.get("attributes"), dict) else {}
        await asyncio.to_thread(b.update_job, job_id, total=len(results))
        for i, result in enumerate(results, start=1):
            attrs: Attributes = {**extra, "query": query[:512]}  # type: ignore[dict-item]
            try:
                sf = await self.ingest(job.collection_id, result.url, attrs)
                files.append(getattr(sf, "file_id", None))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one page failing does not stop the others
                failed.append({"url": result.url, "error": getattr(exc, "message", str(exc))})
            p.update(files=files, failed=failed)
            await asyncio.to_thread(b.update_job, job_id, progress=i, params=p)
        error = f"{len(failed)} of {len(results)} results could not be fetched" if failed else None
        status: JobStatus = "failed" if results and len(failed) == len(results) else "completed"
        await asyncio.to_thread(b.update_job, job_id, status=status, error=error)
