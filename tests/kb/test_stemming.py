"""Stemmed English keyword search on both backends: a word finds its other forms, CJK
queries match as before, and a store made before the stemmed index existed is rebuilt
in the background while it keeps answering searches."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from engines.base import ModelInfo
from engines.fake import FakeEmbedder
from kb.providers import LocalProvider
from kb.retrieval import SearchQuery
from kb.service import KnowledgeBase
from tests.conftest import kb_settings_for_test, open_test_kb

pytestmark = pytest.mark.usefixtures("kb_backend")

DOCS = {
    "setup": "Run the script to install the package on every server.",
    "cats": "Cats sleep for most of the day and hunt at night.",
    "panda": "熊猫主要生活在四川的竹林里，以竹子为主要食物。",
    "wall": "长城位于中国北方，全长两万多公里，是世界文化遗产。",
}


def _provider() -> LocalProvider:
    engine = FakeEmbedder(ModelInfo("fake-embed", "embedding", "fake"), {"dimensions": 64})
    return LocalProvider(engine, 64, 256)


async def _store(directory: Path) -> tuple[KnowledgeBase, str, dict[str, str]]:
    kb = open_test_kb(directory, _provider())
    cid = (await kb.create_store("docs", "fake-embed")).id
    names = {}
    for name, text in DOCS.items():
        row = await kb.add_text(cid, text, title=f"{name}.txt")
        names[row.file_id] = name
    return kb, cid, names


async def _keyword(kb: KnowledgeBase, cid: str, names: dict[str, str], q: str) -> list[str]:
    out = await kb.search(cid, SearchQuery((q,), 5, mode="keyword"))
    return [names[h.file_id] for h in out.hits]


def _unstem(directory: Path) -> None:
    """Put the store back to the schema released before stemming (its data kept)."""
    if os.environ.get("RWKV_RAG_KNOWLEDGE__BACKEND") == "postgres":
        import psycopg

        with psycopg.connect(os.environ["RWKV_RAG_KNOWLEDGE__POSTGRES__DSN"]) as conn:
            for sql in (
                "DROP TRIGGER chunks_stem ON chunks",
                "DROP FUNCTION kb_chunks_stem()",
                "DROP INDEX IF EXISTS chunks_stem_tsv",
                "ALTER TABLE chunks DROP COLUMN stem_tsv, DROP COLUMN stem_tsv_len",
                "DROP TABLE keyword_rebuild",
                "DROP TEXT SEARCH CONFIGURATION kb_stem",
                "DROP TEXT SEARCH DICTIONARY kb_english_stem",
                "DELETE FROM _migrations WHERE id = 2",
            ):
                conn.execute(sql)  # type: ignore[arg-type]
        return
    conn = sqlite3.connect(directory / "kb.sqlite")
    with conn:
        for sql in (
            "DROP TRIGGER chunks_stem_ai",
            "DROP TRIGGER chunks_stem_ad",
            "DROP TABLE chunks_stem",
            "DROP TABLE keyword_rebuild",
            "DELETE FROM _migrations WHERE id = 5",
        ):
            conn.execute(sql)
    conn.close()


async def test_installing_finds_a_chunk_that_says_install(tmp_path: Path) -> None:
    kb, cid, names = await _store(tmp_path)
    try:
        assert await _keyword(kb, cid, names, "installing") == ["setup"]
        assert await _keyword(kb, cid, names, "sleeping cat hunting") == ["cats"]
    finally:
        kb.close()


async def test_a_chinese_query_still_matches_its_chunk(tmp_path: Path) -> None:
    kb, cid, names = await _store(tmp_path)
    try:
        assert (await _keyword(kb, cid, names, "熊猫吃什么竹子"))[0] == "panda"
        assert (await _keyword(kb, cid, names, "长城有多长"))[0] == "wall"
    finally:
        kb.close()


async def test_stemming_can_be_turned_off(tmp_path: Path) -> None:
    kb, cid, names = await _store(tmp_path)
    kb.close()
    plain = KnowledgeBase.open_backend(
        tmp_path, _provider(), kb_settings_for_test(keyword_stemming=False)
    )
    try:
        assert await _keyword(plain, cid, names, "installing") == []
        assert await _keyword(plain, cid, names, "install") == ["setup"]
    finally:
        plain.close()


async def test_an_old_store_keeps_answering_during_the_rebuild_then_finds_stems(
    tmp_path: Path,
) -> None:
    kb, cid, names = await _store(tmp_path)
    kb.close()
    _unstem(tmp_path)
    old = open_test_kb(tmp_path, _provider())
    try:
        backend = old.backend
        # The migration ran at open; the stored chunks are not in the stemmed index yet.
        assert await _keyword(old, cid, names, "installing") == []
        steps = 0
        while not backend.stemmed_rebuild_step(1):  # type: ignore[attr-defined]
            steps += 1
            assert await _keyword(old, cid, names, "install") == ["setup"]
            assert (await _keyword(old, cid, names, "熊猫吃什么竹子"))[0] == "panda"
        assert steps >= len(DOCS) - 1
        assert await _keyword(old, cid, names, "installing") == ["setup"]
        # A chunk added after the rebuild is in the stemmed index too.
        row = await old.add_text(cid, "The dogs were barking loudly.", title="dogs.txt")
        names[row.file_id] = "dogs"
        assert await _keyword(old, cid, names, "barks dog") == ["dogs"]
    finally:
        old.close()


async def test_the_rebuild_runs_in_the_background_from_start(tmp_path: Path) -> None:
    kb, cid, names = await _store(tmp_path)
    kb.close()
    _unstem(tmp_path)
    old = open_test_kb(tmp_path, _provider())
    try:
        await old.start()
        await old.drain()
        assert await _keyword(old, cid, names, "installing") == ["setup"]
        # Deleting a file removes its chunks from the rebuilt index as well.
        fid = next(f for f, n in names.items() if n == "setup")
        await old.detach(cid, fid)
        assert await _keyword(old, cid, names, "installing") == []
        assert await _keyword(old, cid, names, "cat") == ["cats"]
    finally:
        await old.stop()
        old.close()
