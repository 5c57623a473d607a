"""Fetch a web page for ingestion without becoming an SSRF proxy.

Every hop (the URL and each redirect) is checked twice: its host name is resolved and
every address must be public (not loopback, private, link-local, CGNAT, multicast,
reserved, or an IPv4-mapped form of those), and after connecting the peer address the
socket actually reached is checked again, so a DNS answer that changes between the check
and the connect (rebinding) is caught too. Redirects are followed by hand, bounded, and
the body is read in chunks up to a byte cap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from kb.config import UrlFetchSettings

__all__ = ["FetchError", "Fetched", "fetch_url", "is_public_address"]

_REDIRECTS = {301, 302, 303, 307, 308}


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


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return is_public_address(mapped)
    return bool(ip.is_global) and not ip.is_multicast and not ip.is_reserved


def _exempt(host: str, settings: UrlFetchSettings) -> bool:
    allowed = {h.lower() for h in settings.allowed_hosts}
    return settings.allow_private_networks or host.lower() in allowed


async def _check_host(host: str, port: int, settings: UrlFetchSettings) -> None:
    if _exempt(host, settings):
        return
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise FetchError(f"cannot resolve {host!r}: {exc}") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for ip in addresses:
        if not is_public_address(ip):
            raise FetchError(
                f"refused to fetch {host!r}: it resolves to the non-public address {ip} "
                "(allow it with knowledge.url.allow_private_networks or allowed_hosts)",
                "url_not_allowed",
            )


def _check_peer(response: httpx.Response, host: str, settings: UrlFetchSettings) -> None:
    if _exempt(host, settings):
        return
    stream = response.extensions.get("network_stream")
    addr = stream.get_extra_info("server_addr") if stream is not None else None
    if not addr:
        return
    ip = ipaddress.ip_address(addr[0])
    if not is_public_address(ip):
        raise FetchError(
            f"refused: {host!r} connected to the non-public address {ip}", "url_not_allowed"
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


async def fetch_url(
    url: str, settings: UrlFetchSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> Fetched:
    current = url
    timeout = httpx.Timeout(settings.timeout_s)
    headers = {"User-Agent": settings.user_agent, "Accept": "*/*"}
    async with httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, headers=headers, transport=transport
    ) as client:
        for _hop in range(settings.max_redirects + 1):
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FetchError(
                    f"only http(s) URLs can be fetched, not {current!r}", "invalid_url"
                )
            port = parts.port or (443 if parts.scheme == "https" else 80)
            await _check_host(parts.hostname, port, settings)
            try:
                async with client.stream("GET", current) as response:
                    _check_peer(response, parts.hostname, settings)
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        current = urljoin(current, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise FetchError(f"{current} answered HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > settings.max_bytes:
                        raise FetchError(
                            f"{current} is {declared} bytes; the limit is {settings.max_bytes}",
                            "file_too_large",
                        )
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body.extend(chunk)
                        if len(body) > settings.max_bytes:
                            raise FetchError(
                                f"{current} is larger than {settings.max_bytes} bytes",
                                "file_too_large",
                            )
                    return Fetched(
                        url=url,
                        final_url=current,
                        content_type=response.headers.get("content-type"),
                        body=bytes(body),
                        filename=_filename(current, response),
                    )
            except httpx.TimeoutException:
                raise FetchError(f"timed out fetching {current}") from None
            except httpx.HTTPError as exc:
                raise FetchError(f"fetching {current} failed: {exc}") from None
    raise FetchError(f"more than {settings.max_redirects} redirects from {url}")
