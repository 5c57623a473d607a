"""Prometheus metrics, one registry per app (no module-level singletons)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from core.errors import APIError
from kb.service import KnowledgeBase

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "rwkv_rag_requests",
            "HTTP requests by route, method, status and project (empty: no key was accepted).",
            ["route", "method", "status", "project"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rwkv_rag_request_duration_seconds",
            "HTTP request latency by route.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "rwkv_rag_batch_size",
            "Items per engine batch.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "rwkv_rag_batch_duration_seconds",
            "Engine time per batch.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_failures = Counter(
            "rwkv_rag_batch_failures",
            "Batches that raised.",
            ["model"],
            registry=self.registry,
        )
        self.queue = Gauge(
            "rwkv_rag_queue_depth",
            "Items waiting for an engine batch.",
            ["model"],
            registry=self.registry,
        )
        self.items = Counter(
            "rwkv_rag_engine_items",
            "Items (texts, pairs) processed by engine.",
            ["model"],
            registry=self.registry,
        )
        self.quota_refusals = Counter(
            "rwkv_rag_quota_refusals",
            "Requests refused (429) for a project's quota, by project and kind (requests, "
            "tokens, streams, storage).",
            ["project", "kind"],
            registry=self.registry,
        )
        self.affinity_routes = Counter(
            "rwkv_rag_remote_affinity",
            "Affinity-routed chat requests of remote models: `hit` went to the conversation's "
            "worker, `spill` elsewhere (bounded load).",
            ["model", "result"],
            registry=self.registry,
        )

    # BatchObserver
    def batch_done(self, name: str, size: int, seconds: float, ok: bool) -> None:
        self.batch_size.labels(name).observe(size)
        self.batch_seconds.labels(name).observe(seconds)
        if ok:
            self.items.labels(name).inc(size)
        else:
            self.batch_failures.labels(name).inc()

    def queue_depth(self, name: str, depth: int) -> None:
        self.queue.labels(name).set(depth)

    def quota_refused(self, project: str, kind: str) -> None:
        self.quota_refusals.labels(project, kind).inc()

    # UpstreamObserver (remote models)
    def affinity(self, model: str, result: str) -> None:
        self.affinity_routes.labels(model, result).inc()

    def observe_request(
        self, route: str, method: str, status: int, seconds: float, project: str = ""
    ) -> None:
        self.requests.labels(route, method, str(status), project).inc()
        self.latency.labels(route, method).observe(seconds)

    def attach_engines(self, registry: Any) -> None:
        """Expose chat engines' live numbers (read at scrape time)."""
        self.registry.register(_ChatEngineCollector(registry))
        self.registry.register(_UpstreamCollector(registry))

    def attach_knowledge(self, kb: KnowledgeBase) -> None:
        self.registry.register(_KnowledgeCollector(kb))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ChatEngineCollector(Collector):
    def __init__(self, engines: Any) -> None:
        self.engines = engines

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "rwkv_rag_chat_active_sequences", "Sequences prefilling or decoding.", labels=["model"]
        )
        queued = GaugeMetricFamily(
            "rwkv_rag_chat_queued_requests", "Requests waiting for a batch slot.", labels=["model"]
        )
        cache_bytes = GaugeMetricFamily(
            "rwkv_rag_prefix_cache_bytes", "Bytes held by the prefix-state cache.", labels=["model"]
        )
        hits = CounterMetricFamily(
            "rwkv_rag_prefix_cache_hits",
            "Prompts that reused a cached prefix state.",
            labels=["model"],
        )
        misses = CounterMetricFamily(
            "rwkv_rag_prefix_cache_misses", "Prompts with no cached prefix.", labels=["model"]
        )
        hit_tokens = CounterMetricFamily(
            "rwkv_rag_prefix_cache_hit_tokens",
            "Prompt tokens not prefilled thanks to the cache.",
            labels=["model"],
        )
        tier_hits = CounterMetricFamily(
            "rwkv_rag_state_tier_hits",
            "Prompts whose prefix state came from this tier (device, host, disk).",
            labels=["model", "tier"],
        )
        tier_bytes = GaugeMetricFamily(
            "rwkv_rag_state_tier_bytes", "Bytes of states held per tier.", labels=["model", "tier"]
        )
        disk = CounterMetricFamily(
            "rwkv_rag_state_disk_events",
            "Disk-tier events: saves, refused (other model/weights/State, corrupt, torn), "
            "evicted, dropped (write queue full).",
            labels=["model", "event"],
        )
        disk_seconds = CounterMetricFamily(
            "rwkv_rag_state_disk_seconds",
            "Time spent loading and saving disk-tier states.",
            labels=["model", "op"],
        )
        tokens = CounterMetricFamily(
            "rwkv_rag_chat_tokens", "Tokens by phase.", labels=["model", "phase"]
        )
        stalled = CounterMetricFamily(
            "rwkv_rag_chat_stalled_readers",
            "Streams cancelled because their reader stopped reading.",
            labels=["model"],
        )
        deferred = CounterMetricFamily(
            "rwkv_rag_chat_fairness_deferrals",
            "Admissions deferred because a key held its share of the batch.",
            labels=["model"],
        )
        for model in list(self.engines.models.values()):
            engine = model.engine
            if model.kind != "chat" or engine is None or not hasattr(engine, "cache"):
                continue
            mid = model.info.id
            active.add_metric([mid], engine.active)
            queued.add_metric([mid], engine.queued)
            cache_bytes.add_metric([mid], engine.cache.bytes)
            hits.add_metric([mid], engine.cache.hits)
            misses.add_metric([mid], engine.cache.misses)
            hit_tokens.add_metric([mid], engine.cache.hit_tokens)
            _add_tiers(engine.cache, mid, tier_hits, tier_bytes, disk, disk_seconds)
            tokens.add_metric([mid, "prompt"], engine.stats["prompt_tokens"])
            tokens.add_metric([mid, "prefill"], engine.stats["prefill_tokens"])
            tokens.add_metric([mid, "generated"], engine.stats["generated_tokens"])
            stalled.add_metric([mid], engine.stats.get("stalled_readers", 0))
            deferred.add_metric([mid], engine.stats.get("deferred_for_fairness", 0))
        yield from (
            active,
            queued,
            cache_bytes,
            hits,
            misses,
            hit_tokens,
            tier_hits,
            tier_bytes,
            disk,
            disk_seconds,
            tokens,
            stalled,
            deferred,
        )


