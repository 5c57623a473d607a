"""Fusion is never worse than the better of its parts (recall@5) on the project's own
English and Chinese sets, with the real MiniLM (bench/kb_eval.py reports every set)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.eval.build import authored
from bench.kb_eval import evaluate
from kb.config import KnowledgeSettings
from kb.providers import minilm_provider


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_hybrid_recall_is_at_least_the_better_part(lang: str, tmp_path: Path) -> None:
    docs, queries = authored(lang)
    res = await evaluate(
        f"{lang}-authored",
        {"docs": docs, "queries": queries},
        minilm_provider(),
        None,
        KnowledgeSettings(),
        root=tmp_path,
    )
    for split in ("dev", "test"):
        best_part = max(res["dense"][split]["recall@5"], res["keyword"][split]["recall@5"])
        assert res["hybrid"][split]["recall@5"] >= best_part, (split, res)
    if lang == "zh":
        # The English-trained dense model is weak on Chinese; keywords carry it.
        assert res["keyword"]["test"]["recall@5"] > res["dense"]["test"]["recall@5"]
    # Calibration: hits the score calls likely (>= 0.5) are mostly relevant.
    assert res["calibration"]["precision_at_score_0.5"] >= 0.6, res["calibration"]
