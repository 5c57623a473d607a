"""Retrieval quality: recall@5 of dense, BM25 and hybrid search on our own English and
Chinese evaluation sets (bench/eval/*.json: documents we wrote, questions whose answering
document is known), with the real MiniLM. Also sweeps the fusion weights used to tune
the defaults. Prints a table and writes bench/results/kb_eval.json.

    python bench/kb_eval.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb.config import KnowledgeSettings  # noqa: E402
from kb.providers import minilm_provider  # noqa: E402
from kb.retrieval import SearchQuery  # noqa: E402
from kb.service import KnowledgeBase  # noqa: E402


async def evaluate(lang: str, provider: Any, sweep: bool) -> dict[str, Any]:
    data = json.loads((ROOT / "bench" / "eval" / f"{lang}.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase.open_sqlite(Path(tmp), provider, KnowledgeSettings())
        cid = (await kb.create_store(lang, "minilm")).id
        by_file: dict[str, str] = {}
        for doc_id, text in data["docs"].items():
            row = await kb.add_text(cid, text, title=f"{doc_id}.txt")
            by_file[row.file_id] = doc_id

        async def recall(mode: str, k: int = 5, **kw: Any) -> tuple[float, float]:
            hit = 0
            rr = 0.0
            for item in data["questions"]:
                query = SearchQuery((item["q"],), k, mode=mode, rerank=False, **kw)
                out = await kb.search(cid, query)
                docs = [by_file[r.file_id] for r in out.hits]
                if item["doc"] in docs:
                    hit += 1
                    rr += 1.0 / (docs.index(item["doc"]) + 1)
            n = len(data["questions"])
            return hit / n, rr / n

        result: dict[str, Any] = {"questions": len(data["questions"]), "docs": len(data["docs"])}
        for mode in ("dense", "keyword", "hybrid"):
            r5, mrr = await recall(mode)
            result[mode] = {"recall@5": round(r5, 3), "mrr@5": round(mrr, 3)}
        for fusion in ("rrf", "relative", "dbsf"):
            r5, mrr = await recall("hybrid", fusion=fusion)
            result[f"hybrid-{fusion}"] = {"recall@5": round(r5, 3), "mrr@5": round(mrr, 3)}
        if sweep:
            grid = []
            for dw, kw_ in [(1, 1), (1, 0.5), (0.5, 1), (1, 2), (2, 1)]:
                r5, mrr = await recall("hybrid", weights=(dw, kw_))
                grid.append(
                    {"dense_weight": dw, "keyword_weight": kw_, "recall@5": r5, "mrr@5": mrr}
                )
            result["sweep"] = grid
        kb.close()
    return result


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true", help="also sweep the fusion weights")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "kb_eval.json"))
    args = ap.parse_args()
    provider = minilm_provider()
    started = time.perf_counter()
    results = {lang: await evaluate(lang, provider, args.sweep) for lang in ("en", "zh")}
    print(f"{'set':<4} {'mode':<16} {'recall@5':>9} {'mrr@5':>7}")
    for lang, res in results.items():
        for mode in ("dense", "keyword", "hybrid", "hybrid-rrf", "hybrid-relative", "hybrid-dbsf"):
            print(f"{lang:<4} {mode:<16} {res[mode]['recall@5']:>9.3f} {res[mode]['mrr@5']:>7.3f}")
        for row in res.get("sweep", []):
            print(
                f"{lang:<4} w={row['dense_weight']}/{row['keyword_weight']:<4} "
                f"{row['recall@5']:>9.3f} {row['mrr@5']:>7.3f}"
            )
    out = {
        "model": "all-minilm-l6-v2 (mean pooling)",
        "rerank": False,
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())
