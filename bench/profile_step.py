"""Where a batched RWKV decode step spends its time on the CPU, and what prefill slices do
to the running streams' inter-token gaps.

Three parts, on one generated random checkpoint (default x070 8 layers x 768, ``cpu fp32``):

- ``step``: for each row count, the step's time (forward, sampling top-p and greedy;
  with ``--threads 1`` the thread's CPU time, which a shared machine disturbs least),
  the head's matrix product alone, and a torch-profiler breakdown of the forward by op
  class (head, layer matmuls, WKV, elementwise/norms; "python" is the wall time no op
  accounts for: interpreter and dispatch overhead). Variants (``--variants``) time other
  forms of the step A/B, interleaved in the same loop, medians over repeats.
- ``arrivals`` (``--arrivals``): the engine in process with ``--running`` streams decoding;
  p50/p90 inter-token gap without arrivals, then while new prompts of ``--prompt`` tokens
  arrive every ``--interval`` seconds, for each ``step_token_budget`` in ``--budgets``.
- ``quality`` (``--quality``): int8 linears against fp32 over 256 greedy steps.

Prints tables and writes JSON (``bench/results/profile-step-cpu.json``).

    python bench/profile_step.py --threads 2
    python bench/profile_step.py --threads 1 --no-step --arrivals --budgets 1024,256,64,32
    python bench/profile_step.py --threads 1 --no-step --quality
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import InProcess, prompt_tokens  # noqa: E402 - after the path


def checkpoint(args: argparse.Namespace) -> Path:
    from engines.rwkv_tiny import write_rwkv_checkpoint

    path = Path(args.model_dir) / f"bench-{args.version}-{args.layers}x{args.embd}.pth"
    if not path.exists():
        print(f"writing {path} ...", flush=True)
        write_rwkv_checkpoint(path, args.version, n_layer=args.layers, n_embd=args.embd)
    return path


class _Pool:
    def __init__(self, tensors: dict[str, Any]) -> None:
        self.tensors = tensors


def sampler_pool(rows: int, vocab: int, kind: str) -> _Pool:
    from engines.generation import SamplingParams
    from engines.rwkv import sampler

    fields = sampler.fields(rows, vocab, "cpu")
    params = SamplingParams(
        max_tokens=64,
        temperature=0 if kind == "greedy" else 1.0,
        top_p=1.0 if kind == "topk" else 0.85,
        top_k=40 if kind == "topk" else 0,
    )
    for r in range(rows):
        for name, value in sampler.row_values(params, r).items():
            fields[name][r].copy_(value)
    return _Pool(fields)


def classify(key: Any, vocab: int) -> str:
    name, shapes = key.key, str(key.input_shapes)
    if name in ("aten::mm", "aten::matmul", "aten::addmm", "aten::linear", "aten::mkldnn_linear"):
        return "head" if str(vocab) in shapes else "layer matmuls"
    if name in ("aten::to_mkldnn", "aten::to_dense"):
        return "onednn in/out copies"
    if name in ("aten::bmm",):
        return "wkv (bmm)"
    if name.startswith("quantized::") or "dynamic" in name:
        return "int8 linears (head included)"
    return "elementwise/norm"


def leaf(name: str) -> bool:
    # Composite ops whose time their children already count.
    return name not in {"aten::matmul", "aten::linear", "aten::layer_norm", "aten::group_norm"}


def clock() -> float:
    """With one torch thread every op runs on the calling thread, so its CPU time is the
    step's work without the time other processes held the core (a shared machine);
    with more threads, wall time."""
    import torch

    return time.thread_time() if torch.get_num_threads() == 1 else time.perf_counter()


def step_part(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    import torch

    from engines.rwkv import sampler
    from engines.rwkv.model import load_rwkv

    lm = load_rwkv(path, "cpu fp32")
    variants: dict[str, Any] = {
        name: make_variant(name, lm) for name in args.variants.split(",") if name
    }
    base = next(iter(variants))
    head = lm.model.z["head.weight"] if lm.version == "x070" else lm.model.w["head.weight"]
    vocab = int(head.shape[1])
    out: dict[str, Any] = {}
    for rows in [int(r) for r in args.rows.split(",")]:
        tokens = torch.randint(1, 60000, (rows, 1))
        states = {
            name: [torch.zeros((rows, *t.shape), dtype=t.dtype) for t in lm.zero_state()]
            for name in variants
        }
        pools = {k: sampler_pool(rows, vocab, k) for k in ("cut", "topk", "greedy")}
        logits = variants[base](tokens, states[base])
        x = torch.randn(rows, lm.n_embd)

        def sample(kind: str, logits: Any = logits, pools: dict[str, Any] = pools) -> Any:
            return sampler.sample(
                pools[kind],
                logits,
                penalised=False,
                want_logprobs=False,
                kinds=frozenset({kind}),
                max_top_k=40 if kind == "topk" else 0,
            )

        for f, st in ((variants[n], states[n]) for n in variants):
            for _ in range(3):
                f(tokens, st)
        # Interleaved repeats: each round runs every variant once, so load drift on a
        # shared machine falls on all of them alike.
        times: dict[str, list[float]] = {n: [] for n in variants}
        extra: dict[str, list[float]] = {
            "head": [],
            "sample top-p": [],
            "sample top-k": [],
            "sample greedy": [],
        }
        with torch.inference_mode():
            for _ in range(args.repeats):
                for n, f in variants.items():
                    started = clock()
                    f(tokens, states[n])
                    times[n].append((clock() - started) * 1e3)
                for label, fn in (
                    ("head", lambda x=x: x @ head),
                    ("sample top-p", lambda: sample("cut")),
                    ("sample top-k", lambda: sample("topk")),
                    ("sample greedy", lambda: sample("greedy")),
                ):
                    started = clock()
                    fn()
                    extra[label].append((clock() - started) * 1e3)
        row: dict[str, Any] = {f"forward {n} ms": statistics.median(t) for n, t in times.items()}
        row.update({f"{k} ms": statistics.median(v) for k, v in extra.items()})
        for name in [n for n in variants if n != "compiled"]:
            shares, ops = breakdown(
                variants[name], tokens, states[name], vocab, n_prof=max(3, args.repeats // 3)
            )
            step_ms = row[f"forward {name} ms"]
            row[f"breakdown {name} ms"] = {k: v * step_ms for k, v in shares.items()}
        row["aten ops per step"] = ops
        out[str(rows)] = row
        print_row(rows, row)
    return out


def breakdown(f: Any, tokens: Any, st: list[Any], vocab: int, n_prof: int) -> tuple[Any, float]:
    """The torch profiler's split of one step by op class, scaled to its unprofiled time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        started = time.perf_counter()
        for _ in range(n_prof):
            f(tokens, st)
        wall = (time.perf_counter() - started) * 1e3 / n_prof
    shares: dict[str, float] = {}
    for key in prof.key_averages(group_by_input_shape=True):
        if not leaf(key.key) or not key.key.startswith(("aten::", "quantized::")):
            continue
        label = classify(key, vocab)
        shares[label] = shares.get(label, 0.0) + key.self_cpu_time_total / 1e3 / n_prof
    shares["python/dispatch"] = max(0.0, wall - sum(shares.values()))
    ops = sum(1 for e in prof.events() if e.name.startswith(("aten::", "quantized::"))) / n_prof
    # The profiler's clock is the wall's, and it slows what it times: its shares are
    # fractions of the unprofiled median.
    total = sum(shares.values())
    return {k: v / total for k, v in shares.items()}, ops


