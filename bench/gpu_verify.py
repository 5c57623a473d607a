"""On CUDA: the graph-captured and eager decode and the chunked prefill against the rwkv
package's own forward on the same weights (fp16 rounding expected), x060 and x070.
``--device cpu`` runs the same checks on the CPU (fp32; a dry run of the script).

Writes JSON with the largest logit difference and the greedy agreement per path, after
each version: a version that fails is recorded with its error and the next one still runs
(the exit status is then 1)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def check(version: str, layers: int, embd: int, tmp: Path, device: str) -> dict[str, object]:
    import torch

    from engines.base import ModelInfo
    from engines.rwkv.engine import RWKVChatEngine
    from engines.rwkv_tiny import write_rwkv_checkpoint

    path = write_rwkv_checkpoint(tmp / f"{version}.pth", version, n_layer=layers, n_embd=embd)
    engine = RWKVChatEngine(
        ModelInfo("v", "chat", "rwkv"),
        path,
        {"strategy": "cuda fp16" if device == "cuda" else "cpu fp32", "max_batch_size": 4},
    )
    lm, fwd = engine.lm, engine.forward
    prompts = [[(i * 31 + j) % 60000 + 1 for j in range(40 + 13 * i)] for i in range(4)]
    out: dict[str, object] = {
        "version": version,
        "shape": f"{layers} x {embd}",
        "paths": {
            "decode": engine.decode_path,
            "prefill": engine.prefill_path,
            "prefill_fallback": engine.info.extra.get("prefill_fallback"),
        },
    }
    # Prefill: chunked (batched, padded) vs the package's sequential forward.
    T = max(map(len, prompts))
    toks = torch.zeros((4, T), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        toks[i, : len(p)] = torch.tensor(p)
    st = [torch.stack([t] * 4) for t in lm.zero_state()]
    logits = fwd(toks, st, torch.tensor([len(p) for p in prompts], device=device))
    refs = [lm.forward(p, lm.zero_state()) for p in prompts]
    out["prefill_max_abs_diff"] = max(
        float((logits[i] - r[0]).abs().max()) for i, r in enumerate(refs)
    )
    # Decode: the graph path (pool rows) and eager, 64 greedy steps, against the package.
    pool = engine.decode_pool
    for i, (_, state) in enumerate(refs):
        pool.alloc(i)
        pool.write(i, dict(zip(engine._parts, state, strict=True)))
    first = [int(r[0].argmax()) for r in refs]
    pool.tensors["last_token"][:4, 0] = torch.tensor(first, device=device)
    ref_states = [r[1] for r in refs]
    ref_tok = list(first)
    agree = total = 0
    diff = 0.0
    for _ in range(64):
        got = engine.graphs(4) if engine.graphs is not None else engine._eager_decode(4)
        nxt = got.argmax(-1)
        for j in range(4):
            ref, ref_states[j] = lm.forward([ref_tok[j]], ref_states[j])
            diff = max(diff, float((ref.float() - got[j].float()).abs().max()))
            ref_tok[j] = int(ref.argmax())
            agree += int(nxt[j]) == ref_tok[j]
            total += 1
        pool.tensors["last_token"][:4, 0] = torch.tensor(ref_tok, device=device)
    out["decode_max_abs_diff"] = diff
    out["decode_greedy_agreement"] = f"{agree}/{total}"
    # A kernel that fell back during the checks shows here (it was fla when it started).
    out["paths"]["prefill_after"] = engine.prefill_path  # type: ignore[index]
    engine.close()
    return out


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO)
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "bench/results/verify-cuda.json"))
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--embd", type=int, default=1024)
    args = ap.parse_args()
    results: list[dict[str, object]] = []
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for version in ("x070", "x060"):
            try:
                res = check(version, args.layers, args.embd, Path(tmp), args.device)
            except Exception as exc:
                logging.getLogger("gpu_verify").exception("%s failed", version)
                res = {"version": version, "error": f"{type(exc).__name__}: {exc}"[:2000]}
                failed = True
            print(res, flush=True)
            results.append(res)
            Path(args.out).write_text(json.dumps(results, indent=2))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
