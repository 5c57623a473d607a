"""HTTP to the upstreams: one pooled client per remote model, attempts with retries before
the first byte, timeouts, health checks in the background.

The client is aiohttp's: on the hop's hot path it costs about a third of the CPU per
request of httpx (0.6 vs 1.6 ms on the 2-core test machine), which is most of what the
gateway adds to a remote model's latency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from core.context import HOPS_HEADER, hops, instance_id, request_id
from core.errors import (
    APIError,
    LoopDetectedError,
    UpstreamStatusError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from engines.remote.config import RemoteOptions
from engines.remote.pool import Upstream, UpstreamPool

__all__ = ["SERVED_BY", "Opened", "RemoteClient", "bad_gateway", "tei_root"]

log = logging.getLogger(__name__)

# What this project's servers put in their /v1/models answer: an upstream that says it
# takes the extras (`state`, `top_k`) without being configured to.
SERVED_BY = "rwkv-rag-gateway"

Prepare = Callable[[Upstream], bytes]
_decoder = msgspec.json.Decoder()


def tei_root(url: str) -> str:
    """TEI's own routes live at the server root, not under the OpenAI base path."""
    return url[: -len("/v1")] if url.endswith("/v1") else url


def bad_gateway(message: str, code: str) -> UpstreamStatusError:
    """A 502 in the OpenAI shape: the upstream, not the request, is at fault."""
    return UpstreamStatusError(502, {"message": message, "type": "server_error", "code": code})


def _error_of(status: int, body: bytes) -> dict[str, Any]:
    """The upstream's error as an OpenAI error object, whatever shape it came in."""
    try:
        parsed = _decoder.decode(body)
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace").strip()[:500]
        return {"message": text or f"the upstream answered {status}"}
    if isinstance(parsed, dict):
        err = parsed.get("error")
        if isinstance(err, dict):
            return err
        if isinstance(err, str):  # TEI, llama.cpp: {"error": "...", "error_type": "..."}
            return {"message": err, "type": parsed.get("error_type")}
        if isinstance(parsed.get("detail"), str):  # FastAPI-style servers
            return {"message": parsed["detail"]}
        if isinstance(parsed.get("message"), str):
            return {"message": parsed["message"], "type": parsed.get("type")}
    return {"message": f"the upstream answered {status}"}


@dataclass
class Opened:
    """An upstream answer that has started: its status was < 400."""

    upstream: Upstream
    response: aiohttp.ClientResponse
    started: float
    first: bytes = b""  # a stream's first chunk, already read
    body: bytes = b""  # a non-streamed answer, whole


