"""KnowledgeBase end to end on the real MiniLM: ingest, hybrid search, persistence, rebuild."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.errors import InvalidRequestError, NotFoundError
from engines.base import ModelInfo, Tokenizer
from engines.bge import BGEEmbedder
from engines.paths import resolve_model_path
from kb.chunking import ChunkingStrategy
from kb.retrieval import SearchQuery
from kb.service import KnowledgeBase
from kb.types import PageRequest
from tests.conftest import open_test_kb

pytestmark = pytest.mark.usefixtures("kb_backend")


class MiniLMProvider:
    def __init__(self) -> None:
        self.engine = BGEEmbedder(
            ModelInfo("minilm", "embedding", "bge"),
            resolve_model_path("builtin:all-minilm-l6-v2"),
            {"pooling": "mean"},
        )

    async def embed(self, model: str, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        out = self.engine.encode(texts, 256)
        return out.vectors, out.token_counts

    def tokenizer(self, model: str) -> Tokenizer:
        return self.engine.tokenizer

    def dimensions(self, model: str) -> int:
        return 384

    def max_tokens(self, model: str) -> int:
        return 256


@pytest.fixture(scope="module")
def provider() -> Iterator[MiniLMProvider]:
    yield MiniLMProvider()


MANUAL = {
    "pump.md": "To reset the water pump, hold the red button for ten seconds until the light "
    "blinks twice. The pump restarts after one minute.",
    "billing.md": "Invoices are sent on the first business day of each month. Refunds take "
    "five to seven days to reach your bank account.",
    "travel.md": "The museum opens at nine in the morning and closes at six in the evening. "
    "Tickets can be bought online.",
    "zh.md": "退款通常需要五到七个工作日才能到账。发票在每月第一个工作日发送。",
}


SMALL = ChunkingStrategy(100, 20)


async def _search(base: KnowledgeBase, cid: str, q: str, k: int = 10, **kw: Any) -> list[Any]:
    return (await base.search(cid, SearchQuery((q,), k, **kw))).hits


@pytest.fixture
async def kb(tmp_path: Path, provider: MiniLMProvider) -> AsyncIterator[tuple[KnowledgeBase, str]]:
    base = open_test_kb(tmp_path, provider)
    cid = (await base.create_store("manuals", "minilm")).id
    for name, text in MANUAL.items():
        await base.add_text(
            cid, text, title=name, chunking_strategy=SMALL, attributes={"source": name}
        )
    yield base, cid
    base.close()


async def test_paraphrased_question_finds_the_right_manual(kb: tuple[KnowledgeBase, str]) -> None:
    base, cid = kb
    hits = await _search(base, cid, "How long until my money comes back?", 2)
    assert hits[0].filename == "billing.md"
    hits = await _search(base, cid, "restart the pump", 1, mode="dense")
    assert hits[0].filename == "pump.md" and hits[0].attributes == {"source": "pump.md"}


async def test_chinese_question_is_carried_by_keywords(kb: tuple[KnowledgeBase, str]) -> None:
    base, cid = kb
    hits = await _search(base, cid, "退款要多久", 1)
    assert hits[0].filename == "zh.md" and hits[0].keyword_rank == 1


async def test_reingest_is_a_noop_and_delete_removes_everywhere(
    kb: tuple[KnowledgeBase, str],
) -> None:
    base, cid = kb
    before = (await base.store(cid)).stats.chunk_count
    again = await base.add_text(cid, MANUAL["pump.md"], title="pump.md", chunking_strategy=SMALL)
    assert again.status == "completed" and (await base.store(cid)).stats.chunk_count == before
    # Two files own the chunk now; it goes only with the last of them.
    files = (await base.store_files(cid, PageRequest(100, "asc"))).data
    pump = [r for r in files if r.attributes.get("source") == "pump.md"]
    assert await base.detach(cid, pump[0].file_id) == 0
    assert await base.detach(cid, again.file_id) == 1
    hits = await _search(base, cid, "reset the water pump red button", 5)
    assert all(h.filename != "pump.md" for h in hits)
    ids, _ = base.backend.vectors(cid)
    if base.backend.name == "sqlite":
        assert base.backend.indexes.get(cid).ids() == set(ids.tolist())  # type: ignore[attr-defined]
    assert len(ids) == base.backend.count(cid)


async def test_index_persists_and_is_rebuilt_when_missing_or_stale(
    tmp_path: Path, kb: tuple[KnowledgeBase, str], provider: MiniLMProvider
) -> None:
    base, cid = kb
    if base.backend.name != "sqlite":
        pytest.skip("FAISS index files belong to the sqlite backend")
    expected = [h.chunk_id for h in await _search(base, cid, "museum tickets", 3)]
    base.close()
    reopened = KnowledgeBase.open_sqlite(tmp_path, provider)
    assert [h.chunk_id for h in await _search(reopened, cid, "museum tickets", 3)] == expected
    # A stale index (missing a chunk SQLite has) is detected and repaired.
    path = tmp_path / "indexes" / f"{cid}.faiss"
    stale = reopened.backend.indexes.get(cid)  # type: ignore[attr-defined]
    stale.remove([expected[0]])
    stale.save(path)
    reopened.close()
    again = KnowledgeBase.open_sqlite(tmp_path, provider)
    assert expected[0] in again.backend.indexes.get(cid).ids()  # type: ignore[attr-defined]
    path.unlink()
    again.backend.indexes.forget(cid)  # type: ignore[attr-defined]
    assert [h.chunk_id for h in await _search(again, cid, "museum tickets", 3)] == expected
    again.close()


async def test_wrong_model_and_unknown_store_are_clear_errors(
    kb: tuple[KnowledgeBase, str],
) -> None:
    base, cid = kb
    with pytest.raises(InvalidRequestError) as err:
        await base.search(cid, SearchQuery(("x",), model="bge-m3"))
    assert err.value.code == "embedding_model_mismatch"
    with pytest.raises(NotFoundError):
        await base.search("vs_missing", SearchQuery(("x",)))