def make_variant(name: str, lm: Any) -> Any:
    """Other forms of the step, for A/B against the default."""
    from engines.rwkv.forward import Forward
    from engines.rwkv.wkv import Wkv

    if name in ("dense", "onednn", "int8"):
        return Forward(lm, Wkv("cpu", "torch", 16), linear=name)
    if name == "compiled":
        import torch

        # Dense weights: oneDNN's opaque tensors are not something the compiler traces.
        f = Forward(lm, Wkv("cpu", "torch", 16), linear="dense")
        compiled = torch.compile(f._x070, dynamic=False)

        def run(tokens: Any, st: list[Any], lengths: Any = None) -> Any:
            with torch.inference_mode():
                return compiled(tokens, st, lengths)

        return run
    raise SystemExit(f"unknown variant {name!r}")


def print_row(rows: int, row: dict[str, Any]) -> None:
    print(f"\n{rows} rows", flush=True)
    for k, v in row.items():
        if isinstance(v, dict):
            print(f"  {k}")
            total = sum(v.values())
            for label, ms in sorted(v.items(), key=lambda kv: -kv[1]):
                print(f"  {'  ' + label:<34}{ms:10.2f} ms {100 * ms / total:6.1f} %")
        else:
            print(f"  {k:<34}{v:10.2f}")


