"""Fetch a web page for ingestion without becoming an SSRF proxy.

Each hop (the URL and every redirect) is resolved once; every address must be public (not
loopback, private, link-local, CGNAT, multicast, reserved, or an IPv4-mapped form of
those), and the connection goes to the very address that was checked: the URL is
rewritten to it while ``Host`` and TLS SNI (and so certificate checks) keep the name. A
DNS answer that changes between the check and the connect (rebinding) is therefore never
used; the connected peer is checked again all the same. URLs with credentials are
refused, redirects are followed by hand and bounded, and the body is read in chunks up to
a byte cap, the whole fetch within a total deadline. Logs never carry a URL's query or credentials.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import SplitResult, unquote, urljoin, urlsplit, urlunsplit

import httpx

from kb.config import UrlFetchSettings

__all__ = ["FetchError", "Fetched", "fetch_url", "is_public_address", "redact", "stored_url"]

log = logging.getLogger(__name__)
_REDIRECTS = {301, 302, 303, 307, 308}
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchError(Exception):
    def __init__(self, message: str, code: str = "url_fetch_failed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str
    final_url: str
    content_type: str | None
    body: bytes
    filename: str


@dataclass(frozen=True, slots=True)
class _Target:
    """One hop: the URL as given, its host and port, and the address to connect to."""

    parts: SplitResult
    host: str
    port: int
    address: IP


def is_public_address(ip: IP) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return is_public_address(mapped)
    return bool(ip.is_global) and not ip.is_multicast and not ip.is_reserved


def redact(url: str) -> str:
    """A URL fit for logs and messages: no credentials, no query or fragment."""
    try:
        p = urlsplit(url)
        host = p.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if p.port:
            netloc += f":{p.port}"
        return urlunsplit((p.scheme, netloc, p.path, "", ""))
    except ValueError:
        return "<malformed url>"


_SECRET_PARAM = re.compile(
    r"token|key|secret|passw|pwd|auth|signature|^sig$|credential|session|^x-amz-", re.I
)


def stored_url(url: str) -> str:
    """The URL as kept in a file's attributes: no credentials and no query parameters
    that look like secrets (tokens, keys, signatures), the rest of the query kept."""
    p = urlsplit(url)
    host = p.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{p.port}" if p.port else "")
    query = "&".join(
        pair for pair in p.query.split("&") if pair and not _SECRET_PARAM.search(pair.split("=")[0])
    )
    return urlunsplit((p.scheme, netloc, p.path, query, ""))


def check_url(url: str, settings: UrlFetchSettings) -> str:
    """``url`` when it could be fetched at all (http(s), a host, no credentials, not a
    literal non-public address), else a FetchError. A host name's addresses are checked
    when it is fetched (resolving it is work for the job)."""
    _, host, _ = _parse(url)
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return url
    if not _exempt(host, settings) and not is_public_address(literal):
        raise FetchError(
            f"refused to fetch {host!r}: {literal} is a non-public address (allow it with "
            "knowledge.url.allow_private_networks or allowed_hosts)",
            "url_not_allowed",
        )
    return url


def url_filename(url: str) -> str:
    """A file name for ``url`` before its answer names one."""
    parts = urlsplit(url)
    return PurePosixPath(unquote(parts.path)).name or parts.hostname or "page"


def _exempt(host: str, settings: UrlFetchSettings) -> bool:
    allowed = {h.lower() for h in settings.allowed_hosts}
    return settings.allow_private_networks or host.lower() in allowed


def _parse(url: str) -> tuple[SplitResult, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchError(f"{redact(url)} is not a valid URL", "invalid_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"only http(s) URLs can be fetched, not {redact(url)!r}", "invalid_url")
    if parts.username is not None or parts.password is not None:
        raise FetchError("URLs with credentials (user:password@) are not accepted", "invalid_url")
    return parts, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def _resolve(host: str, port: int) -> list[IP]:
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host!r}: {exc}") from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def _target(url: str, settings: UrlFetchSettings) -> _Target:
    """Resolve once; refuse a non-public answer; the address the connection will use."""
    parts, host, port = _parse(url)
    addresses = await _resolve(host, port)
    if not addresses:
        raise FetchError(f"cannot resolve {host!r}")
    if not _exempt(host, settings):
        for ip in addresses:
            if not is_public_address(ip):
                raise FetchError(
                    f"refused to fetch {host!r}: it resolves to the non-public address {ip} "
                    "(allow it with knowledge.url.allow_private_networks or allowed_hosts)",
                    "url_not_allowed",
                )
    return _Target(parts, host, port, addresses[0])


def _pinned(t: _Target) -> tuple[str, dict[str, str], dict[str, str]]:
    """(URL to the checked address, headers, request extensions) keeping the host name
    for ``Host`` and for TLS (SNI and certificate verification)."""
    ip = f"[{t.address}]" if t.address.version == 6 else str(t.address)
    default = 443 if t.parts.scheme == "https" else 80
    netloc = ip if t.port == default else f"{ip}:{t.port}"
    url = urlunsplit((t.parts.scheme, netloc, t.parts.path or "/", t.parts.query, ""))
    name = f"[{t.host}]" if ":" in t.host else t.host
    host_header = name if t.port == default else f"{name}:{t.port}"
    ext = {"sni_hostname": t.host} if t.parts.scheme == "https" else {}
    return url, {"Host": host_header}, ext


def _check_peer(response: httpx.Response, t: _Target, settings: UrlFetchSettings) -> None:
    if _exempt(t.host, settings):
        return
    stream = response.extensions.get("network_stream")
    addr = stream.get_extra_info("server_addr") if stream is not None else None
    if addr and not is_public_address(ipaddress.ip_address(addr[0])):
        raise FetchError(
            f"refused: {t.host!r} connected to the non-public address {addr[0]}",
            "url_not_allowed",
        )


def _filename(url: str, response: httpx.Response) -> str:
    disposition = response.headers.get("content-disposition", "")
    m = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)", disposition, re.I)
    if m:
        name = PurePosixPath(unquote(m.group(1))).name
        if name:
            return name
    parts = urlsplit(url)
    name = PurePosixPath(unquote(parts.path)).name
    return name or parts.hostname or "page"


async def _body(response: httpx.Response, url: str, limit: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FetchError(
            f"{redact(url)} is {declared} bytes; the limit is {limit} (knowledge.url.max_bytes)",
            "file_too_large",
        )
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > limit:
            raise FetchError(
                f"{redact(url)} is larger than {limit} bytes (knowledge.url.max_bytes)",
                "file_too_large",
            )
    return bytes(body)


async def fetch_url(
    url: str, settings: UrlFetchSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> Fetched:
    """The page at ``url``. ``timeout_s`` bounds each read only, so a page sending a few
    bytes at a time would never end by it: ``total_timeout_s`` bounds the whole fetch."""
    try:
        async with asyncio.timeout(settings.total_timeout_s):
            return await _fetch(url, settings, transport)
    except TimeoutError:
        raise FetchError(
            f"fetching {redact(url)} took longer than {settings.total_timeout_s:g} s "
            "(knowledge.url.total_timeout_s)",
            "url_fetch_timeout",
        ) from None


async def _fetch(
    url: str, settings: UrlFetchSettings, transport: httpx.AsyncBaseTransport | None
) -> Fetched:
    current = url
    headers = {"User-Agent": settings.user_agent, "Accept": "*/*"}
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout_s),
        follow_redirects=False,
        headers=headers,
        transport=transport,
    ) as client:
        for _hop in range(settings.max_redirects + 1):
            target = await _target(current, settings)
            pinned, host_header, extensions = _pinned(target)
            try:
                request = client.build_request(
                    "GET", pinned, headers=host_header, extensions=extensions
                )
                response = await client.send(request, stream=True)
                try:
                    _check_peer(response, target, settings)
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        current = urljoin(current, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise FetchError(f"{redact(current)} answered HTTP {response.status_code}")
                    body = await _body(response, current, settings.max_bytes)
                    log.info("fetched %s", redact(current), extra={"bytes": len(body)})
                    return Fetched(
                        url=url,
                        final_url=current,
                        content_type=response.headers.get("content-type"),
                        body=body,
                        filename=_filename(current, response),
                    )
                finally:
                    await response.aclose()
            except httpx.TimeoutException:
                raise FetchError(
                    f"timed out fetching {redact(current)} (knowledge.url.timeout_s)",
                    "url_fetch_timeout",
                ) from None
            except httpx.HTTPError as exc:
                raise FetchError(
                    f"fetching {redact(current)} failed: {type(exc).__name__}"
                ) from None
    raise FetchError(f"more than {settings.max_redirects} redirects from {redact(url)}")
