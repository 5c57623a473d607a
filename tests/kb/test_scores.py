"""The reported score is absolute (kb/scoring.py): it depends on the query and the chunk
alone, with the real MiniLM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kb.providers import minilm_provider
from kb.retrieval import SearchQuery
from kb.service import KnowledgeBase

DOCS = {
    "pump.md": "To reset the water pump, hold the red button for ten seconds until the light "
    "blinks twice.",
    "pump2.md": "Resetting the water pump: hold the red button down for ten seconds; the light "
    "blinks twice.",
    "billing.md": "Refunds take five to seven business days to reach your bank account.",
    "museum.md": "The city museum opens at nine in the morning and is closed on Mondays.",
    "zh.md": "退款通常需要五到七个工作日才能到账。发票在每月第一个工作日发送。",
}
NOISE = [
    "Volcanic soil is rich in minerals and holds water well.",
    "The orchestra rehearses the symphony every Thursday evening.",
    "Penguins huddle together to survive the Antarctic winter.",
    "火山土壤富含矿物质。",
]
PUMP_Q = "How do I reset the water pump?"


@pytest.fixture
async def kb(tmp_path: Path) -> AsyncIterator[tuple[KnowledgeBase, str]]:
    base = KnowledgeBase.open_sqlite(tmp_path, minilm_provider())
    cid = (await base.create_store("manuals", "minilm")).id
    for name, text in DOCS.items():
        await base.add_text(cid, text, title=name)
    yield base, cid
    base.close()


async def _scores(base: KnowledgeBase, cid: str, q: str, k: int, **kw: Any) -> dict[str, float]:
    out = await base.search(cid, SearchQuery((q,), k, **kw))
    return {h.filename: h.score for h in out.hits}


async def test_a_score_does_not_depend_on_the_other_hits(kb: Any) -> None:
    base, cid = kb
    many = await _scores(base, cid, PUMP_Q, 20)
    one = await _scores(base, cid, PUMP_Q, 1)
    (name,) = one
    assert name in ("pump.md", "pump2.md")
    assert one[name] == many[name]
    # Two near-identical exact answers both score high: neither is halved by the other.
    assert many["pump.md"] >= 0.5 and many["pump2.md"] >= 0.5
    assert all(0.0 <= s <= 1.0 for s in many.values())
    for text in NOISE:
        await base.add_text(cid, text, title="noise.md")
    after = await _scores(base, cid, PUMP_Q, 20)
    assert after["pump.md"] == many["pump.md"] and after["pump2.md"] == many["pump2.md"]


async def test_strong_matches_score_high_and_unrelated_ones_low(kb: Any) -> None:
    base, cid = kb
    strong = await _scores(base, cid, "How long do refunds take to reach my bank?", 5)
    assert strong["billing.md"] >= 0.5
    assert strong.get("museum.md", 0.0) < 0.2
    off = await _scores(base, cid, "What is the capital of Peru?", 10)
    assert off and max(off.values()) < 0.2, off
    zh = await _scores(base, cid, "退款需要几个工作日到账？", 5)
    assert zh["zh.md"] >= 0.5 and zh.get("museum.md", 0.0) < 0.2
    # The threshold reads the same score.
    kept = await _scores(base, cid, PUMP_Q, 10, score_threshold=0.5)
    assert set(kept) == {"pump.md", "pump2.md"}


async def test_keyword_and_dense_modes_score_on_the_same_scale(kb: Any) -> None:
    base, cid = kb
    dense = await _scores(base, cid, PUMP_Q, 3, mode="dense")
    keyword = await _scores(base, cid, PUMP_Q, 3, mode="keyword")
    assert dense["pump.md"] >= 0.5 and keyword["pump.md"] >= 0.5
    assert max(dense.get("museum.md", 0.0), keyword.get("museum.md", 0.0)) < 0.2


async def test_a_chinese_query_leans_on_keywords_with_an_english_embedder(kb: Any) -> None:
    base, _cid = kb
    probe = await base.retriever.probe("minilm")
    assert probe.trust("latin") > 0.9 and probe.trust("cjk") < 0.7
