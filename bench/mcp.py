"""MCP overhead: `search` as an MCP tool call over Streamable HTTP vs the same search via
the REST API (POST /v1/vector_stores/{id}/search), p50/p95 at concurrency 1 and 16, on a
real `rwkv-rag serve` process with the default MiniLM. Prints a table, writes
bench/results/mcp.json.

    python bench/mcp.py
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# This file is named like the `mcp` package: keep its directory off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from tests.conftest import start_server, stop_server  # noqa: E402

QUERIES = [
    "how do I reset the pump",
    "refund timing",
    "museum opening hours",
    "train delay compensation",
    "boiler pressure too low",
    "library loan renewals",
    "two-factor authentication",
    "api rate limit",
]


async def _measure(call: Any, n: int, concurrency: int) -> list[float]:
    lat: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            await call(QUERIES[i % len(QUERIES)])
            lat.append(time.perf_counter() - t)

    await asyncio.gather(*(one(i) for i in range(n)))
    return lat


def _stats(lat: list[float]) -> dict[str, float]:
    a = np.array(lat) * 1e3
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
    }


async def run(base: str, vs: str, n: int) -> dict[str, Any]:
    import httpx
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    out: dict[str, Any] = {}
    async with (
        httpx.AsyncClient(
            base_url=base, timeout=60, limits=httpx.Limits(max_connections=32)
        ) as rest,
        httpx2.AsyncClient(timeout=60) as h2,
        Client(streamable_http_client(f"{base}/mcp", http_client=h2)) as mcp,
    ):

        async def via_rest(q: str) -> None:
            r = await rest.post(
                f"/v1/vector_stores/{vs}/search", json={"query": q, "max_num_results": 5}
            )
            assert r.status_code == 200 and r.json()["data"]

        async def via_mcp(q: str) -> None:
            res = await mcp.call_tool("search", {"query": q, "vector_store": vs, "top_k": 5})
            assert not res.is_error and res.structured_content["hits"]

        for call in (via_rest, via_mcp):
            await _measure(call, 16, 4)  # warm-up
        for c in (1, 16):
            for name, call in (("rest", via_rest), ("mcp", via_mcp)):
                out[f"{name}_c{c}"] = _stats(await _measure(call, n, c))
                print(f"{name:<5} c={c:<3} {out[f'{name}_c{c}']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json-response", action="store_true", help="mcp.json_response: true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mcp.json"))
    args = ap.parse_args()
    import httpx

    docs = json.loads((ROOT / "bench" / "eval" / "en.json").read_text())["docs"]
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(
            {
                "data_dir": f"{tmp}/data",
                "log_json": True,
                "log_level": "WARNING",
                "mcp": {"json_response": args.json_response},
            },
            Path(tmp),
            timeout=300,
        )
        try:
            with httpx.Client(base_url=server.base_url, timeout=60) as http:
                vs = http.post("/v1/vector_stores", json={"name": "bench"}).json()["id"]
                for name, text in docs.items():
                    fid = http.post(
                        "/v1/files",
                        files={"file": (f"{name}.txt", text.encode())},
                        data={"purpose": "assistants"},
                    ).json()["id"]
                    http.post(f"/v1/vector_stores/{vs}/files", json={"file_id": fid})
                for _ in range(600):
                    counts = http.get(f"/v1/vector_stores/{vs}").json()["file_counts"]
                    if counts["in_progress"] == 0:
                        break
                    time.sleep(0.1)
            result = asyncio.run(run(server.base_url, vs, args.requests))
        finally:
            stop_server(server)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    result["mcp_json_response"] = args.json_response
    result["mcp_added_p50_ms"] = {
        f"c{c}": round(result[f"mcp_c{c}"]["p50_ms"] - result[f"rest_c{c}"]["p50_ms"], 2)
        for c in (1, 16)
    }
    print(f"MCP layer adds (p50): {result['mcp_added_p50_ms']}")
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
