"""Embedding throughput through the gateway over HTTP vs a direct in-process call.

Starts real `rwkv-rag serve` processes on 127.0.0.1 (MiniLM, the offline default) and
measures texts/s for single-text requests at concurrency 1, 16 and 64, with dynamic
batching and with batching off (max_batch_size=1), and for 32-text requests; then the
same model called in-process on the same texts. Also measures what FlagEmbedding's own
``encode`` (which runs an extra probe forward per call) costs against our one forward.

    python bench/embeddings.py [--requests 512] [--out bench/results/embeddings.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = [
    "the",
    "a",
    "model",
    "search",
    "vector",
    "index",
    "query",
    "answer",
    "document",
    "chunk",
    "retrieval",
    "fast",
    "small",
    "large",
    "river",
    "city",
    "music",
    "paper",
    "market",
    "price",
    "engine",
    "token",
    "batch",
    "server",
    "memory",
    "cache",
    "network",
    "data",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "while",
    "careful",
    "readers",
    "note",
    "every",
    "detail",
    "of",
    "the",
    "story",
]


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 24))) for _ in range(n)]


def start(config: dict[str, Any], tmp: Path, port: int) -> subprocess.Popen[bytes]:
    cfg = tmp / f"bench-{port}.yaml"
    cfg.write_text(yaml.safe_dump({**config, "port": port, "host": "127.0.0.1"}))
    log = (tmp / f"bench-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(ROOT),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def run_wrk(
    base: str, texts: list[str], per_request: int, concurrency: int, tmp: Path, seconds: int
) -> float:
    """texts/s with wrk (C, one thread): a load generator light enough for a 2-core box."""
    bodies = tmp / f"bodies-{per_request}.jsonl"
    batches = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    bodies.write_text(
        "\n".join(
            json.dumps(
                {
                    "model": "minilm",
                    "input": b if per_request > 1 else b[0],
                    "encoding_format": "base64",
                }
            )
            for b in batches
        )
    )
    env = {**os.environ, "BODIES": str(bodies), "BENCH_PATH": "/v1/embeddings"}
    httpx.post(f"{base}/v1/embeddings", json={"model": "minilm", "input": batches[0]})
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "-s",
            str(ROOT / "bench/lua/bodies.lua"),
            base,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"errors under load:\n{out}")
    rps = float(next(x for x in out.splitlines() if x.startswith("Requests/sec")).split()[-1])
    return rps * per_request


async def run_http(base: str, texts: list[str], per_request: int, concurrency: int) -> float:
    batches = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        # Warm-up.
        await client.post("/v1/embeddings", json={"model": "minilm", "input": texts[:per_request]})

        async def worker() -> None:
            while not queue.empty():
                batch = queue.get_nowait()
                r = await client.post(
                    "/v1/embeddings",
                    json={
                        "model": "minilm",
                        "input": batch if per_request > 1 else batch[0],
                        "encoding_format": "base64",
                    },
                )
                r.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(texts) / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=8, help="wrk duration per point")
    ap.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto")
    ap.add_argument("--out", default=str(ROOT / "bench/results/embeddings.json"))
    args = ap.parse_args()

    texts = make_texts(args.requests)
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "httpx"
    model = {
        "id": "minilm",
        "kind": "embedding",
        "engine": "bge",
        "path": "builtin:all-minilm-l6-v2",
        "options": {"pooling": "mean"},
    }
    base_cfg = {
        "models": [model],
        "load_in_background": False,
        "torch_threads": args.threads,
        "log_level": "WARNING",
    }
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for label, batching in (
            ("dynamic batching", {"max_batch_size": 64, "max_wait_ms": 2.0}),
            ("batch size 1", {"max_batch_size": 1, "max_wait_ms": 0.0}),
        ):
            port = 18700 + len(results)
            proc = start({**base_cfg, "batching": batching}, tmp, port)
            try:
                base = f"http://127.0.0.1:{port}"
                for per_request, conc in ((1, 1), (1, 16), (1, 64), (32, 1), (32, 4)):
                    if label == "batch size 1" and per_request != 1:
                        continue
                    if client == "wrk":
                        tps = run_wrk(base, texts, per_request, conc, tmp, args.seconds)
                    else:
                        tps = asyncio.run(run_http(base, texts, per_request, conc))
                    results.append(
                        {
                            "mode": f"HTTP, {label}",
                            "texts_per_request": per_request,
                            "concurrency": conc,
                            "texts_per_s": round(tps, 1),
                        }
                    )
                    print(results[-1], flush=True)
            finally:
                proc.terminate()
                proc.wait(30)

    # Direct in-process: the same engine, the same texts, 32 per forward.
    import torch

    from engines.base import ModelInfo
    from engines.bge import BGEEmbedder
    from engines.paths import resolve_model_path

    torch.set_num_threads(args.threads)
    engine = BGEEmbedder(
        ModelInfo("minilm", "embedding", "bge"),
        resolve_model_path("builtin:all-minilm-l6-v2"),
        {"pooling": "mean"},
    )
    engine.embed(texts[:32])
    for size in (64, 32, 1):
        started = time.perf_counter()
        for i in range(0, len(texts), size):
            engine.embed(texts[i : i + size])
        tps = len(texts) / (time.perf_counter() - started)
        results.append(
            {
                "mode": "direct engine.embed",
                "texts_per_request": size,
                "concurrency": 1,
                "texts_per_s": round(tps, 1),
            }
        )
        print(results[-1], flush=True)
    probe: dict[str, float] = {}
    for size in (1, 32):
        chunks = [texts[i : i + size] for i in range(0, min(len(texts), 256), size)]
        t0 = time.perf_counter()
        for c in chunks:
            engine.embed(c)
        ours = (time.perf_counter() - t0) / len(chunks)
        t0 = time.perf_counter()
        for c in chunks:
            engine.flag_encode(c)
        theirs = (time.perf_counter() - t0) / len(chunks)
        probe[f"batch {size}: ours ms"] = round(ours * 1000, 2)
        probe[f"batch {size}: FlagEmbedding.encode ms"] = round(theirs * 1000, 2)

    def rate(mode: str, per: int, conc: int) -> float:
        return next(
            r["texts_per_s"]
            for r in results
            if r["mode"] == mode and r["texts_per_request"] == per and r["concurrency"] == conc
        )

    summary = {
        "dynamic vs batch-size-1 at c=64 (goal >= 3x)": round(
            rate("HTTP, dynamic batching", 1, 64) / rate("HTTP, batch size 1", 1, 64), 2
        ),
        "ceiling: direct batch 64 vs direct batch 1": round(
            rate("direct engine.embed", 64, 1) / rate("direct engine.embed", 1, 1), 2
        ),
        "HTTP single-text c=64 vs direct batch 64": round(
            rate("HTTP, dynamic batching", 1, 64) / rate("direct engine.embed", 64, 1), 2
        ),
        "HTTP 32-text (c=4) vs direct 32 (goal >= 0.85)": round(
            rate("HTTP, dynamic batching", 32, 4) / rate("direct engine.embed", 32, 1), 2
        ),
        "HTTP 32-text (c=1) vs direct 32": round(
            rate("HTTP, dynamic batching", 32, 1) / rate("direct engine.embed", 32, 1), 2
        ),
        **probe,
    }
    print()
    print(f"{'mode':<28}{'texts/req':>10}{'conc':>6}{'texts/s':>10}")
    for r in results:
        print(
            f"{r['mode']:<28}{r['texts_per_request']:>10}{r['concurrency']:>6}"
            f"{r['texts_per_s']:>10}"
        )
    print()
    for k, v in summary.items():
        print(f"{k}: {v}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                "threads": args.threads,
                "client": client,
                "results": results,
                "summary": summary,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
