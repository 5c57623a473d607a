"""Fair sharing between projects: P projects each keep S streams open (each reopened as it
ends) for a fixed time against one real `rwkv-rag serve` (the builtin tiny RWKV-7 on the
CPU by default, 8 batch slots), every project with its own key; the scheduler takes turns
between projects.

Per project: answers, generated tokens, the time from the start to its last stream's end,
generated tokens/s over that time, and the mean time to the first generated text. The fairness ratio is
the largest per-project tokens/s over the smallest (1.0: perfectly even). Prints a table
and writes JSON (``--out``, default ``bench/results/tenancy-cpu.json``).

    python bench/tenancy.py                         # 4 projects x 8 streams, CPU
    python bench/tenancy.py --projects 4 --streams 8 --max-tokens 96
    python bench/tenancy.py --part search --chunks 100000

``--part search``: the cost of scoping on search. One store of N chunks (synthetic 384-d
vectors, generated text) in the embedded backend, searched through the knowledge base's
façade as an admin who sees every project (no project predicate: the lookup search made
before projects existed) and as a member of the store's project (the store looked up
within its project), interleaved query by query; p50/p95 of each and the overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The repository root, not bench/ (whose mcp.py would shadow the mcp package).
sys.path[0] = str(ROOT)

MODEL = "rwkv7-tiny-random"


def _key(project: int) -> str:
    return f"sk-bench-project-{project:02d}"


async def _stream(client: Any, project: int, i: int, max_tokens: int) -> tuple[int, float, float]:
    """(generated tokens, seconds to first content, seconds to the end) of one stream."""
    body = {
        "model": MODEL,
        "prompt": f"Project {project}, story {i}: once upon a time",
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first, tokens = 0.0, 0
    headers = {"Authorization": f"Bearer {_key(project)}"}
    async with client.stream("POST", "/v1/completions", json=body, headers=headers) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            text = "".join(c.get("text") or "" for c in chunk.get("choices") or [])
            if text and not first:
                first = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    return tokens, first, time.perf_counter() - started


async def _worker(
    client: Any, project: int, slot: int, max_tokens: int, deadline: float
) -> list[tuple[int, float, float]]:
    """One of a project's streams, reopened as soon as it ends until the deadline (a
    random model stops at random lengths: a closed loop keeps the demand even)."""
    done, i = [], 0
    while time.perf_counter() < deadline:
        done.append(await _stream(client, project, slot * 1000 + i, max_tokens))
        i += 1
    return done


async def _run(
    base_url: str, projects: int, streams: int, max_tokens: int, duration: float
) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=projects * streams + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        # Warm-up: one short answer, so no project pays for the first step's set-up.
        await _stream(client, 0, -1, 4)
        started = time.perf_counter()
        deadline = started + duration
        jobs = {
            (p, i): asyncio.create_task(_worker(client, p, i, max_tokens, deadline))
            for i in range(streams)
            for p in range(projects)
        }
        ended: dict[int, float] = {}
        for (p, _), job in jobs.items():
            job.add_done_callback(
                lambda _, p=p: ended.__setitem__(p, time.perf_counter() - started)
            )
        await asyncio.gather(*jobs.values())
        wall = time.perf_counter() - started
    rows = []
    for p in range(projects):
        mine = [r for i in range(streams) for r in jobs[(p, i)].result()]
        tokens = sum(t for t, _, _ in mine)
        rows.append(
            {
                "project": f"project-{p}",
                "streams_open": streams,
                "answers": len(mine),
                "generated_tokens": tokens,
                "seconds": round(ended[p], 3),
                "tok_s": round(tokens / ended[p], 2),
                "mean_ttft_s": round(sum(f for _, f, _ in mine) / len(mine), 3),
            }
        )
    rates = [r["tok_s"] for r in rows]
    return {
        "projects": rows,
        "wall_s": round(wall, 3),
        "total_tok_s": round(sum(r["generated_tokens"] for r in rows) / wall, 2),
        "fairness_max_over_min": round(max(rates) / min(rates), 3),
    }


class _HashedEmbeddings:
    """Deterministic unit vectors from a text's hash: search cost without a model."""

    dims = 384

    async def embed(self, model: str, texts: list[str]) -> tuple[Any, list[int]]:
        import numpy as np

        out = np.stack(
            [np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.dims) for t in texts]
        ).astype("float32")
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out, [len(t.split()) for t in texts]

    def tokenizer(self, model: str) -> Any:
        from engines.fake import FakeTokenizer

        return FakeTokenizer(512)

    def dimensions(self, model: str) -> int:
        return self.dims

    def max_tokens(self, model: str) -> int | None:
        return None


