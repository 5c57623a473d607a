"""Keyword search on FTS5 indexes kept by triggers: words of the text (``porter`` stemmed
once ``chunks_stem`` is complete, kb/store/stemmed.py; ``unicode61`` before) and
``unicode61`` over a shadow column of CJK character bigrams."""

from __future__ import annotations

from kb.keywords import query_grams, query_words
from kb.store.db import json_list
from kb.store.stemmed import StemmedIndexMixin

__all__ = ["KeywordMixin"]


def _match(terms: list[str]) -> str:
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


class KeywordMixin(StemmedIndexMixin):
    stemming = True  # the backend sets it from ``knowledge.keyword_stemming``

    def _fts(
        self, table: str, match: str, cid: str, k: int, allowed: set[int] | None
    ) -> list[tuple[int, float]]:
        """Top ``k`` (chunk id, BM25) of one FTS index within a collection.

        Fast path: FTS5's own ``ORDER BY rank`` over the whole index (no join while it
        scores), oversampled, then filtered to the collection; when the filter leaves
        too few, the exact join query runs instead (many collections, narrow filters)."""
        limit = max(4 * k, 64)
        top = self.tuples(
            f"SELECT rowid, rank FROM {table} WHERE {table} MATCH ? ORDER BY rank LIMIT ?",
            [match, limit],
        )
        if top:
            owners: dict[object, object] = {
                cid_: col
                for cid_, col in self.tuples(
                    "SELECT id, collection_id FROM chunks WHERE id IN "
                    "(SELECT value FROM json_each(?))",
                    [json_list(r for r, _ in top)],
                )
            }
            kept = [
                (int(str(r)), -float(str(rank)))
                for r, rank in top
                if owners.get(r) == cid and (allowed is None or r in allowed)
            ]
            if len(kept) >= k or len(top) < limit:
                return kept[:k]
        only = "" if allowed is None else " AND c.id IN (SELECT value FROM json_each(?))"
        extra: list[object] = [] if allowed is None else [json_list(sorted(allowed))]
        return [
            (int(str(r)), -float(str(rank)))
            for r, rank in self.tuples(
                f"SELECT c.id, bm25({table}) FROM {table} "
                f"JOIN chunks c ON c.id = {table}.rowid WHERE {table} MATCH ? "
                f"AND c.collection_id = ?{only} ORDER BY bm25({table}) LIMIT ?",
                [match, cid, *extra, k],
            )
        ]

    def keyword_search(
        self, cid: str, query: str, k: int, *, allowed: set[int] | None = None
    ) -> list[tuple[int, float]]:
        """BM25 over words and, for CJK text, over character bigrams; ``allowed`` limits
        the chunks considered (a filter). (chunk id, score), higher = better."""
        if allowed is not None and not allowed:
            return []
        words = query_words(query)
        if not words:
            return []
        results: dict[int, float] = {}
        table = "chunks_stem" if self.stemming and self.stemmed_index_ready() else "chunks_fts"
        for chunk_id, score in self._fts(table, _match(words), cid, k, allowed):
            results[chunk_id] = score
        grams = query_grams(query)
        if grams:
            for chunk_id, score in self._fts("chunks_cjk", _match(grams), cid, k, allowed):
                results[chunk_id] = max(results.get(chunk_id, float("-inf")), score)
        return sorted(results.items(), key=lambda kv: -kv[1])[:k]
