"""BGE-M3's lexical (sparse) weights as a third retrieval signal, on the generated
BGE-M3-shaped checkpoint: the weights stored are FlagEmbedding's own, and the sparse
head's weights really change the ranking."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from engines.base import ModelInfo
from engines.bge import BGEEmbedder
from kb.providers import LocalProvider
from kb.retrieval import SearchQuery
from kb.service import KnowledgeBase

DOCS = {
    "cats.txt": "the cat sat on the mat with another cat",
    "dogs.txt": "a dog runs in the park every morning",
    "rain.txt": "heavy rain fell on the city all night",
    "tea.txt": "green tea and black tea are brewed differently",
    "zh.txt": "你好 世界 今天 天气 很好",
    "train.txt": "the train leaves the station at noon",
}
QUERY = "the cat and the tea in the rain"


def _engine(path: Path) -> BGEEmbedder:
    return BGEEmbedder(ModelInfo("tiny-m3", "embedding", "bge"), path, {})


def _checkpoint(tiny_dir: Path, tmp: Path, seed: int | None) -> Path:
    """A copy of the tiny BGE-M3, with its sparse head redrawn when ``seed`` is given."""
    out = tmp / f"m3-{seed}"
    if out.exists():
        return out
    shutil.copytree(tiny_dir / "tiny-bge-m3", out)
    if seed is not None:
        torch.manual_seed(seed)
        head = torch.nn.Linear(32, 1)
        torch.save(head.state_dict(), out / "sparse_linear.pt")
    return out


async def _ranking(path: Path, data: Path, mode: str) -> list[tuple[str, float | None]]:
    engine = _engine(path)
    kb = KnowledgeBase.open_sqlite(data, LocalProvider(engine, engine.dimensions, 64))
    try:
        cid = (await kb.create_store("m3", "tiny-m3")).id
        for name, text in DOCS.items():
            await kb.add_text(cid, text, title=name)
        out = await kb.search(cid, SearchQuery((QUERY,), 6, mode=mode))  # type: ignore[arg-type]
        return [(h.filename, h.sparse_score) for h in out.hits]
    finally:
        kb.close()


def test_lexical_weights_are_flagembeddings_own(tiny_dir: Path) -> None:
    engine = _engine(tiny_dir / "tiny-bge-m3")
    texts = list(DOCS.values())
    ours = engine.encode(texts, 64).sparse
    assert ours is not None and all(ours)
    theirs = engine._flag.encode(texts, return_sparse=True, return_dense=False)["lexical_weights"]
    for mine, ref in zip(ours, theirs, strict=True):
        assert set(mine) == {int(t) for t in ref}
        for t, w in ref.items():
            assert mine[int(t)] == pytest.approx(float(w), rel=1e-3, abs=1e-5)


async def test_the_sparse_head_changes_the_ranking(tiny_dir: Path, tmp_path: Path) -> None:
    first = await _ranking(_checkpoint(tiny_dir, tmp_path, None), tmp_path / "a", "sparse")
    other = await _ranking(_checkpoint(tiny_dir, tmp_path, 7), tmp_path / "b", "sparse")
    assert first and other
    assert all(s is not None and s > 0 for _, s in first)
    assert [n for n, _ in first] != [n for n, _ in other]
    hybrid = await _ranking(_checkpoint(tiny_dir, tmp_path, None), tmp_path / "c", "hybrid")
    assert any(s is not None for _, s in hybrid)
