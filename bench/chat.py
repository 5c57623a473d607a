"""RWKV chat benchmark: the engine against the rwkv package's own loop, in one run on the
same (generated, random) weights.

Prints and writes (``bench/results/chat-<device>.json``):
- ``decode_tok_s``: aggregate decode tokens/s at S streams x 1 token per step;
- ``prefill_tok_s``: prompt tokens/s for 1 and 8 concurrent 2,048-token prompts;
- ``ttft_2k_ms``: time to first token of a 2,000-token prompt, uncached and cached;
- ``package_tok_s``: the package's ``PIPELINE.generate`` (one stream);
- ``http_ratio``: aggregate tok/s over HTTP (a real ``rwkv-rag serve``) / in process, at 1
  stream and at the largest stream count;
- ``constrained`` (``--constrained``): tok/s with json_schema-constrained rows vs plain.

With ``--peer rwkvserve --peer-venv PATH`` it measures only the engine's server against
that peer on the same weights (``bench/peer.py``), interleaved, at ``--peer-streams``,
and writes the ratios (``bench/results/chat-peer-<device>.json``).

    python bench/chat.py                                   # CPU, small shape
    python bench/chat.py --device cuda --layers 24 --embd 2048 --streams 1,16,64,256
    python bench/chat.py --layers 8 --embd 768 --threads 2 --peer rwkvserve \
        --peer-venv /tmp/peer-venv
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import InProcess, prompt_tokens, sync  # noqa: E402 - after the path

PROMPT = "The history of the river city begins with a small market where traders met"


def package_tok_s(path: Path, strategy: str, tokens: int) -> float:
    """The package's own PIPELINE.generate loop on the same checkpoint."""
    from rwkv.utils import PIPELINE, PIPELINE_ARGS

    from engines.rwkv.model import load_rwkv

    lm = load_rwkv(path, strategy)
    pipeline = PIPELINE(lm.model, "rwkv_vocab_v20230424")
    args = PIPELINE_ARGS(temperature=1.0, top_p=0.85)
    pipeline.generate(PROMPT, token_count=8, args=args)  # warm-up (JIT)
    sync(strategy.split()[0])
    started = time.perf_counter()
    pipeline.generate(PROMPT, token_count=tokens, args=args)
    sync(strategy.split()[0])
    return tokens / (time.perf_counter() - started)


def engine_options(args: argparse.Namespace, max_batch: int) -> dict[str, Any]:
    return {
        "strategy": f"{args.device} {args.precision}",
        "max_batch_size": max_batch,
        "max_queued": 4096,
        "max_prefill_batch": 8,
        "max_prefill_chunk": args.prefill_chunk,
        "step_token_budget": args.token_budget,
        "context_length": 8192,
        "prefix_cache_bytes": 4 * 2**30,
        "cuda_graphs": not args.no_graphs,
        "linear_kernel": args.linear_kernel,
    }


class OverHTTP:
    """A real `rwkv-rag serve` process, streamed /v1/completions with token-id prompts."""

    def __init__(
        self,
        path: Path,
        options: dict[str, Any],
        threads: int,
        tmp: Path,
        port: int = 18900,
        start_timeout: float = 900.0,
    ) -> None:
        import httpx
        import yaml

        cfg = tmp / "chat-bench.yaml"
        model = {"id": "bench", "kind": "chat", "engine": "rwkv", "path": str(path)}
        cfg.write_text(
            yaml.safe_dump(
                {
                    "models": [{**model, "options": options}],
                    "chat": {"max_tokens_limit": 8192, "max_n": 8},
                    "load_in_background": False,
                    "torch_threads": threads,
                    "log_level": "WARNING",
                    "port": port,
                    "host": "127.0.0.1",
                    "mcp": {"enabled": False},
                }
            )
        )
        self.log = tmp / "server.log"
        with self.log.open("wb") as log_file:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # the server died: no point waiting
                raise RuntimeError(
                    f"the server exited with {self.proc.returncode} before it was healthy:\n"
                    + self.log.read_text()[-3000:]
                )
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            self.proc.kill()
            raise RuntimeError(
                f"the server was not healthy after {start_timeout:.0f} s:\n"
                + self.log.read_text()[-3000:]
            )
        self.client = httpx.AsyncClient(
            base_url=base, timeout=900, limits=httpx.Limits(max_connections=1024)
        )

    async def run(
        self,
        tokens: list[int],
        max_tokens: int,
        bounds: list[int] | None = None,
        constraint: Any = None,
    ) -> tuple[float, float, int]:
        body = {
            "model": "bench",
            "prompt": tokens,
            "max_tokens": max_tokens,
            "top_p": 0.85,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        first, usage = 0.0, 0
        async with self.client.stream("POST", "/v1/completions", json=body) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]["completion_tokens"]
                elif not first and chunk["choices"]:
                    first = time.perf_counter() - started
        return first, time.perf_counter() - started, usage

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def decode_rates(client: Any, streams: list[int], tokens: int) -> dict[int, float]:
    out = {}
    for s in streams:
        started = time.perf_counter()
        res = await asyncio.gather(*(client.run(prompt_tokens(12, i), tokens) for i in range(s)))
        out[s] = sum(r[2] for r in res) / (time.perf_counter() - started)
        print(f"decode {s:>4} streams: {out[s]:10.1f} tok/s", flush=True)
    return out


