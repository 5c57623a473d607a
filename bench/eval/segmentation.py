"""Chinese keyword search: word segmentation (jieba) against overlapping character
bigrams (what the FTS index stores), queries and documents tokenized alike, plain BM25
(k1 1.2, b 0.75) over whole documents of each Chinese set. Prints recall@5 / MRR@10 per
tokenizer and split and writes bench/results/segmentation.json.

    python bench/eval/build.py && python bench/eval/segmentation.py
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from bench.eval.stores import load_set, set_names  # noqa: E402

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_PUNCT = re.compile(r"^[\W_]+$")


def bigrams(text: str) -> list[str]:
    out: list[str] = []
    for run in _CJK.findall(text):
        out += [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]
    out += [w.lower() for w in re.findall(r"[A-Za-z0-9]+", text)]
    return out


def words(text: str) -> list[str]:
    import jieba

    return [w.lower() for w in jieba.cut_for_search(text) if w.strip() and not _PUNCT.match(w)]


def both(text: str) -> list[str]:
    return bigrams(text) + ["w:" + w for w in words(text)]


def bm25_rank(docs: dict[str, list[str]], query: list[str]) -> list[str]:
    n = len(docs)
    avg = sum(len(t) for t in docs.values()) / max(1, n)
    df: Counter[str] = Counter()
    for toks in docs.values():
        df.update(set(toks))
    scores: dict[str, float] = {}
    for doc, toks in docs.items():
        tf = Counter(toks)
        s = 0.0
        for term in set(query):
            if tf[term]:
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                s += idf * tf[term] * 2.2 / (tf[term] + 1.2 * (0.25 + 0.75 * len(toks) / avg))
        scores[doc] = s
    return sorted(scores, key=lambda d: -scores[d])


def evaluate(name: str, tok: Callable[[str], list[str]]) -> dict[str, dict[str, float]]:
    data = load_set(name)
    docs = {d: tok(t) for d, t in data["docs"].items()}
    out: dict[str, list[tuple[float, float]]] = {"dev": [], "test": []}
    for item in data["queries"]:
        ranked = bm25_rank(docs, tok(item["q"]))
        rel = set(item["relevant"])
        r5 = float(any(d in rel for d in ranked[:5]))
        mrr = next((1 / (i + 1) for i, d in enumerate(ranked[:10]) if d in rel), 0.0)
        out[item["split"]].append((r5, mrr))
    return {
        s: {
            "recall@5": round(sum(r for r, _ in v) / len(v), 3),
            "mrr@10": round(sum(m for _, m in v) / len(v), 3),
        }
        for s, v in out.items()
        if v
    }


def main() -> None:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    t = time.perf_counter()
    jieba.initialize()
    init_s = time.perf_counter() - t
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    print(f"{'set':<14}{'split':<6}{'tokenizer':<10}{'recall@5':>9}{'mrr@10':>8}")
    for name in set_names():
        if not name.startswith("zh-"):
            continue
        results[name] = {}
        for label, tok in (("bigrams", bigrams), ("jieba", words), ("both", both)):
            res = evaluate(name, tok)
            results[name][label] = res
            for split, m in res.items():
                print(f"{name:<14}{split:<6}{label:<10}{m['recall@5']:>9.3f}{m['mrr@10']:>8.3f}")
    out = {"jieba_init_s": round(init_s, 2), "results": results}
    path = ROOT / "bench" / "results" / "segmentation.json"
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False))
    print(f"jieba dictionary load: {init_s:.2f}s")


if __name__ == "__main__":
    main()
