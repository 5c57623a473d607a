"""Upstream state, routing and the circuit breaker. No I/O here: the client reports what
happened and asks where to go next."""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from engines.remote.config import RemoteOptions, UpstreamConfig, safe_url

__all__ = ["Pick", "Upstream", "UpstreamObserver", "UpstreamPool"]

# Latency buckets (seconds) kept per upstream for /metrics.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@runtime_checkable
class UpstreamObserver(Protocol):
    def affinity(self, model: str, result: str) -> None:
        """One affinity-routed request: ``hit`` (its preferred worker) or ``spill``."""
        ...


@dataclass
class Upstream:
    config: UpstreamConfig
    model: str  # the model's name at this upstream
    label: str = ""
    healthy: bool = True  # until the first check says otherwise
    checked: bool = False
    extras: bool = False
    in_flight: int = 0
    failures: int = 0  # consecutive
    ejected_until: float = 0.0
    backoff_s: float = 0.0
    last_error: str | None = None
    # Counters for /metrics.
    requests: int = 0
    errors: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0

    def __post_init__(self) -> None:
        self.label = safe_url(self.config.url)
        self.extras = bool(self.config.extras)

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def weight(self) -> float:
        return self.config.weight

    def routable(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until

    def observe(self, seconds: float, ok: bool) -> None:
        self.requests += 1
        if not ok:
            self.errors += 1
        self.latency_sum += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.latency_counts[i] += 1
                return
        self.latency_counts[-1] += 1

    def describe(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": self.label,
            "healthy": self.routable(now),
            "in_flight": self.in_flight,
            "weight": self.weight,
            "extras": self.extras,
        }
        if self.ejected_until > now:
            out["ejected_for_s"] = round(self.ejected_until - now, 1)
        if self.last_error and not self.routable(now):
            out["last_error"] = self.last_error
        return out


@dataclass(frozen=True, slots=True)
class Pick:
    upstream: Upstream
    affinity: str | None = None  # hit | spill | None (not affinity-routed)


def _hrw(key: str, up: Upstream) -> float:
    """Weighted rendezvous score: the highest-scoring upstream owns ``key``; removing one
    upstream moves only the keys it owned."""
    digest = hashlib.blake2b(f"{key}\0{up.url}".encode(), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
    return -up.weight / math.log(unit)


class UpstreamPool:
    def __init__(
        self,
        model_id: str,
        options: RemoteOptions,
        observer: UpstreamObserver | None = None,
    ) -> None:
        self.model_id = model_id
        self.options = options
        self.observer = observer
        default = options.upstream_model or model_id
        self.upstreams = [Upstream(c, c.model or default) for c in options.upstreams]
        self.affinity_hits = 0
        self.affinity_spills = 0
        self._rng = random.Random()  # noqa: S311 - spreading load, not secrets

    # -- routing ------------------------------------------------------------------------

    def candidates(
        self, exclude: Iterable[Upstream] = (), *, extras: bool = False
    ) -> list[Upstream]:
        now = time.monotonic()
        skip = {id(u) for u in exclude}
        return [
            u
            for u in self.upstreams
            if id(u) not in skip and u.routable(now) and (u.extras or not extras)
        ]

    def pick(
        self,
        key: str | None = None,
        exclude: Iterable[Upstream] = (),
        *,
        extras: bool = False,
    ) -> Pick | None:
        """Where the next attempt goes: by ``key``'s owner under bounded load, else the
        upstream with the fewest requests in flight for its weight."""
        live = self.candidates(exclude, extras=extras)
        if not live:
            return None
        if key is not None and len(live) > 1:
            ranked = sorted(live, key=lambda u: _hrw(key, u), reverse=True)
            # Bounded load: the key's owner takes it unless that would put it above
            # load_factor x the mean load (+2, so a light load never spills).
            total = sum(u.in_flight for u in live) + 1
            bound = self.options.load_factor * total / len(live) + 2
            chosen = next((u for u in ranked if u.in_flight + 1 <= bound), None)
            if chosen is ranked[0]:
                self._affinity("hit")
                return Pick(chosen, "hit")
            self._affinity("spill")
            return Pick(chosen or self._least(live), "spill")
        if key is not None:
            self._affinity("hit")
            return Pick(live[0], "hit")
        return Pick(self._least(live))

    def _least(self, live: list[Upstream]) -> Upstream:
        best = min(u.in_flight / u.weight for u in live)
        ties = [u for u in live if u.in_flight / u.weight == best]
        return ties[0] if len(ties) == 1 else self._rng.choice(ties)

    def _affinity(self, result: str) -> None:
        if result == "hit":
            self.affinity_hits += 1
        else:
            self.affinity_spills += 1
        if self.observer is not None:
            self.observer.affinity(self.model_id, result)

    # -- breaker ------------------------------------------------------------------------

    def succeeded(self, up: Upstream) -> None:
        """A request went through: the failure count and the backoff start again."""
        up.failures = 0
        up.backoff_s = 0.0

    def failed(self, up: Upstream, reason: str) -> None:
        """A request failed on ``up`` (connection, 5xx, timeout): several in a row eject it."""
        up.failures += 1
        up.last_error = reason
        if up.failures >= self.options.eject_after:
            self.eject(up, reason)

    def eject(self, up: Upstream, reason: str) -> None:
        now = time.monotonic()
        if up.ejected_until > now:
            return
        base, most = self.options.eject_base_s, self.options.eject_max_s
        up.backoff_s = min(most, up.backoff_s * 2) if up.backoff_s else base
        up.ejected_until = now + up.backoff_s
        up.healthy = False
        up.last_error = reason

    def checked(self, up: Upstream, ok: bool, reason: str | None = None) -> None:
        """A health check's outcome: a pass lets an ejected upstream back in once its
        period is over (the backoff is kept until a request succeeds, so an upstream that
        passes checks but fails requests stays out longer each time); a failure ejects.
        A pass does not clear the failures of requests: only a request's success does."""
        up.checked = True
        if not ok:
            self.eject(up, reason or "health check failed")
            return
        if not up.healthy and time.monotonic() >= up.ejected_until:
            up.healthy = True
            up.failures = 0
            up.last_error = None

    def due_for_check(self, up: Upstream) -> bool:
        """Ejected upstreams are probed only once their period is over."""
        return time.monotonic() >= up.ejected_until

    def retry_after(self) -> int:
        """Seconds until an ejected upstream is probed again (for Retry-After)."""
        now = time.monotonic()
        waits = [u.ejected_until - now for u in self.upstreams if u.ejected_until > now]
        fallback = self.options.health_interval_s
        return max(1, math.ceil(min(waits) if waits else fallback))

    @property
    def any_healthy(self) -> bool:
        return bool(self.candidates())

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [u.describe(now) for u in self.upstreams]
