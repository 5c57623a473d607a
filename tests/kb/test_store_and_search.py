"""KB core: the SQLite backend with FTS5 (words + CJK bigrams), FAISS index, hybrid fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.base import ModelInfo
from engines.fake import FakeEmbedder
from kb.backend import CandidateQuery
from kb.chunking import ChunkingStrategy, chunk_text
from kb.fusion import Hit, fuse, rrf
from kb.index import VectorIndex
from kb.store import SqliteBackend
from kb.store.schema import MIGRATIONS
from kb.types import ChunkRecord, Collection

EMB = FakeEmbedder(ModelInfo("fake", "embedding", "fake"), {"dimensions": 64})

DOCS = {
    "f-en-1": "The Eiffel Tower is in Paris. It was finished in 1889 for the World's Fair.",
    "f-en-2": "Bananas are rich in potassium. They grow in tropical climates.",
    "f-en-3": "RWKV is a recurrent network with a constant-size state per layer.",
    "f-zh-1": "长城位于中国北方，全长两万多公里，是世界文化遗产。",
    "f-zh-2": "熊猫主要生活在四川的竹林里，以竹子为主要食物。",
    "f-zh-3": "上海是中国最大的经济中心城市之一，拥有繁忙的港口。",
}


@pytest.fixture
def kb(tmp_path: Path) -> tuple[SqliteBackend, VectorIndex]:
    store = SqliteBackend(tmp_path)
    store.create_collection(Collection("vs_1", "demo", "fake", 64, {}, 0))
    records = [ChunkRecord(fid, 0, text, len(text.split())) for fid, text in DOCS.items()]
    vectors = EMB.embed([r.text for r in records])
    assert store.add_chunks("vs_1", records, vectors, model="fake") == len(records)
    return store, store.indexes.get("vs_1")


def _file_of(store: SqliteBackend, chunk_id: int) -> str:
    return store.chunks([chunk_id])[chunk_id].file_id


def hybrid_search(store: SqliteBackend, q: str, k: int) -> list[Hit]:
    [cands] = store.candidates(
        "vs_1",
        [CandidateQuery(q, EMB.embed([q])[0])],
        50,
        allowed_files=None,
        dense=True,
        keyword=True,
    )
    return fuse(cands.dense, cands.keyword, k)


def test_chinese_text_is_found_by_keyword(kb: tuple[SqliteBackend, VectorIndex]) -> None:
    store, _ = kb
    for query, expected in (
        ("熊猫吃什么竹子", "f-zh-2"),
        ("长城有多长", "f-zh-1"),
        ("上海的港口", "f-zh-3"),
    ):
        hits = store.keyword_search("vs_1", query, 3)
        assert hits and _file_of(store, hits[0][0]) == expected, query


def test_english_keyword_and_hybrid_search(kb: tuple[SqliteBackend, VectorIndex]) -> None:
    store, _ = kb
    q = "When was the Eiffel Tower finished?"
    hits = hybrid_search(store, q, 3)
    assert _file_of(store, hits[0].chunk_id) == "f-en-1"
    assert hits[0].dense_rank is not None and hits[0].keyword_rank is not None


def test_reingesting_the_same_text_adds_nothing(kb: tuple[SqliteBackend, VectorIndex]) -> None:
    store, _ = kb
    before = store.count("vs_1")
    rec = ChunkRecord("f-en-1-again", 0, DOCS["f-en-1"], 10)
    assert store.add_chunks("vs_1", [rec], EMB.embed([rec.text]), model="fake") == 0
    assert store.count("vs_1") == before


def test_delete_removes_chunks_from_fts_and_faiss(kb: tuple[SqliteBackend, VectorIndex]) -> None:
    store, index = kb
    [gone] = [
        c for c, f in store.chunk_owners(list(store.chunk_ids("vs_1"))).items() if f == ["f-zh-2"]
    ]
    assert store.delete_file_chunks("vs_1", "f-zh-2") == 1
    assert store.keyword_search("vs_1", "熊猫吃什么竹子", 5) == []
    assert gone not in index.ids()
    ids, _ = store.vectors("vs_1")
    assert set(ids.tolist()) == index.ids()


def test_index_rebuilds_from_sqlite_and_saves_atomically(
    kb: tuple[SqliteBackend, VectorIndex], tmp_path: Path
) -> None:
    store, index = kb
    ids, vectors = store.vectors("vs_1")
    rebuilt = VectorIndex(64)
    rebuilt.add(ids, vectors)
    q = EMB.embed(["potassium bananas"])[0]
    assert rebuilt.search(q, 3)[1].tolist() == index.search(q, 3)[1].tolist()
    path = tmp_path / "vs_1.faiss"
    rebuilt.save(path)
    assert not path.with_name(path.name + ".tmp").exists()
    loaded = VectorIndex.load(path, 64)
    assert loaded.ids() == set(ids.tolist())


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_ann_index_matches_exact_search_on_clustered_vectors(kind: str) -> None:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((32, 64)).astype(np.float32)
    data = centers[rng.integers(0, 32, 5000)] + 0.3 * rng.standard_normal((5000, 64))
    data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(1, 5001)
    exact = VectorIndex(64)
    exact.add(ids, data)
    ann = VectorIndex(64, nprobe=8, ann=kind)
    ann.build_ann(ids, data)
    assert ann.kind == kind and len(ann) == 5000
    queries = data[:50] + 0.05 * rng.standard_normal((50, 64)).astype(np.float32)
    _, e = exact.search(queries, 10)
    _, a = ann.search(queries, 10)
    recall = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(e, a, strict=True)])
    assert recall >= 0.9


def test_rrf_rewards_agreement() -> None:
    fused = rrf([[1, 2, 3], [3, 1, 4]])
    assert [c for c, _ in fused][:2] == [1, 3]


def test_chunking_respects_size_overlap_and_cjk_sentences() -> None:
    def count(texts: list[str]) -> list[int]:
        return [len(t.split()) + sum(1 for ch in t if "\u4e00" <= ch <= "\u9fff") for t in texts]

    strategy = ChunkingStrategy(max_chunk_size_tokens=100, chunk_overlap_tokens=20)
    text = " ".join(f"Sentence number {i} says something useful." for i in range(60))
    chunks = chunk_text(text, strategy, count)
    assert len(chunks) > 3
    assert all(c.token_count <= 100 for c in chunks)
    # Overlap: each chunk starts with the sentence that ended the previous one.
    assert chunks[1].text.split(".")[0] in chunks[0].text
    zh = "".join(f"第{i}句话讲了一个道理。" for i in range(80))
    zh_chunks = chunk_text(zh, strategy, count)
    assert all(c.text.endswith("。") for c in zh_chunks)
    assert all(c.token_count <= 100 for c in zh_chunks)
    with pytest.raises(ValueError):
        ChunkingStrategy(max_chunk_size_tokens=50)
    with pytest.raises(ValueError):
        ChunkingStrategy(max_chunk_size_tokens=200, chunk_overlap_tokens=150)


def test_migrations_are_applied_once(tmp_path: Path) -> None:
    SqliteBackend(tmp_path).close()
    store = SqliteBackend(tmp_path)
    rows = list(store.conn.execute("SELECT id FROM _migrations"))
    assert rows == [(n,) for n in range(1, len(MIGRATIONS) + 1)]
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
