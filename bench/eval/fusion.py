"""Compare fusions of the dense and keyword lists on the evaluation sets, choosing each
method's parameters on **dev** queries only and reporting dev and test.

Per query it dumps the dense list, the stemmed BM25 list and the unstemmed one (the
index before stemming), each 50 deep, with every candidate's store-independent features
(cosine on the probe's scale, term coverage), then ranks offline:

- ``relative``: min-max normalised scores, weighted sum (the fusion before this study);
- ``rrf``: weighted reciprocal rank fusion;
- ``convex``: a weighted convex combination of calibrated scores, the dense list's
  probe-scaled cosine and the keyword list's saturated BM25 (``bm25 / (bm25 + half)``),
  a hit absent from a list scoring 0 there;
- ``calibrated``: every candidate of both lists by the absolute score's log-odds (the
  probe-scaled cosine and the query's term coverage, kb/scoring.py) plus a weight times
  the saturated BM25 (weight 0: the absolute score alone).

Run after bench/eval/build.py (the stores are built on first use, as kb_eval's):

    python bench/eval/fusion.py [SET,SET...]   # writes bench/results/kb_fusion.json
"""

from __future__ import annotations

import asyncio
import json
import math
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from bench.eval.stores import SETS, load_set, open_store, set_names  # noqa: E402
from kb.backend import CandidateQuery  # noqa: E402
from kb.config import KnowledgeSettings  # noqa: E402
from kb.fusion import bm25_confidence, fuse  # noqa: E402
from kb.probe import Probe, probe_from_vectors, probe_sentences  # noqa: E402
from kb.scoring import ScoreModel, coverage, query_terms, script_of  # noqa: E402

N = 50
MODEL = ScoreModel()
Row = dict[str, Any]
Ranker = Callable[[Row], list[int]]


async def dump(name: str, provider: Any, probe: Probe) -> list[Row]:
    data = load_set(name)
    kb, cid, files = await open_store(name, data, provider, KnowledgeSettings())
    backend: Any = kb.backend
    rows = []
    for item in data["queries"]:
        vec, _ = await provider.embed("minilm", [item["q"]])
        lists = {}
        for stemmed in (True, False):
            backend.stemming = stemmed
            (cand,) = backend.candidates(
                cid,
                [CandidateQuery(item["q"], vec[0])],
                N,
                allowed_files=None,
                dense=True,
                keyword=True,
            )
            lists["dense"] = cand.dense
            lists["stem" if stemmed else "plain"] = cand.keyword
        ids = list(dict.fromkeys(c for lst in lists.values() for c, _ in lst))
        got, mat = backend.vectors(cid, set(ids))
        cos = dict(zip(got.tolist(), (mat @ vec[0]).tolist(), strict=True))
        chunks = backend.chunks(ids)
        script = script_of(item["q"])
        terms = query_terms(item["q"])
        rows.append(
            {
                "set": name,
                "split": item["split"],
                "relevant": set(item["relevant"]),
                "trust": probe.trust(script),
                "doc": {c: files[chunks[c].file_id] for c in ids},
                "z": {c: float(probe.z(cos[c], script)) for c in ids},
                "cov": {c: coverage(terms, chunks[c].text) for c in ids},
                "script": script,
                **lists,
            }
        )
    kb.close()
    return rows


def _metrics(ranked: list[int], r: Row) -> tuple[float, float]:
    docs = list(dict.fromkeys(r["doc"][c] for c in ranked))[:10]
    rel = r["relevant"]
    r5 = float(any(d in rel for d in docs[:5]))
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(docs) if d in rel)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(rel))))
    return r5, dcg / ideal if ideal else 0.0


def evaluate(rows: list[Row], rank: Ranker) -> tuple[float, float]:
    if not rows:
        return 0.0, 0.0
    got = np.array([_metrics(rank(r)[:20], r) for r in rows])
    return float(got[:, 0].mean()), float(got[:, 1].mean())


def only(key: str) -> Ranker:
    return lambda r: [c for c, _ in r[key]]


def relative(key: str, power: float = 2.0) -> Ranker:
    def rank(r: Row) -> list[int]:
        hits = fuse(r["dense"], r[key], 50, dense_weight=r["trust"] ** power)
        return [h.chunk_id for h in hits]

    return rank


def rrf(key: str, k: float, wd: float, power: float = 2.0) -> Ranker:
    def rank(r: Row) -> list[int]:
        w = wd * r["trust"] ** power
        hits = fuse(r["dense"], r[key], 50, dense_weight=w, fusion="rrf", rrf_k=k)
        return [h.chunk_id for h in hits]

    return rank


def convex(key: str, alpha: float, half: float, power: float = 2.0) -> Ranker:
    """kb.fusion's ``convex``: the probe-scaled cosine (clipped to [0, 1]) and the
    saturated BM25, the dense share scaled by trust^power."""

    def rank(r: Row) -> list[int]:
        calibrated = [(c, r["z"][c]) for c, _ in r["dense"]]
        hits = fuse(
            r["dense"],
            r[key],
            50,
            dense_weight=r["trust"] ** power,
            fusion="convex",
            dense_calibrated=calibrated,
            convex_alpha=alpha,
            bm25_half=half,
        )
        return [h.chunk_id for h in hits]

    return rank