async def prefill_rates(client: Any, n_tokens: int) -> dict[str, float]:
    out = {}
    for count in (1, 8):
        started = time.perf_counter()
        await asyncio.gather(
            *(client.run(prompt_tokens(n_tokens, 1000 + 17 * count + i), 1) for i in range(count))
        )
        out[f"{count}x{n_tokens}"] = count * n_tokens / (time.perf_counter() - started)
        print(f"prefill {count}x{n_tokens}: {out[f'{count}x{n_tokens}']:10.1f} tok/s", flush=True)
    return out


async def ttft(client: Any) -> dict[str, float]:
    system = prompt_tokens(1990, 424242)
    uncached, _, _ = await client.run([*system, *prompt_tokens(10, 1)], 1, [len(system)])
    cached, _, _ = await client.run([*system, *prompt_tokens(10, 2)], 1, [len(system)])
    print(f"TTFT 2k prompt: uncached {uncached * 1e3:.1f} ms, cached {cached * 1e3:.1f} ms")
    return {"uncached": uncached * 1e3, "cached": cached * 1e3}


async def measure(
    args: argparse.Namespace, path: Path, tmp: Path, out: dict[str, Any], save: Any
) -> None:
    """Fills ``out`` part by part, calling ``save()`` after each (a timeout keeps them)."""
    streams = [int(s) for s in args.streams.split(",")]
    options = engine_options(args, max(streams))
    local = InProcess(path, options)
    try:
        await local.run(prompt_tokens(12, 0), 8)
        out["decode_tok_s"] = await decode_rates(local, streams, args.tokens)
        save()
        out["prefill_tok_s"] = await prefill_rates(local, args.prefill_tokens)
        save()
        out["ttft_2k_ms"] = await ttft(local)
        out["paths"] = {
            "decode": local.engine.decode_path,
            "prefill": local.engine.prefill_path,
            "prefill_fallback": local.engine.info.extra.get("prefill_fallback"),
        }
        save()
        if args.constrained:
            from bench.constrained import constrained_rates

            out["constrained"] = await constrained_rates(local, [1, 8], args.tokens)
            save()
    finally:
        local.close()
    if not args.no_http:
        remote = OverHTTP(path, options, args.threads, tmp, args.port, args.server_start_timeout)
        try:
            await remote.run(prompt_tokens(12, 0), 8)
            ends = sorted({streams[0], streams[-1]})
            over = await decode_rates(remote, ends, args.tokens)
            out["http_tok_s"] = over
            out["http_ratio"] = {s: over[s] / out["decode_tok_s"][s] for s in ends}
            save()
        finally:
            remote.close()


