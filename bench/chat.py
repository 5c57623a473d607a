"""RWKV chat benchmark: gateway vs the package's own loop, batching, prefix-state cache.

On one generated checkpoint (random weights in the released format, size by flags):

1. single-stream decode tokens/s: the gateway (HTTP streaming, or the engine in-process
   with ``--transport engine``) vs the package's ``PIPELINE.generate`` loop in process;
2. aggregate tokens/s with 1, 4, 8 and 16 concurrent streams;
3. time to first token of a request sharing a ~2,000-token prefix with a cached one,
   vs the same request uncached;
4. (``--verify``) the batched decode step against the package's forward on this device.

    python bench/chat.py                                   # CPU, HTTP, 12 x 1024
    python bench/chat.py --device cuda --transport engine --layers 24 --embd 2048
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

PROMPT = "The history of the river city begins with a small market where traders met"
LONG_SYSTEM = " ".join(
    f"Rule {i}: answer politely, cite the manual section, and keep the reply short."
    for i in range(150)
)


def package_generate_tps(path: Path, strategy: str, tokens: int) -> float:
    """The package's own PIPELINE.generate loop on the same checkpoint."""
    import torch

    from engines.rwkv_model import load_rwkv

    lm = load_rwkv(path, strategy)
    from rwkv.utils import PIPELINE, PIPELINE_ARGS

    pipeline = PIPELINE(lm.model, "rwkv_vocab_v20230424")
    args = PIPELINE_ARGS(temperature=1.0, top_p=0.85)
    pipeline.generate(PROMPT, token_count=8, args=args)  # warm-up (JIT)
    if strategy.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    pipeline.generate(PROMPT, token_count=tokens, args=args)
    if strategy.startswith("cuda"):
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - started)


class EngineClient:
    """Drives RWKVChatEngine in process (no HTTP): for machines without the web stack."""

    def __init__(self, path: Path, strategy: str, max_batch: int) -> None:
        from engines.base import ModelInfo
        from engines.rwkv_engine import RWKVChatEngine

        self.engine = RWKVChatEngine(
            ModelInfo("bench", "chat", "rwkv"),
            path,
            {
                "strategy": strategy,
                "max_batch_size": max_batch,
                "max_queued": 256,
                "context_length": 8192,
                "prefix_cache_bytes": 4 * 2**30,
            },
        )

    async def stream(self, prompt_segments: list[str], max_tokens: int) -> tuple[float, float, int]:
        """(seconds to first token, seconds total, tokens)."""
        from engines.generation import GenerationRequest, SamplingParams, TokenEvent

        tokens: list[int] = []
        bounds = []
        for seg in prompt_segments:
            tokens += self.engine.encode(seg)
            bounds.append(len(tokens))
        req = GenerationRequest(
            tokens, SamplingParams(max_tokens=max_tokens, top_p=0.85), boundaries=bounds[:-1]
        )
        started = time.perf_counter()
        first = 0.0
        count = 0
        async for ev in self.engine.generate(req):
            if isinstance(ev, TokenEvent):
                count += 1
                if count == 1:
                    first = time.perf_counter() - started
        return first, time.perf_counter() - started, count

    def close(self) -> None:
        self.engine.close()


