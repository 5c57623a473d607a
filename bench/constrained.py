"""What grammar-constrained decoding costs.

- ``mask_ms``: the per-token mask cost of each grammar library over the RWKV World
  vocabulary (65,536 tokens) for one JSON Schema, token by token through a document
  (llguidance always; xgrammar and outlines-core when installed). This is what picked
  the library.
- ``constrained_rates``: aggregate decode tok/s at 1 and 8 streams with json_schema-
  constrained rows vs unconstrained rows on the same model (the masks are computed on a
  worker thread while the forward runs; goal: <= 10% cost at 8 streams).

- ``sweep`` (``--sweep N``): N random constrained requests per mode (plain and
  streamed; the cases of ``tests/chat/test_constrained_fuzz.py``, more of them) against a
  real server on the tiny random models: how many choices were checked, how many the
  budget cut (``length``), how many requests were refused with a 4xx, and any violation
  (a choice that failed its schema, a 5xx or a broken stream), with the time taken.

Run alone (``python bench/constrained.py``) or as ``bench/chat.py --constrained``.
Prints a table and writes ``bench/results/constrained-<device>.json``
(``constrained-sweep.json`` for ``--sweep``).
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
sys.path.insert(0, str(ROOT))

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "year": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "summary": {"type": "string"},
    },
    "required": ["title", "year", "tags", "summary"],
    "additionalProperties": False,
}
DOC = {
    "title": "The Water Pump Manual, second edition",
    "year": 2024,
    "tags": ["maintenance", "pumps", "safety", "reset"],
    "summary": "Hold the red button for ten seconds to reset the pump; check the seals "
    "every month and replace the filter once a year.",
}


def _world_vocab() -> tuple[Any, list[bytes]]:
    from engines.rwkv.tokenizer import world_tokenizer

    tok = world_tokenizer()
    vocab = [b""] * 65536
    for i in range(65536):
        raw = tok.idx2token.get(i)
        vocab[i] = b"\xff[EOS]" if i == 0 else bytes(raw) if raw else b"\xff[UNUSED_%d]" % i
    return tok, vocab


def mask_ms() -> dict[str, dict[str, float]]:
    """Per-token mask time (mean and max, ms) of each library through one document."""
    import llguidance

    from engines.constraint import JSON_OPTIONS
    from engines.rwkv.grammar import ll_tokenizer

    tok, vocab = _world_vocab()
    ids = tok.encode(json.dumps(DOC, separators=(",", ":")))
    out: dict[str, dict[str, float]] = {}
    grammar = llguidance.LLMatcher.grammar_from_json_schema(SCHEMA, overrides=JSON_OPTIONS)
    matcher = llguidance.LLMatcher(ll_tokenizer(), grammar, log_level=0)
    times = []
    for t in ids:
        started = time.perf_counter()
        matcher.compute_bitmask()
        times.append(time.perf_counter() - started)
        matcher.consume_token(t)
    out["llguidance"] = {"mean": 1e3 * sum(times) / len(times), "max": 1e3 * max(times)}
    try:
        import xgrammar as xgr
    except ImportError:
        return out
    info = xgr.TokenizerInfo(
        vocab, vocab_type=xgr.VocabType.RAW, vocab_size=65536, stop_token_ids=[0]
    )
    compiled = xgr.GrammarCompiler(info).compile_json_schema(
        json.dumps(SCHEMA), any_whitespace=False
    )
    xm = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, 65536)
    times = []
    for t in ids:
        started = time.perf_counter()
        xm.fill_next_token_bitmask(bitmask)
        times.append(time.perf_counter() - started)
        xm.accept_token(t)
    out["xgrammar"] = {"mean": 1e3 * sum(times) / len(times), "max": 1e3 * max(times)}
    return out


async def constrained_rates(client: Any, streams: list[int], tokens: int) -> dict[str, float]:
    """Aggregate tok/s, plain vs json_schema-constrained, at each stream count."""
    from bench.harness import prompt_tokens
    from engines.constraint import json_constraint

    constraint = json_constraint(SCHEMA, prefix=" ")
    out: dict[str, float] = {}
    for s in streams:
        rates = {}
        for kind, c in (("plain", None), ("constrained", constraint)):
            started = time.perf_counter()
            res = await asyncio.gather(
                *(client.run(prompt_tokens(12, 50 + i), tokens, None, c) for i in range(s))
            )
            rates[kind] = sum(r[2] for r in res) / (time.perf_counter() - started)
            out[f"{s}_streams_{kind}_tok_s"] = rates[kind]
        out[f"{s}_streams_cost_pct"] = 100.0 * (1 - rates["constrained"] / rates["plain"])
        print(
            f"{s:>2} streams: plain {rates['plain']:8.1f} tok/s, constrained "
            f"{rates['constrained']:8.1f} tok/s ({out[f'{s}_streams_cost_pct']:+.1f}% cost)",
            flush=True,
        )
    return out


def _sweep_mode(client: Any, stream: bool, examples: int, seed: int) -> dict[str, Any]:
    import openai
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as fixed_seed

    from tests.chat.constrained_cases import requests, send

    counts = {"requests": 0, "choices": 0, "length": 0, "4xx": 0, "violations": 0}
    failures: list[str] = []

    @fixed_seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(req=requests())
    def case(req: dict[str, Any]) -> None:
        counts["requests"] += 1
        try:
            reasons = send(client, req, stream)
        except openai.APIStatusError as exc:
            if exc.status_code < 500:
                counts["4xx"] += 1
                return
            counts["violations"] += 1
            failures.append(f"{exc.status_code}: {json.dumps(req)[:300]}")
            return
        except (AssertionError, ValueError, openai.APIError) as exc:
            counts["violations"] += 1
            failures.append(f"{type(exc).__name__} {exc}: {json.dumps(req)[:300]}")
            return
        counts["choices"] += len(reasons)
        counts["length"] += reasons.count("length")

    started = time.perf_counter()
    case()
    return {**counts, "seconds": round(time.perf_counter() - started, 1), "failures": failures[:10]}


def sweep(examples: int, seed: int) -> dict[str, Any]:
    """Random requests through a real server; counts per mode (see the module doc)."""
    import openai

    from engines.tiny import make_tiny_models
    from tests.chat.conftest import chat_models
    from tests.conftest import start_server, stop_server

    out: dict[str, Any] = {"examples_per_mode": examples, "seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = Path(tmp) / "tiny"
        tiny.mkdir()
        make_tiny_models(tiny)
        config = {
            "models": chat_models(tiny),
            "load_in_background": False,
            "torch_threads": 1,
            "log_level": "WARNING",
        }
        server = start_server(config, Path(tmp))
        try:
            client = openai.OpenAI(
                api_key="x", base_url=server.base_url + "/v1", max_retries=0, timeout=300
            )
            for stream in (False, True):
                mode = "streamed" if stream else "plain"
                out[mode] = _sweep_mode(client, stream, examples, seed)
                print(f"{mode}: {out[mode]}", flush=True)
        finally:
            stop_server(server)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", type=int, default=0, help="random requests per mode (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--embd", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.sweep:
        result = sweep(args.sweep, args.seed)
        print()
        print(
            f"{'mode':<10}{'requests':>10}{'choices':>10}{'length':>8}{'4xx':>6}"
            f"{'violations':>12}{'seconds':>9}"
        )
        for mode in ("plain", "streamed"):
            r = result[mode]
            print(
                f"{mode:<10}{r['requests']:>10}{r['choices']:>10}{r['length']:>8}"
                f"{r['4xx']:>6}{r['violations']:>12}{r['seconds']:>9}"
            )
        target = Path(args.out or ROOT / "bench/results/constrained-sweep.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2))
        return

    import torch

    from bench.harness import InProcess
    from engines.rwkv_tiny import write_rwkv_checkpoint

    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} threads",
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "shape": f"x070 {args.layers} x {args.embd}",
        "tokens_per_stream": args.tokens,
    }
    result["mask_ms"] = mask_ms()
    for lib, t in result["mask_ms"].items():
        print(f"{lib}: mask {t['mean']:.3f} ms mean, {t['max']:.3f} ms max per token", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.pth"
        write_rwkv_checkpoint(path, "x070", n_layer=args.layers, n_embd=args.embd)
        precision = "fp16" if args.device == "cuda" else "fp32"
        client = InProcess(path, {"strategy": f"{args.device} {precision}", "max_batch_size": 8})
        try:
            asyncio.run(client.run([1, 2, 3], 4))
            result["rates"] = asyncio.run(constrained_rates(client, [1, 8], args.tokens))
        finally:
            client.close()
    print()
    print(f"{'measure':<44}{'value':>12}")
    for lib, t in result["mask_ms"].items():
        print(f"{f'{lib} mask per token, mean (ms)':<44}{t['mean']:>12.3f}")
    for k, v in result["rates"].items():
        print(f"{k:<44}{v:>12.1f}")
    out = Path(args.out or ROOT / f"bench/results/constrained-{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