def quality_part(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """int8 against fp32 over ``args.quality_steps`` greedy steps from one prompt: fed the
    fp32 step's tokens (so the two see the same text), the largest logit difference (also
    relative to the logits' spread) and how often the greedy choices agree."""
    import torch

    from engines.rwkv.model import load_rwkv

    lm = load_rwkv(path, "cpu fp32")
    exact, approx = make_variant("onednn", lm), make_variant("int8", lm)
    st_exact = [torch.zeros((1, *t.shape), dtype=t.dtype) for t in lm.zero_state()]
    st_approx = [t.clone() for t in st_exact]
    tokens = torch.tensor([prompt_tokens(args.prompt, 7)])
    a, b = exact(tokens, st_exact), approx(tokens, st_approx)
    worst, worst_rel, agree = 0.0, 0.0, 0
    for _ in range(args.quality_steps):
        diff = float((a - b).abs().max())
        worst, worst_rel = max(worst, diff), max(worst_rel, diff / float(a.std()))
        agree += int(a.argmax(-1) == b.argmax(-1))
        chosen = a.argmax(-1)[:, None]
        a, b = exact(chosen, st_exact), approx(chosen, st_approx)
    out = {
        "steps": args.quality_steps,
        "max_logit_diff": worst,
        "max_logit_diff_over_std": worst_rel,
        "greedy_agreement": agree / args.quality_steps,
    }
    print(
        f"int8 vs fp32 over {args.quality_steps} greedy steps: max logit diff {worst:.3f} "
        f"({worst_rel:.3f} of the spread), greedy agreement {100 * agree / args.quality_steps:.1f} %",
        flush=True,
    )
    return out


async def gaps(local: InProcess, args: argparse.Namespace, arrive: bool) -> dict[str, float]:
    """Inter-token gaps of ``args.running`` streams (after their fifth token); with
    ``arrive``, a prompt of ``args.prompt`` tokens (asking one token) arrives every
    ``args.interval`` seconds while they run (0: one after another)."""
    from engines.generation import GenerationRequest, SamplingParams, TokenEvent

    done = asyncio.Event()
    stamps: list[list[float]] = [[] for _ in range(args.running)]
    firsts: list[float] = []

    async def stream(i: int) -> None:
        params = SamplingParams(max_tokens=args.tokens, top_p=0.85)
        req = GenerationRequest(prompt_tokens(12, i), params)
        async for ev in local.engine.generate(req):
            if isinstance(ev, TokenEvent):
                stamps[i].append(time.perf_counter())

    async def one(k: int) -> None:
        first, _, _ = await local.run(prompt_tokens(args.prompt, 5000 + k), 1)
        firsts.append(first * 1e3)

    async def arrivals() -> None:
        pending: list[asyncio.Task[None]] = []
        k = 0
        while not done.is_set():
            if args.interval <= 0:
                await one(k)
            else:
                pending.append(asyncio.create_task(one(k)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), args.interval)
            k += 1
        await asyncio.gather(*pending)

    async def all_streams() -> None:
        await asyncio.gather(*(stream(i) for i in range(args.running)))
        done.set()

    if arrive:
        await asyncio.gather(all_streams(), arrivals())
    else:
        await all_streams()
    diffs = sorted((b - a) * 1e3 for s in stamps for a, b in itertools.pairwise(s[4:]))
    return {
        "p50 ms": statistics.median(diffs),
        "p90 ms": diffs[int(0.9 * (len(diffs) - 1))],
        "max ms": diffs[-1],
        "arrivals": float(len(firsts)),
        "arrival ttft p50 ms": statistics.median(firsts) if firsts else 0.0,
    }


async def arrivals_part(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for budget in [int(b) for b in args.budgets.split(",")]:
        options = {
            "strategy": "cpu fp32",
            "max_batch_size": args.running + 2,
            "max_prefill_batch": 2,
            "step_token_budget": budget,
            "prefix_cache_bytes": 0,
            "state_disk_bytes": 0,
        }
        local = InProcess(path, options)
        try:
            await local.run(prompt_tokens(12, 0), 4)
            rounds: dict[str, list[dict[str, float]]] = {"no arrivals": [], "arrivals": []}
            for _ in range(args.arrival_repeats):
                for label, arrive in (("no arrivals", False), ("arrivals", True)):
                    rounds[label].append(await gaps(local, args, arrive))
        finally:
            local.close()
        row = {
            label: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            for label, rs in rounds.items()
        }
        row["p50 ratio"] = row["arrivals"]["p50 ms"] / row["no arrivals"]["p50 ms"]  # type: ignore[assignment]
        out[str(budget)] = row
        quiet, busy = row["no arrivals"], row["arrivals"]
        print(
            f"budget {budget:>5}: p50 {quiet['p50 ms']:7.1f} -> {busy['p50 ms']:7.1f} ms "
            f"(x{row['p50 ratio']:.2f}), p90 {quiet['p90 ms']:7.1f} -> {busy['p90 ms']:7.1f} ms, "
            f"max {busy['max ms']:7.1f} ms, {busy['arrivals']:.0f} arrivals, "
            f"their TTFT p50 {busy['arrival ttft p50 ms']:7.1f} ms",
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", default="x070", choices=["x060", "x070"])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--embd", type=int, default=768)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="1,4,8,16")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument(
        "--variants",
        default="dense,onednn,int8",
        help="forms of the step timed A/B (dense, onednn, int8, compiled); the first is "
        "the baseline",
    )
    ap.add_argument("--no-step", action="store_true")
    ap.add_argument("--arrivals", action="store_true")
    ap.add_argument("--quality", action="store_true", help="int8 against fp32")
    ap.add_argument("--quality-steps", type=int, default=256)
    ap.add_argument("--running", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=201)
    ap.add_argument("--tokens", type=int, default=48, help="tokens per running stream")
    ap.add_argument("--budgets", default="1024,64")
    ap.add_argument("--arrival-repeats", type=int, default=1)
    ap.add_argument(
        "--interval", type=float, default=1.0, help="seconds between arrivals (0: back to back)"
    )
    ap.add_argument("--model-dir", default="/tmp/rwkv-bench")
    ap.add_argument("--out", default=str(ROOT / "bench/results/profile-step-cpu.json"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    Path(args.model_dir).mkdir(parents=True, exist_ok=True)
    path = checkpoint(args)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "shape": f"{args.version} {args.layers} x {args.embd}",
        "threads": args.threads,
    }
    out = Path(args.out)
    if out.exists():  # parts run separately accumulate in one file
        result = {**json.loads(out.read_text()), **result}
    if not args.no_step:
        result["step"] = step_part(args, path)
    if args.quality:
        result["int8_quality"] = quality_part(args, path)
    if args.arrivals:
        result["arrivals"] = {
            "running": args.running,
            "prompt": args.prompt,
            "interval_s": args.interval,
            "budgets": asyncio.run(arrivals_part(args, path)),
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
