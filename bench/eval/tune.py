"""Fit the retrieval defaults on the evaluation sets' **dev** queries only, and show what
they give on test: the score model (kb/scoring.py: bias and weights of the logistic
score) and the fusion's dense weight as a function of the probe's trust.

It dumps, per query, the candidates of both signals with their store-independent
features (cosine, probe z, coverage) and their ranks, then searches the parameters
offline. Run after bench/eval/build.py:

    python bench/eval/tune.py
"""

from __future__ import annotations

import asyncio
import math
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from bench.eval.stores import SETS, load_set, open_store, set_names  # noqa: E402
from kb.backend import CandidateQuery  # noqa: E402
from kb.config import KnowledgeSettings  # noqa: E402
from kb.probe import Probe, probe_from_vectors, probe_sentences  # noqa: E402
from kb.scoring import coverage, query_terms, script_of  # noqa: E402

N = 50


async def dump(name: str, provider: Any, probe: Probe) -> list[dict[str, Any]]:
    data = load_set(name)
    kb, cid, files = await open_store(name, data, provider, KnowledgeSettings())
    rows = []
    for item in data["queries"]:
        vec, _ = await provider.embed("minilm", [item["q"]])
        (cand,) = kb.backend.candidates(
            cid,
            [CandidateQuery(item["q"], vec[0])],
            N,
            allowed_files=None,
            dense=True,
            keyword=True,
        )
        ids = list(dict.fromkeys([c for c, _ in cand.dense] + [c for c, _ in cand.keyword]))
        got, mat = kb.backend.vectors(cid, set(ids))  # type: ignore[attr-defined]
        cos = dict(zip(got.tolist(), (mat @ vec[0]).tolist(), strict=True))
        chunks = kb.backend.chunks(ids)
        terms = query_terms(item["q"])
        script = script_of(item["q"])
        d_rank = {c: r for r, (c, _) in enumerate(cand.dense, 1)}
        k_rank = {c: r for r, (c, _) in enumerate(cand.keyword, 1)}
        k_score = dict(cand.keyword)
        feats = []
        for c in ids:
            feats.append(
                {
                    "doc": files[chunks[c].file_id],
                    "cos": cos[c],
                    "z": float(probe.z(cos[c], script)),
                    "cov": coverage(terms, chunks[c].text),
                    "bm25": k_score.get(c, 0.0),
                    "d_rank": d_rank.get(c),
                    "k_rank": k_rank.get(c),
                }
            )
        rows.append(
            {
                "set": name,
                "split": item["split"],
                "kind": item["kind"],
                "relevant": set(item["relevant"]),
                "script": script,
                "trust": probe.trust(script),
                "cands": feats,
            }
        )
    kb.close()
    return rows


def _docs(order: list[int], cands: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(cands[i]["doc"] for i in order))


def _recall5(rows: list[dict[str, Any]], rank: Any) -> float:
    hits = 0
    for r in rows:
        docs = _docs(rank(r), r["cands"])[:5]
        hits += any(d in r["relevant"] for d in docs)
    return hits / max(1, len(rows))


def rank_dense(r: dict[str, Any]) -> list[int]:
    return sorted(
        (i for i, c in enumerate(r["cands"]) if c["d_rank"]), key=lambda i: r["cands"][i]["d_rank"]
    )


def rank_keyword(r: dict[str, Any]) -> list[int]:
    return sorted(
        (i for i, c in enumerate(r["cands"]) if c["k_rank"]), key=lambda i: r["cands"][i]["k_rank"]
    )


def rank_fused(dense_w: Any, k: float) -> Any:
    """Weighted reciprocal-rank fusion, the dense weight a function of the probe's trust."""

    def rank(r: dict[str, Any]) -> list[int]:
        w = dense_w(r["trust"])
        score = []
        for c in r["cands"]:
            s = 0.0
            if c["d_rank"]:
                s += w / (k + c["d_rank"])
            if c["k_rank"]:
                s += 1.0 / (k + c["k_rank"])
            score.append(s)
        return sorted(range(len(score)), key=lambda i: -score[i])

    return rank


def fit_score(rows: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Logistic regression of 'this chunk's document is relevant' on (trust * z, cov)
    over the top candidates of dev queries (Newton steps, a little L2)."""
    x, y = [], []
    for r in rows:
        for c in r["cands"][:20]:
            x.append([1.0, r["trust"] * c["z"], c["cov"]])
            y.append(1.0 if c["doc"] in r["relevant"] else 0.0)
    X, Y = np.array(x), np.array(y)
    w = np.zeros(3)
    for _ in range(50):
        p = 1 / (1 + np.exp(-X @ w))
        grad = X.T @ (p - Y) + 1e-3 * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + 1e-3 * np.eye(3)
        w -= np.linalg.solve(hess, grad)
    return float(w[0]), float(w[1]), float(w[2])


async def main() -> None:
    from kb.providers import minilm_provider

    provider = minilm_provider()
    vecs, _ = await provider.embed("minilm", probe_sentences())
    probe = probe_from_vectors(vecs)
    cache = SETS / "features.pkl"
    if cache.exists():
        rows = pickle.loads(cache.read_bytes())  # noqa: S301 - our own cache file
    else:
        rows = []
        for name in set_names():
            rows += await dump(name, provider, probe)
            print(f"dumped {name}", flush=True)
        cache.write_bytes(pickle.dumps(rows))
    dev = [r for r in rows if r["split"] == "dev"]
    for script in ("latin", "cjk"):
        bias, wd, wl = fit_score([r for r in dev if r["script"] == script])
        print(f"score model {script} (dev): bias={bias:.3f} w_dense={wd:.3f} w_lex={wl:.3f}")
    # Fusion: pick (alpha, k) on dev by the worst per-set margin over max(dense, keyword).
    names = sorted({r["set"] for r in rows})
    best: tuple[float, float, float] | None = None
    for alpha in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0):
        for power in (1.0, 2.0, 4.0):
            for k in (5.0, 20.0, 60.0):
                fn = rank_fused(lambda t, a=alpha, p=power: a * t**p, k)
                margins = []
                for n in names:
                    sub = [r for r in dev if r["set"] == n]
                    top = max(_recall5(sub, rank_dense), _recall5(sub, rank_keyword))
                    margins.append(_recall5(sub, fn) - top)
                worst = min(margins)
                if best is None or worst > best[0]:
                    best = (worst, alpha, power, k)  # type: ignore[assignment]
    assert best is not None
    worst, alpha, power, k = best  # type: ignore[misc]
    print(
        f"fusion (dev): dense weight = {alpha} * trust^{power}, rrf k = {k}, worst margin {worst:+.3f}"
    )
    fn = rank_fused(lambda t: alpha * t**power, k)
    print(f"{'set':<14}{'split':<6}{'dense':>8}{'keyword':>9}{'hybrid':>8}")
    for n in names:
        for split in ("dev", "test"):
            sub = [r for r in rows if r["set"] == n and r["split"] == split]
            print(
                f"{n:<14}{split:<6}{_recall5(sub, rank_dense):>8.3f}"
                f"{_recall5(sub, rank_keyword):>9.3f}{_recall5(sub, fn):>8.3f}"
            )
    for script in ("latin", "cjk"):
        print(f"probe {script}: trust {probe.trust(script):.3f}")
    _ = math


if __name__ == "__main__":
    asyncio.run(main())
