"""Remote engines: what the gateway hop costs, and what a second worker buys.

Real processes on loopback: two `rwkv-rag serve --role engine` workers (tiny RWKV-7 and
the offline MiniLM) and `rwkv-rag serve` gateways whose models are `engine: remote`.

1. Added latency of the hop: /v1/embeddings p50/p95 (one short input, sequential) and chat
   time to first token (streamed), gateway -> worker vs the worker directly.
2. Aggregate chat throughput at 16 concurrent streams: a gateway over one worker vs over
   two (completion tokens per second of wall time).
3. What state-cache affinity buys: 8 six-turn conversations (4 at a time), each turn
   pasting a page of text, through a gateway over four workers (two more, chat only)
   with `affinity: prefix` vs `off`: the share of prompt tokens the workers read from
   their prefix-state cache on turns 2-6, and the time per turn.

Prints a table and writes bench/results/remote.json.

    python bench/remote.py                # about 2 minutes on 2 cores
    python bench/remote.py --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import MINILM, start_server, stop_server  # noqa: E402

OUT = ROOT / "bench" / "results" / "remote.json"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _embed_once(c: httpx.Client) -> float:
    t = time.perf_counter()
    c.post("/v1/embeddings", json={"model": "minilm", "input": "how do I reset the pump?"})
    return (time.perf_counter() - t) * 1000


def _first_token_once(c: httpx.Client) -> float:
    body = {
        "model": "rwkv7-tiny",
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
    }
    t = time.perf_counter()
    took = float("nan")
    with c.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        for line in lines:
            if '"content":"' in line and '"content":""' not in line:
                took = (time.perf_counter() - t) * 1000
                break
        for _ in lines:
            pass
    return took


def _paired(direct: str, via: str, once: Any, n: int) -> tuple[list[float], list[float]]:
    """``once`` against the worker and through the gateway, interleaved (the order flips
    every round) so both see the same machine."""
    d: list[float] = []
    g: list[float] = []
    with (
        httpx.Client(base_url=direct, timeout=60) as cd,
        httpx.Client(base_url=via, timeout=60) as cg,
    ):
        for _ in range(20):
            once(cd), once(cg)
        for i in range(n):
            if i % 2:
                d.append(once(cd))
                g.append(once(cg))
            else:
                g.append(once(cg))
                d.append(once(cd))
    return d, g


async def _throughput(base: str, streams: int, rounds: int, max_tokens: int) -> float:
    async with httpx.AsyncClient(base_url=base, timeout=300) as c:

        async def one(i: int) -> int:
            r = await c.post(
                "/v1/chat/completions",
                json={
                    "model": "rwkv7-tiny",
                    "messages": [{"role": "user", "content": f"Tell a story number {i}."}],
                    "max_tokens": max_tokens,
                    "seed": i,
                    "user": f"user-{i}",
                },
            )
            r.raise_for_status()
            return int(r.json()["usage"]["completion_tokens"])

        await asyncio.gather(*(one(i) for i in range(streams)))  # warm up
        t = time.perf_counter()
        tokens = 0
        for k in range(rounds):
            done = await asyncio.gather(*(one(k * streams + i) for i in range(streams)))
            tokens += sum(done)
        return tokens / (time.perf_counter() - t)


_MANUAL = (
    "You are the support assistant of a water utility. Answer from the manual: pumps are "
    "reset by holding the red button for ten seconds, filters are changed every three "
    "months, and leaks are reported to the night desk. "
)


async def _conversations(base: str, convs: int, turns: int, parallel: int) -> dict[str, float]:
    """Cached share of prompt tokens on turns 2+, and the median seconds per turn."""
    gate = asyncio.Semaphore(parallel)
    cached = prompt = 0
    times: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=300) as c:

        async def one(k: int) -> None:
            nonlocal cached, prompt
            async with gate:
                messages = [{"role": "system", "content": f"You are support desk {k}."}]
                for t in range(turns):
                    page = f"Page {t} of case {k}: " + _MANUAL * 3
                    messages.append({"role": "user", "content": page + "What should I do?"})
                    started = time.perf_counter()
                    r = await c.post(
                        "/v1/chat/completions",
                        json={"model": "rwkv7-tiny", "messages": messages, "max_tokens": 8},
                    )
                    r.raise_for_status()
                    body = r.json()
                    messages.append(
                        {"role": "assistant", "content": body["choices"][0]["message"]["content"]}
                    )
                    if t == 0:
                        continue
                    times.append(time.perf_counter() - started)
                    usage = body["usage"]
                    prompt += usage["prompt_tokens"]
                    cached += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)

        await asyncio.gather(*(one(k) for k in range(convs)))
    return {"cached_share": cached / max(1, prompt), "turn_p50_ms": statistics.median(times) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="sequential requests per latency row")
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--tiny", default=None, help="directory of tiny checkpoints (made if absent)")
    args = ap.parse_args()

    from engines.tiny import make_tiny_models

    tmp = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    tiny = Path(args.tiny) if args.tiny else tmp / "tiny"
    if not (tiny / "rwkv7-tiny-random.pth").exists():
        make_tiny_models(tiny)
    worker_cfg = {
        "models": [
            {
                "id": "rwkv7-tiny",
                "kind": "chat",
                "engine": "rwkv",
                "path": str(tiny / "rwkv7-tiny-random.pth"),
            },
            MINILM,
        ],
        "load_in_background": False,
        "torch_threads": 1,
        "log_level": "WARNING",
    }
    workers = []
    gateways = []
    try:
        for i in range(2):
            (tmp / f"w{i}").mkdir()
            workers.append(start_server(worker_cfg, tmp / f"w{i}", args=("--role", "engine")))
        w_urls = [f"{w.base_url}/v1" for w in workers]
        chat_only = {**worker_cfg, "models": worker_cfg["models"][:1]}
        for i in range(2, 4):
            (tmp / f"w{i}").mkdir()
            workers.append(start_server(chat_only, tmp / f"w{i}", args=("--role", "engine")))
        all_urls = [f"{w.base_url}/v1" for w in workers]
        for name, ups, affinity in (
            ("one", w_urls[:1], "prefix"),
            ("two", w_urls, "prefix"),
            ("four", all_urls, "prefix"),
            ("four-off", all_urls, "off"),
        ):
            (tmp / f"g-{name}").mkdir()
            options = {"upstreams": ups, "affinity": affinity}
            kinds = [("rwkv7-tiny", "chat"), ("minilm", "embedding")]
            models = [
                {"id": mid, "kind": kind, "engine": "remote", "options": options}
                for mid, kind in (kinds if len(ups) <= 2 else kinds[:1])
            ]
            cfg = {"models": models, "load_in_background": False, "log_level": "WARNING"}
            gateways.append(start_server(cfg, tmp / f"g-{name}"))
        direct, via = workers[0].base_url, gateways[0].base_url
        rows: dict[str, Any] = {}
        for label, once in (("embeddings", _embed_once), ("chat first token", _first_token_once)):
            n = args.requests
            d, g = _paired(direct, via, once, n)
            rows[label] = {
                "direct_p50_ms": statistics.median(d),
                "direct_p95_ms": _pct(d, 0.95),
                "gateway_p50_ms": statistics.median(g),
                "gateway_p95_ms": _pct(g, 0.95),
                "added_p50_ms": statistics.median(g) - statistics.median(d),
                "added_p95_ms": _pct(g, 0.95) - _pct(d, 0.95),
                "requests": n,
            }
        tps = {
            name: asyncio.run(_throughput(gw.base_url, args.streams, args.rounds, args.max_tokens))
            for name, gw in (("one worker", gateways[0]), ("two workers", gateways[1]))
        }
        affinity = {
            name: asyncio.run(_conversations(gw.base_url, 8, 6, 4))
            for name, gw in (("prefix", gateways[2]), ("off", gateways[3]))
        }
    finally:
        for s in [*gateways, *workers]:
            stop_server(s)

    print(
        f"\n{'hop':<18}{'direct p50':>12}{'p95':>9}{'gateway p50':>13}{'p95':>9}{'added p50':>11}{'p95':>9}"
    )
    for label, r in rows.items():
        print(
            f"{label:<18}{r['direct_p50_ms']:>10.2f}ms{r['direct_p95_ms']:>7.2f}ms"
            f"{r['gateway_p50_ms']:>11.2f}ms{r['gateway_p95_ms']:>7.2f}ms"
            f"{r['added_p50_ms']:>9.2f}ms{r['added_p95_ms']:>7.2f}ms"
        )
    print(f"\nchat throughput, {args.streams} concurrent requests x {args.max_tokens} tokens")
    for name, v in tps.items():
        print(f"  gateway over {name:<12} {v:8.1f} tok/s")
    print("\nconversations over four workers (8 x 6 turns), turns 2-6")
    for name, a in affinity.items():
        print(
            f"  affinity {name:<7} cached prompt tokens {a['cached_share']:6.1%}"
            f"   per turn p50 {a['turn_p50_ms']:7.1f} ms"
        )
    result = {
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": __import__("os").cpu_count(),
        "latency": rows,
        "throughput_tok_s": tps,
        "affinity": affinity,
        "streams": args.streams,
        "max_tokens": args.max_tokens,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