class HTTPClient:
    """A real `rwkv-rag serve` process; streams /v1/chat/completions over HTTP."""

    def __init__(self, path: Path, strategy: str, max_batch: int, threads: int, tmp: Path):
        import httpx
        import yaml

        self.port = 18900
        cfg = tmp / "chat-bench.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "models": [
                        {
                            "id": "bench",
                            "kind": "chat",
                            "engine": "rwkv",
                            "path": str(path),
                            "options": {
                                "strategy": strategy,
                                "max_batch_size": max_batch,
                                "max_queued": 256,
                                "prefix_cache_bytes": 4 * 2**30,
                            },
                        }
                    ],
                    "chat": {"max_tokens_limit": 8192},
                    "load_in_background": False,
                    "torch_threads": threads,
                    "log_level": "WARNING",
                    "port": self.port,
                    "host": "127.0.0.1",
                }
            )
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)],
            stdout=(tmp / "server.log").open("wb"),
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError((tmp / "server.log").read_text()[-3000:])
        self.client = httpx.AsyncClient(
            base_url=self.base, timeout=600, limits=httpx.Limits(max_connections=64)
        )

    async def stream(self, prompt_segments: list[str], max_tokens: int) -> tuple[float, float, int]:
        *system, user = prompt_segments
        messages = ([{"role": "system", "content": system[0]}] if system else []) + [
            {"role": "user", "content": user}
        ]
        body = {
            "model": "bench",
            "messages": messages,
            "max_tokens": max_tokens,
            "top_p": 0.85,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        first = 0.0
        usage = 0
        async with self.client.stream("POST", "/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]["completion_tokens"]
                elif not first and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - started
        return first, time.perf_counter() - started, usage

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def verify(path: Path, strategy: str) -> dict[str, Any]:
    import torch

    from engines.rwkv_model import BatchedStep, load_rwkv

    lm = load_rwkv(path, strategy)
    step = BatchedStep(lm)
    prompts = [[1, 2, 3, 4], [100, 200], [5000, 6000, 7000], [42]]
    states, toks = [], []
    for p in prompts:
        logits, s = lm.forward(p, lm.zero_state())
        states.append(s)
        toks.append(int(logits.argmax()))
    stacked = step.stack(states)
    ref_toks = list(toks)
    diff = 0.0
    agree = 0
    for _ in range(32):
        out = step(toks, stacked)
        for j in range(len(prompts)):
            ref, states[j] = lm.forward([ref_toks[j]], states[j])
            diff = max(diff, float((ref.float() - out[j].float()).abs().max()))
            ref_toks[j] = int(ref.argmax())
        toks = [int(t) for t in out.argmax(-1)]
        agree += sum(a == b for a, b in zip(toks, ref_toks, strict=True))
        toks = list(ref_toks)  # keep both on the reference path
    del torch
    return {
        "strategy": strategy,
        "max_abs_logit_diff": diff,
        "greedy_agreement": f"{agree}/{32 * len(prompts)}",
    }


async def run(args: argparse.Namespace, path: Path, tmp: Path) -> dict[str, Any]:
    strategy = f"{args.device} {args.precision}"
    client: Any = (
        EngineClient(path, strategy, 16)
        if args.transport == "engine"
        else HTTPClient(path, strategy, 16, args.threads, tmp)
    )
    out: dict[str, Any] = {}
    try:
        await client.stream(["warm up the kernels"], 8)
        _, total, n = await client.stream([PROMPT], args.tokens)
        out["single_stream_tps"] = n / total
        aggregate = {}
        for streams in (1, 4, 8, 16):
            started = time.perf_counter()
            res = await asyncio.gather(
                *(
                    client.stream([f"{PROMPT} (stream {i})"], args.stream_tokens)
                    for i in range(streams)
                )
            )
            aggregate[streams] = sum(r[2] for r in res) / (time.perf_counter() - started)
            print(f"{streams} streams: {aggregate[streams]:.1f} tok/s", flush=True)
        out["aggregate_tps"] = aggregate
        # Prefix cache: first request pays the long prefill, the second reuses its state.
        uncached, _, _ = await client.stream([LONG_SYSTEM, "First question?"], 1)
        cached, _, _ = await client.stream([LONG_SYSTEM, "Second question?"], 1)
        out["ttft_uncached_s"] = uncached
        out["ttft_cached_s"] = cached
    finally:
        client.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--transport", default="http", choices=["http", "engine"])
    ap.add_argument("--version", default="x070", choices=["x060", "x070"])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--embd", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--stream-tokens", type=int, default=128)
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--verify-only", action="store_true")
    ap.add_argument("--model-dir", default=None, help="where to write/reuse the checkpoint")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.precision = args.precision or ("fp16" if args.device == "cuda" else "fp32")

    import torch

    torch.set_num_threads(args.threads if args.device == "cpu" else max(1, os.cpu_count() or 1))
    from engines.rwkv_engine import world_tokenizer
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
            "machine": f"{platform.machine()}, {os.cpu_count()} cores"
            + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""),
            "model": f"random {args.version}, {args.layers} layers x {args.embd}",
            "strategy": strategy,
            "transport": args.transport,
            "threads": args.threads,
            "long_prefix_tokens": len(world_tokenizer().encode(f"System: {LONG_SYSTEM}\n\n")),
        }
        if args.verify or args.verify_only:
            result["verify"] = verify(path, strategy)
            print(result["verify"], flush=True)
            if args.verify_only:
                return
        result["package_generate_tps"] = package_generate_tps(path, strategy, args.tokens)
        print(f"package PIPELINE.generate: {result['package_generate_tps']:.1f} tok/s", flush=True)
        result.update(asyncio.run(run(args, path, tmp)))
    agg = result["aggregate_tps"]
    summary = {
        "single stream: gateway vs package (goal >= 0.90)": round(
            result["single_stream_tps"] / result["package_generate_tps"], 2
        ),
        "8 streams vs 1 stream (goal >= 3x)": round(agg[8] / agg[1], 2),
        "cached vs uncached TTFT speed-up (goal >= 10x)": round(
            result["ttft_uncached_s"] / max(result["ttft_cached_s"], 1e-9), 1
        ),
    }
    result["summary"] = summary
    print()
    print(f"{'measure':<44}{'value':>12}")
    print(f"{'package PIPELINE.generate tok/s':<44}{result['package_generate_tps']:>12.1f}")
    print(f"{'gateway single stream tok/s':<44}{result['single_stream_tps']:>12.1f}")
    for k, v in agg.items():
        print(f"{f'aggregate tok/s, {k} streams':<44}{v:>12.1f}")
    print(f"{'TTFT uncached, ~2k-token prefix (s)':<44}{result['ttft_uncached_s']:>12.3f}")
    print(f"{'TTFT cached prefix (s)':<44}{result['ttft_cached_s']:>12.3f}")
    for k, v in summary.items():
        print(f"{k}: {v}")
    out = Path(args.out or ROOT / f"bench/results/chat-{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
