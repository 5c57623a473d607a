"""Per-project quotas: requests and generated tokens per one-minute window, open streams,
stored bytes.

Windows are fixed (each starts on the minute, by the wall clock every replica shares), so
a project may spend up to twice a limit across a window boundary; that is the price of a
counter that is one row per window. Request and token counts live in the knowledge base's
database when there is one (replicas on one PostgreSQL database share them), else in this
process. Open streams are counted per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gateway.quotas.config import QuotaLimits, QuotaSettings
from kb.sql.quotas import SqlQuotaCounters

__all__ = [
    "WINDOW_S",
    "Admission",
    "Counters",
    "MemoryCounters",
    "QuotaService",
    "Refusal",
    "SharedCounters",
    "StorageMeter",
]

log = logging.getLogger("gateway.quotas")

WINDOW_S = 60

Kind = Literal["requests", "tokens", "streams", "storage"]


class Counters(Protocol):
    """Counts per (project, kind, window start)."""

    async def add(self, project: str, kind: str, window: int, amount: int) -> int: ...
    async def get(self, project: str, kind: str, window: int) -> int: ...
    async def prune(self, before: int) -> None: ...


class StorageMeter(Protocol):
    """How many bytes a project stores now."""

    async def used(self, project: str) -> int: ...


class MemoryCounters:
    """Counts in this process (a gateway without a knowledge base: the engine role)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}

    async def add(self, project: str, kind: str, window: int, amount: int) -> int:
        key = (project, kind, window)
        self._counts[key] = self._counts.get(key, 0) + amount
        return self._counts[key]

    async def get(self, project: str, kind: str, window: int) -> int:
        return self._counts.get((project, kind, window), 0)

    async def prune(self, before: int) -> None:
        for key in [k for k in self._counts if k[2] < before]:
            del self._counts[key]


class SharedCounters:
    """Counts in the knowledge base's database, shared by every replica using it."""

    def __init__(self, sql: SqlQuotaCounters) -> None:
        self.sql = sql

    async def add(self, project: str, kind: str, window: int, amount: int) -> int:
        return await asyncio.to_thread(self.sql.add, project, kind, window, amount)

    async def get(self, project: str, kind: str, window: int) -> int:
        return await asyncio.to_thread(self.sql.get, project, kind, window)

    async def prune(self, before: int) -> None:
        await asyncio.to_thread(self.sql.prune, before)


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: Kind
    message: str
    code: Literal["rate_limit_exceeded", "insufficient_quota"]
    retry_after: int | None  # seconds; None when waiting does not help (storage)


@dataclass(slots=True)
class Admission:
    """What a request learnt at the door: the rate-limit headers to send back, a refusal,
    and the stream slot it holds (given back by ``release``)."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    refusal: Refusal | None = None
    _release: Callable[[], None] | None = None

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


def _duration(seconds: float) -> str:
    """A reset time as OpenAI writes it (``12ms``, ``17s``, ``1m0s``)."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


# The routes that generate (tokens per minute, open streams).
GENERATING = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})