def against_peer(args: argparse.Namespace, path: Path, tmp: Path) -> dict[str, Any]:
    """Both servers up at once (one idles while the other is measured), rounds alternating."""
    from bench.peer import PeerServer, compare, peer_model_dir

    streams = [int(s) for s in args.peer_streams.split(",")]
    options = engine_options(args, max(streams))
    peer = PeerServer(
        Path(args.peer_venv),
        peer_model_dir(path, tmp / "peer-model"),
        max(streams),
        args.threads,
        args.peer_port,
        tmp / "peer.log",
    )
    try:
        ours = OverHTTP(path, options, args.threads, tmp, args.port, args.server_start_timeout)
        try:
            peer.wait_healthy(args.server_start_timeout)
            base = f"http://127.0.0.1:{args.port}"
            peer_base = f"http://127.0.0.1:{args.peer_port}"
            ratios = asyncio.run(
                compare(base, peer_base, streams, args.peer_prompt, args.tokens, args.peer_rounds)
            )
        finally:
            ours.close()
    finally:
        peer.close()
    return {
        "peer": args.peer,
        "prompt_tokens": args.peer_prompt,
        "linear_kernel": args.linear_kernel,
        "streams": ratios,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--version", default="x070", choices=["x060", "x070"])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--embd", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=64, help="decode tokens per stream")
    ap.add_argument("--streams", default="1,8,16")
    ap.add_argument("--prefill-tokens", type=int, default=2048)
    ap.add_argument("--prefill-chunk", type=int, default=256)
    ap.add_argument("--token-budget", type=int, default=2048)
    ap.add_argument("--package-tokens", type=int, default=64)
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--port", type=int, default=18900, help="the HTTP part's server port")
    ap.add_argument(
        "--server-start-timeout", type=float, default=900.0, help="seconds to wait for /health"
    )
    ap.add_argument("--no-graphs", action="store_true")
    ap.add_argument("--linear-kernel", default="auto", choices=["auto", "dense", "onednn", "int8"])
    ap.add_argument("--constrained", action="store_true")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--peer", choices=["rwkvserve"], default=None)
    ap.add_argument("--peer-venv", default=None, help="a virtual environment with the peer")
    ap.add_argument("--peer-port", type=int, default=18901)
    ap.add_argument("--peer-streams", default="1,4,8,16")
    ap.add_argument("--peer-prompt", type=int, default=201, help="prompt tokens per stream")
    ap.add_argument("--peer-rounds", type=int, default=3)
    args = ap.parse_args()
    if args.peer and not args.peer_venv:
        ap.error("--peer needs --peer-venv")
    args.precision = args.precision or ("fp16" if args.device == "cuda" else "fp32")

    import torch

    torch.set_num_threads(args.threads if args.device == "cpu" else max(1, os.cpu_count() or 1))
    from engines.rwkv_tiny import write_rwkv_checkpoint

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        model_dir = Path(args.model_dir) if args.model_dir else tmp
        path = model_dir / f"bench-{args.version}-{args.layers}x{args.embd}.pth"
        if not path.exists():
            print(f"writing {path} ...", flush=True)
            write_rwkv_checkpoint(path, args.version, n_layer=args.layers, n_embd=args.embd)
        strategy = f"{args.device} {args.precision}"
        result: dict[str, Any] = {
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "shape": f"{args.version} {args.layers} x {args.embd}",
            "strategy": strategy,
            "threads": args.threads,
        }
        if args.peer:
            result.update(against_peer(args, path, tmp))
            out = Path(args.out or ROOT / f"bench/results/chat-peer-{args.device}.json")
            out.write_text(json.dumps(result, indent=2, default=str))
            print(f"wrote {out}")
            return
        out = Path(args.out or ROOT / f"bench/results/chat-{args.device}.json")
        out.parent.mkdir(parents=True, exist_ok=True)

        def save() -> None:
            out.write_text(json.dumps(result, indent=2, default=str))

        result["package_tok_s"] = package_tok_s(path, strategy, args.package_tokens)
        print(f"package PIPELINE.generate: {result['package_tok_s']:.1f} tok/s", flush=True)
        save()
        asyncio.run(measure(args, path, tmp, result, save))
    print()
    print(f"{'measure':<46}{'value':>14}")
    print(f"{'package PIPELINE.generate tok/s (1 stream)':<46}{result['package_tok_s']:>14.1f}")
    for s, v in result["decode_tok_s"].items():
        print(f"{f'decode tok/s, {s} streams x 1':<46}{v:>14.1f}")
    for k, v in result["prefill_tok_s"].items():
        print(f"{f'prefill tok/s, {k}':<46}{v:>14.1f}")
    for k, v in result["ttft_2k_ms"].items():
        print(f"{f'TTFT 2,000-token prompt, {k} (ms)':<46}{v:>14.1f}")
    for s, v in result.get("http_ratio", {}).items():
        print(f"{f'HTTP / in process, {s} streams':<46}{v:>14.2f}")
    for k, v in result.get("constrained", {}).items():
        print(f"{f'constrained: {k}':<46}{v:>14.2f}")
    save()


if __name__ == "__main__":
    main()