def calibrated(key: str, weight: float, half: float) -> Ranker:
    """kb/retrieval.py's ``calibrated`` fusion: every candidate of both lists by the score
    model's log-odds (kb/scoring.py) plus ``weight`` x the saturated BM25 score."""

    def rank(r: Row) -> list[int]:
        bm25 = dict(r[key])
        ids = list(dict.fromkeys([c for c, _ in r["dense"]] + list(bm25)))
        z = np.clip(np.array([r["z"][c] for c in ids]), -1.0, 2.0)
        cov = np.array([r["cov"][c] for c in ids])
        x = MODEL.logits(z, r["trust"], cov, r["script"]) + weight * np.array(
            [bm25_confidence(bm25.get(c, 0.0), half) for c in ids]
        )
        return [ids[j] for j in sorted(range(len(ids)), key=lambda j: (-x[j], ids[j]))]

    return rank


def grid() -> dict[str, dict[str, Ranker]]:
    out: dict[str, dict[str, Ranker]] = {
        "rrf": {
            f"k={k:g} wd={wd:g}": rrf("stem", k, wd)
            for k in (1, 5, 10, 20, 60)
            for wd in (0.5, 0.75, 1.0, 1.5, 2.0)
        },
        "calibrated": {
            f"bm25 weight={w:g} half={h:g}": calibrated("stem", w, h)
            for w in (0, 1, 2, 4, 8, 16)
            for h in (2, 4, 8, 16)
        },
        "convex": {
            f"alpha={a:g} half={h:g}": convex("stem", a, h)
            for a in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
            for h in (1, 2, 4, 8, 16)
        },
    }
    return out


def choose(dev: list[Row], sets: list[str], options: dict[str, Ranker]) -> str:
    """The option with the best worst-set dev margin over max(dense, keyword), ties
    broken by the mean dev recall@5 and then nDCG@10."""
    base = {
        n: max(
            evaluate([r for r in dev if r["set"] == n], only("dense"))[0],
            evaluate([r for r in dev if r["set"] == n], only("stem"))[0],
        )
        for n in sets
    }
    best: tuple[float, float, float, str] | None = None
    for label, fn in options.items():
        per = [evaluate([r for r in dev if r["set"] == n], fn) for n in sets]
        worst = min(p[0] - base[n] for p, n in zip(per, sets, strict=True))
        key = (worst, float(np.mean([p[0] for p in per])), float(np.mean([p[1] for p in per])))
        if best is None or key > best[:3]:
            best = (*key, label)
    assert best is not None
    return best[3]


async def main() -> None:
    from kb.providers import minilm_provider

    provider = minilm_provider()
    vecs, _ = await provider.embed("minilm", probe_sentences())
    probe = probe_from_vectors(np.asarray(vecs))
    wanted = [s for s in (sys.argv[1].split(",") if len(sys.argv) > 1 else []) if s]
    rows = []
    for name in set_names():
        if wanted and name not in wanted:
            continue
        cache = SETS / f"fusion-features-{name}.pkl"
        if cache.exists():
            rows += pickle.loads(cache.read_bytes())  # noqa: S301 - our own cache file
            continue
        got = await dump(name, provider, probe)
        cache.write_bytes(pickle.dumps(got))
        rows += got
        print(f"dumped {name}", flush=True)
    sets = sorted({r["set"] for r in rows})
    dev = [r for r in rows if r["split"] == "dev"]
    chosen = {m: choose(dev, sets, opts) for m, opts in grid().items()}
    methods: dict[str, Ranker] = {
        "dense": only("dense"),
        "keyword (unstemmed)": only("plain"),
        "keyword": only("stem"),
        "relative (unstemmed, before)": relative("plain"),
        "relative": relative("stem"),
        **{f"{m} {label}": grid()[m][label] for m, label in chosen.items()},
    }
    table: dict[str, Any] = {}
    print(f"{'set':<13}{'split':<6}{'method':<36}{'R@5':>7}{'nDCG@10':>9}")
    for n in sets:
        for split in ("dev", "test"):
            sub = [r for r in rows if r["set"] == n and r["split"] == split]
            for label, fn in methods.items():
                r5, nd = evaluate(sub, fn)
                table.setdefault(n, {}).setdefault(split, {})[label] = {
                    "recall@5": round(r5, 3),
                    "ndcg@10": round(nd, 3),
                }
                print(f"{n:<13}{split:<6}{label:<36}{r5:>7.3f}{nd:>9.3f}")
    out = ROOT / "bench" / "results" / "kb_fusion.json"
    out.write_text(json.dumps({"chosen_on_dev": chosen, "results": table}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