class QuotaService:
    """Admits requests under their project's limits and charges what they used."""

    def __init__(
        self,
        settings: QuotaSettings,
        counters: Counters,
        meter: StorageMeter | None = None,
        *,
        on_refusal: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.counters = counters
        self.meter = meter
        self.on_refusal = on_refusal
        self.clock = clock
        self.enabled = settings.enabled
        self.storage_enabled = meter is not None
        self._streams: dict[str, int] = {}
        self._pruned = 0

    def limits(self, project: str) -> QuotaLimits:
        return self.settings.limits_for(project)

    def open_streams(self, project: str) -> int:
        return self._streams.get(project, 0)

    async def start(self) -> None:
        """Say at startup when a storage quota is set but nothing measures stored bytes (a
        gateway without a knowledge base)."""
        wants = self.settings.storage_bytes or any(
            p.storage_bytes for p in self.settings.projects.values()
        )
        if wants and self.meter is None:
            log.warning("quotas.storage_bytes is set but nothing stores bytes here; not enforced")

    async def _window(self) -> tuple[int, float]:
        now = self.clock()
        window = int(now // WINDOW_S) * WINDOW_S
        if window != self._pruned:
            self._pruned = window
            with contextlib.suppress(Exception):
                await self.counters.prune(window - WINDOW_S)
        return window, window + WINDOW_S - now

    async def admit(
        self,
        project: str,
        path: str,
        *,
        method: str,
        stream: bool = False,
        store: bool = True,
        upload_bytes: int = 0,
    ) -> Admission:
        limits = self.limits(project)
        out = Admission()
        window, reset = await self._window()
        retry = max(1, math.ceil(reset))
        generating = method == "POST" and path in GENERATING
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        count = (
            await self._safely(self.counters.add(project, "requests", window, 1)) if rpm else None
        )
        if count is not None:
            out.headers += [
                (b"x-ratelimit-limit-requests", str(rpm).encode()),
                (b"x-ratelimit-remaining-requests", str(max(0, rpm - count)).encode()),
                (b"x-ratelimit-reset-requests", _duration(reset).encode()),
            ]
            if count > rpm:
                return self._refuse(
                    project,
                    out,
                    Refusal(
                        "requests",
                        f"rate limit reached for project {project!r} on requests per minute: "
                        f"limit {rpm}; try again in {retry}s",
                        "rate_limit_exceeded",
                        retry,
                    ),
                )
        used = None
        if tpm and generating:
            used = await self._safely(self.counters.get(project, "tokens", window))
        if used is not None:
            out.headers += [
                (b"x-ratelimit-limit-tokens", str(tpm).encode()),
                (b"x-ratelimit-remaining-tokens", str(max(0, tpm - used)).encode()),
                (b"x-ratelimit-reset-tokens", _duration(reset).encode()),
            ]
            if used >= tpm:
                return self._refuse(
                    project,
                    out,
                    Refusal(
                        "tokens",
                        f"rate limit reached for project {project!r} on tokens per minute: "
                        f"limit {tpm}, used {used}; try again in {retry}s",
                        "rate_limit_exceeded",
                        retry,
                    ),
                )
        if limits.storage_bytes and self.storage_enabled and self.meter is not None:
            uploading = method == "POST" and path == "/v1/files"
            storing = method == "POST" and path == "/v1/responses" and store
            if uploading or storing:
                stored = await self._safely(self.meter.used(project))
                # An upload counts its own size; a stored answer needs the project under.
                wanted = upload_bytes if uploading else 1
                if stored is not None and stored + wanted > limits.storage_bytes:
                    return self._refuse(
                        project,
                        out,
                        Refusal(
                            "storage",
                            f"project {project!r} stores {stored} bytes of its "
                            f"{limits.storage_bytes}-byte quota; delete files to make room",
                            "insufficient_quota",
                            None,
                        ),
                    )
        streams = limits.concurrent_streams
        if streams and generating and stream:
            held = self._streams.get(project, 0)
            if held >= streams:
                return self._refuse(
                    project,
                    out,
                    Refusal(
                        "streams",
                        f"project {project!r} has {held} streams open, its limit",
                        "rate_limit_exceeded",
                        1,
                    ),
                )
            self._streams[project] = held + 1
            out._release = lambda: self._close_stream(project)
        return out

    async def _safely(self, counted: Awaitable[int]) -> int | None:
        """A count, or None when the database cannot be reached: a quota that cannot be
        read lets the request through rather than fail it."""
        try:
            return await counted
        except Exception:  # noqa: BLE001 - logged; the request goes on unlimited
            log.warning("a quota count could not be read; the request is let through")
            return None

    def _close_stream(self, project: str) -> None:
        left = self._streams.get(project, 0) - 1
        if left > 0:
            self._streams[project] = left
        else:
            self._streams.pop(project, None)

    def _refuse(self, project: str, out: Admission, refusal: Refusal) -> Admission:
        out.refusal = refusal
        if self.on_refusal is not None:
            self.on_refusal(project, refusal.kind)
        return out

    async def charge_tokens(self, project: str, tokens: int) -> None:
        """Count ``tokens`` generated for ``project`` in the current window."""
        if not self.limits(project).tokens_per_minute or tokens <= 0:
            return
        window, _ = await self._window()
        try:
            await self.counters.add(project, "tokens", window, tokens)
        except Exception:  # an unreachable database must not fail the answer it counts
            log.warning("generated tokens not counted", exc_info=True)