async def _scoped_search(n: int, n_queries: int) -> dict[str, Any]:
    import numpy as np

    from bench.kb import corpus_texts, pct
    from core.tenancy import LOCAL_ADMIN, Principal
    from kb.retrieval import SearchQuery
    from kb.service import KnowledgeBase
    from kb.types import ChunkRecord

    member = Principal(project="team-a", role="member")
    texts = corpus_texts(n)
    # Topic clusters of unit vectors (the cost, not the quality, is measured here).
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((max(50, n // 10), 384)).astype("float32")
    vecs = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, 384)).astype(
        "float32"
    )
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(prefix="bench-scoping-") as tmp:
        kb = KnowledgeBase.open_sqlite(Path(tmp), _HashedEmbeddings())  # type: ignore[arg-type]
        # Other projects' stores beside it, as on a shared server.
        for p in range(8):
            await kb.create_store("big", "m", who=Principal(project=f"other-{p}", role="member"))
        view = await kb.create_store("big", "m", who=member)
        backend: Any = kb.backend
        for start in range(0, n, 5000):
            recs = [
                ChunkRecord(f"f{i // 50}", i % 50, texts[i], 40)
                for i in range(start, min(n, start + 5000))
            ]
            backend.insert_chunks(view.id, recs, vecs[start : start + len(recs)])
        backend.indexes.rebuild(view.id)
        rng = np.random.default_rng(8)
        queries = [" ".join(texts[i].split()[:8]) for i in rng.choice(n, n_queries, replace=False)]
        lat: dict[str, list[float]] = {"admin": [], "member": []}
        for i, q in enumerate(queries):
            order = [("admin", LOCAL_ADMIN), ("member", member)]
            for name, who in order if i % 2 else order[::-1]:
                t = time.perf_counter()
                await kb.search(view.id, SearchQuery((q,), k=10, rerank=False), who=who)
                lat[name].append(time.perf_counter() - t)
        kb.close()
    a50, m50 = pct(lat["admin"], 50), pct(lat["member"], 50)
    return {
        "chunks": n,
        "queries": n_queries,
        "admin_p50_ms": round(a50, 2),
        "admin_p95_ms": round(pct(lat["admin"], 95), 2),
        "member_p50_ms": round(m50, 2),
        "member_p95_ms": round(pct(lat["member"], 95), 2),
        "scoping_overhead_p50": round(m50 / a50 - 1, 4),
    }


def _search_part(args: argparse.Namespace) -> None:
    res = asyncio.run(_scoped_search(args.chunks, args.queries))
    res["machine"] = f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}"
    print(f"{'caller':<10}{'p50 ms':>9}{'p95 ms':>9}")
    print(f"{'admin':<10}{res['admin_p50_ms']:>9}{res['admin_p95_ms']:>9}")
    print(f"{'member':<10}{res['member_p50_ms']:>9}{res['member_p95_ms']:>9}")
    print(
        f"scoping overhead at p50: {res['scoping_overhead_p50'] * 100:+.1f}% ({res['chunks']} chunks)"
    )
    out = Path(args.out or ROOT / "bench/results/tenancy-search.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["streams", "search"], default="streams")
    ap.add_argument("--chunks", type=int, default=100_000, help="store size (--part search)")
    ap.add_argument("--queries", type=int, default=200, help="queries (--part search)")
    ap.add_argument("--projects", type=int, default=4)
    ap.add_argument("--streams", type=int, default=8, help="streams each project opens")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument(
        "--duration", type=float, default=40.0, help="seconds each project keeps its streams open"
    )
    ap.add_argument("--max-batch", type=int, default=8, help="the engine's max_batch_size")
    ap.add_argument("--threads", type=int, default=2, help="torch_threads of the server")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.part == "search":
        _search_part(args)
        return

    from tests.conftest import start_server, stop_server

    config = {
        "models": [
            {
                "id": MODEL,
                "kind": "chat",
                "engine": "rwkv",
                "path": f"builtin:{MODEL}",
                "options": {"strategy": "cpu fp32", "max_batch_size": args.max_batch},
            }
        ],
        "auth": {
            "keys": [{"key": _key(p), "project": f"project-{p}"} for p in range(args.projects)]
        },
        "torch_threads": args.threads,
        "log_level": "WARNING",
        "log_json": False,
    }
    with tempfile.TemporaryDirectory(prefix="bench-tenancy-") as tmp:
        server = start_server(config, Path(tmp), timeout=600)
        try:
            result = asyncio.run(
                _run(server.base_url, args.projects, args.streams, args.max_tokens, args.duration)
            )
        finally:
            stop_server(server)
    result["setup"] = {
        "model": f"builtin:{MODEL}",
        "strategy": "cpu fp32",
        "max_batch_size": args.max_batch,
        "max_tokens": args.max_tokens,
        "duration_s": args.duration,
        "torch_threads": args.threads,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
    }
    print(
        f"{'project':<12}{'answers':>8}{'tokens':>9}{'seconds':>10}{'tok/s':>10}{'mean TTFT s':>13}"
    )
    for r in result["projects"]:
        print(
            f"{r['project']:<12}{r['answers']:>8}{r['generated_tokens']:>9}{r['seconds']:>10.2f}"
            f"{r['tok_s']:>10.1f}{r['mean_ttft_s']:>13.3f}"
        )
    print(f"total {result['total_tok_s']:.1f} tok/s over {result['wall_s']:.2f} s")
    print(f"fairness (max/min per-project tok/s): {result['fairness_max_over_min']:.3f}")
    out = Path(args.out or ROOT / "bench/results/tenancy-cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