class _UpstreamCollector(Collector):
    """Per-upstream numbers of remote models, read from their pools at scrape time."""

    def __init__(self, engines: Any) -> None:
        self.engines = engines

    def collect(self) -> Iterator[Metric]:
        from engines.remote.pool import BUCKETS

        labels = ["model", "upstream"]
        requests = CounterMetricFamily(
            "rwkv_rag_upstream_requests", "Requests sent to an upstream.", labels=labels
        )
        errors = CounterMetricFamily(
            "rwkv_rag_upstream_errors",
            "Upstream requests that failed (connection, timeout, 5xx).",
            labels=labels,
        )
        in_flight = GaugeMetricFamily(
            "rwkv_rag_upstream_in_flight", "Requests in flight at an upstream.", labels=labels
        )
        healthy = GaugeMetricFamily(
            "rwkv_rag_upstream_healthy", "1 when the upstream takes requests.", labels=labels
        )
        latency = HistogramMetricFamily(
            "rwkv_rag_upstream_latency_seconds",
            "Time until an upstream's answer (a stream: until its end).",
            labels=labels,
        )
        rate = GaugeMetricFamily(
            "rwkv_rag_remote_affinity_hit_rate",
            "Share of affinity-routed chat requests that went to their conversation's worker.",
            labels=["model"],
        )
        for m in self.engines.models.values():
            pool = m.pool
            if pool is None:
                continue
            for up in pool.upstreams:
                key = [m.info.id, up.label]
                requests.add_metric(key, up.requests)
                errors.add_metric(key, up.errors)
                in_flight.add_metric(key, up.in_flight)
                healthy.add_metric(key, 1 if up.routable(time.monotonic()) else 0)
                buckets, running = [], 0
                for bound, n in zip((*BUCKETS, float("inf")), up.latency_counts, strict=True):
                    running += n
                    buckets.append((str(bound) if bound != float("inf") else "+Inf", running))
                latency.add_metric(key, buckets, up.latency_sum)
            routed = pool.affinity_hits + pool.affinity_spills
            if routed:
                rate.add_metric([m.info.id], pool.affinity_hits / routed)
        yield from (requests, errors, in_flight, healthy, latency, rate)


class _KnowledgeCollector(Collector):
    """Knowledge-base gauges, read from the backend at scrape time."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb

    def collect(self) -> Iterator[Metric]:
        chunks = GaugeMetricFamily(
            "rwkv_rag_kb_chunks", "Chunks stored per vector store.", labels=["vector_store"]
        )
        files = GaugeMetricFamily(
            "rwkv_rag_kb_files",
            "Vector store files by ingestion status.",
            labels=["vector_store", "status"],
        )
        queue = GaugeMetricFamily("rwkv_rag_kb_ingest_queue", "Files waiting for or in ingestion.")
        running = GaugeMetricFamily("rwkv_rag_kb_ingesting", "Files this process is ingesting now.")
        ann = GaugeMetricFamily(
            "rwkv_rag_kb_index_approximate",
            "1 when the store's loaded index is approximate (HNSW/IVF), 0 when exact.",
            labels=["vector_store"],
        )
        try:
            snap = self.kb.snapshot()
        except (APIError, OSError, RuntimeError, ValueError):  # a closed or unreachable store
            snap = None
        if snap is not None:
            for col, stats, kind in snap.stores:
                chunks.add_metric([col.id], stats.chunk_count)
                c = stats.file_counts
                for status, n in (
                    ("in_progress", c.in_progress),
                    ("completed", c.completed),
                    ("failed", c.failed),
                    ("cancelled", c.cancelled),
                ):
                    files.add_metric([col.id, status], n)
                if kind is not None:
                    ann.add_metric([col.id], 0 if kind == "flat" else 1)
            queue.add_metric([], snap.queued)
            running.add_metric([], snap.ingesting)
        yield from (chunks, files, queue, running, ann)


def _add_tiers(
    cache: Any,
    mid: str,
    hits: CounterMetricFamily,
    size: GaugeMetricFamily,
    disk: CounterMetricFamily,
    seconds: CounterMetricFamily,
) -> None:
    """The state tiers' counters, where the engine keeps states in tiers."""
    if not hasattr(cache, "tier_hits"):
        return
    for tier, n in cache.tier_hits.items():
        hits.add_metric([mid, tier], n)
    for tier, n in cache.tier_bytes().items():
        size.add_metric([mid, tier], n)
    st = getattr(cache.disk, "stats", None)
    if st is None:
        return
    for event in ("saves", "refused", "evicted", "dropped"):
        disk.add_metric([mid, event], getattr(st, event))
    seconds.add_metric([mid, "load"], st.load_seconds)
    seconds.add_metric([mid, "save"], st.save_seconds)