# What a failed connection looks like (refused, reset, closed before an answer).
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class RemoteClient:
    def __init__(self, pool: UpstreamPool, options: RemoteOptions) -> None:
        self.pool = pool
        self.options = options
        self.http: aiohttp.ClientSession | None = None
        self._health: asyncio.Task[None] | None = None
        self.on_check: Callable[[Upstream, Any], None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        o = self.options
        if self.http is None:
            self.http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=o.connect_timeout_s),
                connector=aiohttp.TCPConnector(limit=o.max_connections),
                trust_env=False,
                auto_decompress=True,
            )
        await self.check_all()
        if self._health is None or self._health.done():
            self._health = asyncio.get_running_loop().create_task(
                self._health_loop(), name=f"health-{self.pool.model_id}"
            )

    async def stop(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
            self._health = None
        if self.http is not None:
            await self.http.close()
            self.http = None

    def _client(self) -> aiohttp.ClientSession:
        if self.http is None:
            raise UpstreamUnavailableError(
                f"the model {self.pool.model_id!r} is not running", retry_after=1
            )
        return self.http

    # -- health -------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.health_interval_s)
            try:
                await self.check_all()
            except Exception:  # a check never ends the loop
                log.exception("health checks failed", extra={"model": self.pool.model_id})

    async def check_all(self) -> None:
        due = [u for u in self.pool.upstreams if self.pool.due_for_check(u)]
        await asyncio.gather(*(self.check(u) for u in due))

    async def check(self, up: Upstream) -> None:
        was, first = up.routable(time.monotonic()), not up.checked
        ok, reason = await self._probe(up)
        self.pool.checked(up, ok, reason)
        now_ok = up.routable(time.monotonic())
        if was != now_ok or first:
            log.log(
                logging.INFO if now_ok else logging.WARNING,
                "upstream %s of %s is %s",
                up.label,
                self.pool.model_id,
                "healthy" if now_ok else f"down: {reason}",
                extra={"model": self.pool.model_id, "upstream": up.label, "healthy": now_ok},
            )

    async def _probe(self, up: Upstream) -> tuple[bool, str | None]:
        tei = up.config.api == "tei"
        url = f"{tei_root(up.url)}/health" if tei else f"{up.url}/models"
        try:
            timeout = aiohttp.ClientTimeout(total=self.options.health_timeout_s)
            async with self._client().get(
                url, headers=self._headers(up), timeout=timeout, allow_redirects=False
            ) as r:
                status, content = r.status, await _capped(r, self.options.max_health_bytes)
        except _TooLarge as exc:
            return False, f"health check answered more than {exc.size} bytes (max_health_bytes)"
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ClientError):  # connect_timeout_s, named by aiohttp
                return False, _reason(exc)
            limit = self.options.health_timeout_s
            return False, f"health check took longer than {limit:g} s (health_timeout_s)"
        except _CONNECTION_ERRORS as exc:
            return False, _reason(exc)
        if status != 200:
            return False, f"health check answered {status}"
        if tei:
            return True, None
        try:
            body = _decoder.decode(content)
        except msgspec.DecodeError:
            return False, "health check answered something that is not JSON"
        ours = isinstance(body, dict) and body.get("served_by") == SERVED_BY
        if up.config.extras is None:
            up.extras = ours
        data = body.get("data") if isinstance(body, dict) else None
        entry = next(
            (m for m in data or [] if isinstance(m, dict) and m.get("id") == up.model), None
        )
        if entry is None and ours:
            return False, f"the worker does not serve {up.model!r}"
        if entry is not None and self.on_check is not None:
            self.on_check(up, entry)
        if ours and entry is not None and entry.get("status") not in (None, "ready"):
            return False, f"the worker's model is {entry.get('status')}"
        return True, None

    # -- requests -----------------------------------------------------------------------

    def _headers(self, up: Upstream) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        rid = request_id.get()
        if rid is not None:  # the upstream's logs name the same request
            headers["x-request-id"] = rid
        headers[HOPS_HEADER] = ",".join((*hops.get(), instance_id))
        if up.config.api_key is not None:
            headers["authorization"] = f"Bearer {up.config.api_key.get_secret_value()}"
        return headers

    async def open(
        self,
        path: str,
        prepare: Prepare,
        *,
        key: str | None = None,
        extras: bool = False,
        stream: bool = False,
        root: bool = False,
    ) -> Opened:
        """Send to the best upstream; on a connection failure or a 5xx before the first
        byte, to the next one (``retries`` more at most). Raises the upstream's 4xx as it
        is, a 504 on a timeout, a 503 with Retry-After when no upstream is left."""
        o = self.options
        self._refuse_loop()
        tried: list[Upstream] = []
        failure: APIError | None = None
        deadline = time.monotonic() + o.total_timeout_s
        for attempt in range(o.retries + 1):
            pick = self.pool.pick(key if attempt == 0 else None, tried, extras=extras)
            if pick is None:
                break
            up = pick.upstream
            tried.append(up)
            try:
                return await self._attempt(up, path, prepare, stream, root, deadline)
            except _Retry as exc:
                failure = exc.error
                log.warning(
                    "upstream %s failed before its first byte: %s",
                    up.label,
                    exc.error.message,
                    extra={"model": self.pool.model_id, "upstream": up.label},
                )
        if failure is None or isinstance(failure, UpstreamUnavailableError):
            what = "no upstream of" if not tried else "every upstream tried for"
            raise UpstreamUnavailableError(
                f"{what} the model {self.pool.model_id!r} is reachable now"
                + (f" (last: {failure.message})" if failure is not None else ""),
                retry_after=self.pool.retry_after(),
            )
        raise failure

    def _refuse_loop(self) -> None:
        came = hops.get()
        if instance_id in came:
            raise LoopDetectedError(
                f"the request came back to this gateway through {len(came)} hop(s): an "
                f"upstream url of the model {self.pool.model_id!r} leads back to a gateway "
                "of the chain"
            )
        if len(came) > self.options.max_hops:
            raise LoopDetectedError(
                f"the request went through {len(came)} gateways, more than the "
                f"{self.options.max_hops} allowed (max_hops)"
            )

    async def _attempt(
        self, up: Upstream, path: str, prepare: Prepare, stream: bool, root: bool, deadline: float
    ) -> Opened:
        started = time.monotonic()
        base = tei_root(up.url) if root else up.url
        url, data = f"{base}/{path}", prepare(up)
        up.in_flight += 1
        response: aiohttp.ClientResponse | None = None
        try:
            response, first = await self._first_byte(up, url, data, stream, deadline)
            if 300 <= response.status < 400:
                self._redirected(up, started, response)
            if response.status >= 400:
                await self._refused(up, started, response)
            if stream:
                self._check_stream(up, started, response, first)
            opened = Opened(up, response, started, first)
            if not stream:
                opened.body = await self._body(up, response, deadline)
                self._done(up, started)
                up.in_flight -= 1
                response.release()  # read to the end: the connection goes back to the pool
            return opened
        except BaseException:
            # Failed, or cancelled (the client went away): the upstream sees the request
            # closed, and a worker frees its sequence.
            up.in_flight -= 1
            if response is not None:
                response.close()
            raise

    def _redirected(self, up: Upstream, started: float, response: aiohttp.ClientResponse) -> None:
        """A redirect is never followed: it could lead the request, and its key, to
        another host. The upstream's url is what needs fixing."""
        status = response.status
        where = urlsplit(response.headers.get("location", "")).hostname or "nowhere"
        self._failed(up, started, f"redirected ({status})")
        raise _Retry(
            bad_gateway(
                f"the upstream {up.label} answered {status}, a redirect to {where}; "
                "redirects are not followed: correct its url",
                "upstream_redirect",
            )
        )

    def _check_stream(
        self, up: Upstream, started: float, response: aiohttp.ClientResponse, first: bytes
    ) -> None:
        """A stream is relayed as it comes, so it must be SSE before its first byte goes
        to the client: anything else would reach the client as a broken stream."""
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "text/event-stream" and _starts_as_sse(first):
            return
        what = f"content-type {kind or 'none'}" if kind != "text/event-stream" else "no SSE event"
        self._failed(up, started, f"not a stream ({what})")
        raise _Retry(
            bad_gateway(
                f"the upstream {up.label} answered a stream request with {what}",
                "upstream_bad_stream",
            )
        )

    async def _refused(
        self, up: Upstream, started: float, response: aiohttp.ClientResponse
    ) -> None:
        """An error answer: a 5xx (or the gateway's own key refused) may go elsewhere; any
        other 4xx is the request's fault and goes back as it is."""
        status, content = response.status, await response.read()
        if status == LoopDetectedError.status_code:  # the same loop from any other upstream
            self._done(up, started)
            raise UpstreamStatusError(status, _error_of(status, content))
        if status >= 500:
            self._failed(up, started, f"answered {status}")
            raise _Retry(UpstreamStatusError(status, _error_of(status, content)))
        if status in (401, 403):
            self._failed(up, started, f"refused the gateway's credentials ({status})")
            raise _Retry(
                bad_gateway(
                    f"the upstream {up.label} refused this gateway's credentials ({status}); "
                    "check its api_key",
                    "upstream_auth_failed",
                )
            )
        self._done(up, started)  # the upstream is fine; the request is not
        raise UpstreamStatusError(status, _error_of(status, content))

    async def _first_byte(
        self, up: Upstream, url: str, data: bytes, stream: bool, deadline: float
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        """The response once it starts (its headers), and a stream's first chunk. A
        timeout is final; a connection failure (a connect timeout too) may go elsewhere."""
        started = time.monotonic()
        budget = min(self.options.first_byte_timeout_s, deadline - started)
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(budget):
                response = await self._client().post(
                    url, data=data, headers=self._headers(up), allow_redirects=False
                )
                first = b""
                if stream and 200 <= response.status < 300:
                    first = await response.content.readany()
                    if not first:
                        raise aiohttp.ServerDisconnectedError("the stream ended at once")
                return response, first
        except aiohttp.ConnectionTimeoutError as exc:
            self._failed(up, started, _reason(exc))
            raise _Retry(UpstreamUnavailableError(_reason(exc), retry_after=1)) from exc
        except TimeoutError:
            if response is not None:
                response.close()
            self._failed(up, started, "timeout")
            raise UpstreamTimeoutError(
                f"the upstream {up.label} did not answer within {budget:g} s (first_byte_timeout_s)"
            ) from None
        except _CONNECTION_ERRORS as exc:
            if response is not None:
                response.close()
            self._failed(up, started, _reason(exc))
            raise _Retry(UpstreamUnavailableError(_reason(exc), retry_after=1)) from exc

    async def _body(self, up: Upstream, response: aiohttp.ClientResponse, deadline: float) -> bytes:
        """A non-streamed answer's whole body (nothing reached the client yet, so a
        failure here may still go elsewhere)."""
        started = time.monotonic()
        limit = self.options.max_response_bytes
        declared = response.content_length
        try:
            if declared is not None and declared > limit:
                raise _TooLarge(declared)
            async with asyncio.timeout(max(0.001, deadline - started)):
                parts, size = [], 0
                while chunk := await response.content.readany():
                    size += len(chunk)
                    if size > limit:
                        raise _TooLarge(size)
                    parts.append(chunk)
                return b"".join(parts)
        except _TooLarge as exc:
            response.close()
            self._done(up, started)
            raise bad_gateway(
                f"the upstream {up.label} answered with more than {limit} bytes "
                f"({exc.size}; max_response_bytes)",
                "upstream_response_too_large",
            ) from None
        except TimeoutError:
            response.close()
            self._failed(up, started, "timeout")
            raise self._over_total(up) from None
        except _CONNECTION_ERRORS as exc:
            response.close()
            self._failed(up, started, _reason(exc))
            raise _Retry(UpstreamUnavailableError(_reason(exc), retry_after=1)) from exc

    def _over_total(self, up: Upstream) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(
            f"the upstream {up.label} did not finish within "
            f"{self.options.total_timeout_s:g} s (total_timeout_s)"
        )

    def _failed(self, up: Upstream, started: float, reason: str) -> None:
        up.observe(time.monotonic() - started, ok=False)
        self.pool.failed(up, reason)

    def _done(self, up: Upstream, started: float) -> None:
        up.observe(time.monotonic() - started, ok=True)
        self.pool.succeeded(up)

    async def post_json(
        self,
        path: str,
        prepare: Prepare,
        *,
        key: str | None = None,
        extras: bool = False,
        root: bool = False,
    ) -> tuple[Upstream, Any]:
        """A non-streamed request's decoded JSON answer, and who gave it."""
        opened = await self.open(path, prepare, key=key, extras=extras, root=root)
        try:
            return opened.upstream, _decoder.decode(opened.body)
        except msgspec.DecodeError:
            raise UpstreamStatusError(
                502, {"message": f"the upstream {opened.upstream.label} answered with bad JSON"}
            ) from None

    async def chunks(self, opened: Opened) -> AsyncIterator[bytes]:
        """A started stream's bytes; a failure mid-stream raises (never a replay), and
        closing this iterator (the client went away) closes the upstream connection."""
        up, response = opened.upstream, opened.response
        o = self.options
        deadline = opened.started + o.total_timeout_s
        ok = False
        try:
            yield opened.first
            while True:
                try:
                    async with asyncio.timeout(max(0.001, deadline - time.monotonic())):
                        chunk = await response.content.readany()
                except TimeoutError:
                    self.pool.failed(up, "timeout")
                    raise self._over_total(up) from None
                except _CONNECTION_ERRORS as exc:
                    self.pool.failed(up, type(exc).__name__)
                    raise bad_gateway(
                        f"the upstream {up.label} failed mid-stream ({type(exc).__name__}); "
                        "the stream cannot be resumed",
                        "upstream_stream_failed",
                    ) from exc
                if not chunk:
                    break
                yield chunk
            ok = True
        finally:
            up.in_flight -= 1
            up.observe(time.monotonic() - opened.started, ok=ok)
            if ok:
                self.pool.succeeded(up)
                response.release()
            else:
                response.close()  # the upstream sees the request closed and stops


async def _capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body as it arrives, refused (``_TooLarge``) once past ``limit`` bytes: a huge
    answer is never held whole. The caller's timeout bounds the time."""
    declared = response.content_length
    if declared is not None and declared > limit:
        response.close()
        raise _TooLarge(limit)
    parts, size = [], 0
    while chunk := await response.content.readany():
        size += len(chunk)
        if size > limit:
            response.close()
            raise _TooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)


_SSE_FIELDS = (b"data:", b"event:", b"id:", b"retry:", b":")


def _starts_as_sse(first: bytes) -> bool:
    """Whether a stream's first chunk opens an SSE event (it may hold only part of a line)."""
    head = first.lstrip(b"\xef\xbb\xbf").lstrip(b"\r\n")
    # Blank lines alone say nothing yet; the content-type vouched for the stream.
    return not head or any(head[: len(f)] == f[: len(head)] for f in _SSE_FIELDS)


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class _Retry(Exception):
    """An attempt that failed before its first byte: the next upstream may take it."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.message)
        self.error = error
