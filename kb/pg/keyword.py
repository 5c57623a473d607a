"""Keyword search in PostgreSQL: BM25 (k1 1.2, b 0.75) computed in SQL from the generated
``tsvector`` columns, over words and over CJK character bigrams, with document
frequencies counted through the GIN index."""

from __future__ import annotations

import math
import time
from typing import Any

from kb.keywords import query_grams, query_words
from kb.pg.db import Database
from kb.pg.filters import file_scope
from kb.pg.stemmed import StemmedIndexMixin

__all__ = ["KeywordMixin"]

_K1, _B = 1.2, 0.75
_STATS_TTL_S = 5.0
_FULL_SCORING_UP_TO = 2_000  # candidate chunks scored by BM25 before common terms drop
_COMMON_SHARE = 0.05
_PRESCORED = 400  # candidates the exact BM25 reads when there are many


def _stems(conn: Any, words: list[str]) -> list[str]:
    row = conn.execute(
        "SELECT array(SELECT lexeme FROM unnest(to_tsvector('kb_stem', %s))) AS l",
        (" ".join(words),),
    ).fetchone()
    return [str(x) for x in row["l"]]


def _tsquery(lexemes: list[str]) -> str:
    """An OR tsquery of literal lexemes (quoted, so no operator in them is read)."""
    return " | ".join("'" + lex.replace("\\", "\\\\").replace("'", "''") + "'" for lex in lexemes)


class KeywordMixin(Database, StemmedIndexMixin):
    stemming = True  # the backend sets it from ``knowledge.keyword_stemming``
    # (store, column) -> (when, chunks, mean length); (store, column, lexeme) -> (when, df).
    _stats_cache: dict[tuple[str, str], tuple[float, int, float]]
    _df_cache: dict[tuple[str, str, str], tuple[float, int]]

    def _dfs(self, conn: Any, cid: str, column: str, lexemes: list[str]) -> dict[str, int]:
        """Document frequencies through the GIN index, cached as the statistics are."""
        now = time.monotonic()
        out: dict[str, int] = {}
        missing = []
        for lex in lexemes:
            hit = self._df_cache.get((cid, column, lex))
            if hit is not None and now - hit[0] < _STATS_TTL_S * 6:
                out[lex] = hit[1]
            else:
                missing.append(lex)
        if missing:
            for r in conn.execute(
                "SELECT t, (SELECT count(*) FROM chunks WHERE "
                f"{column} @@ quote_literal(t)::tsquery AND collection_id = %s) AS df "
                "FROM unnest(%s::text[]) AS t",
                (cid, missing),
            ).fetchall():
                out[str(r["t"])] = int(r["df"])
                self._df_cache[(cid, column, str(r["t"]))] = (now, int(r["df"]))
            if len(self._df_cache) > 100_000:
                self._df_cache.clear()
        return out

    def _stats(self, conn: Any, cid: str, column: str) -> tuple[int, float]:
        """(chunks, mean token count) of a store's column, cached for a few seconds
        (BM25 statistics and the exact/ANN choice; slightly stale is harmless)."""
        key = (cid, column)
        hit = self._stats_cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < _STATS_TTL_S:
            return hit[1], hit[2]
        row = conn.execute(
            f"SELECT count(*) AS n, coalesce(avg({column}_len), 1) AS avglen "
            "FROM chunks WHERE collection_id = %s",
            (cid,),
        ).fetchone()
        n, avglen = int(row["n"]), float(row["avglen"]) or 1.0
        self._stats_cache[key] = (now, n, avglen)
        return n, avglen

    def _bm25(
        self,
        conn: Any,
        cid: str,
        column: str,
        terms: list[str],
        k: int,
        files: list[str] | None,
    ) -> list[tuple[int, float]]:
        """BM25 over one tsvector column: document frequencies through the GIN index,
        the collection's size and mean length, then the top ``k`` matches."""
        lexemes = sorted({t.lower() for t in terms if t.strip()})
        if not lexemes:
            return []
        n, avglen = self._stats(conn, cid, column)
        if not n:
            return []
        dfs = self._dfs(conn, cid, column, lexemes)
        # FTS5's (and Robertson's) idf, floored as FTS5 floors it.
        idf = {t: max(math.log((n - df + 0.5) / (df + 0.5)), 1e-6) for t, df in dfs.items() if df}
        if not idf:
            return []
        # Candidates: chunks holding a query term. When that is a large share of a big
        # store, chunks holding only its commonest terms are left out of the scoring
        # (they could only rank last); every term still counts in the scores.
        matching = list(idf)
        # Many candidates (a big store, common words): chunks holding only the commonest
        # terms are left out, and the rest are cut to the best few hundred by the sum of
        # the idf of the terms they hold before the exact BM25 (which reads term
        # frequencies and lengths) ranks them. Every term still counts in the scores.
        limit = ""
        if min(n, sum(dfs.values())) > _FULL_SCORING_UP_TO:
            rare = [t for t in matching if dfs[t] <= _COMMON_SHARE * n]
            matching = rare or sorted(matching, key=lambda t: dfs[t])[:2]
            limit = (
                f" ORDER BY (SELECT sum(q.idf) FROM q WHERE c.{column} @@ q.tq) DESC, c.id "
                f"LIMIT {max(_PRESCORED, 4 * k)}"
            )
        scope, extra = file_scope(files)
        rows = conn.execute(
            "WITH q AS (SELECT term, idf, quote_literal(term)::tsquery AS tq FROM "
            "unnest(%s::text[], %s::float8[]) AS q(term, idf)), "
            f"m AS (SELECT c.id, c.{column} AS tsv, c.{column}_len AS dl FROM chunks c "
            f"WHERE c.collection_id = %s AND c.{column} @@ %s::tsquery{scope}{limit}) "
            "SELECT m.id, sum(q.idf * u.tf * %s / (u.tf + %s * (1 - %s + %s * "
            "m.dl / %s))) AS score FROM m CROSS JOIN LATERAL (SELECT lexeme, "
            "coalesce(array_length(positions, 1), 1) AS tf FROM unnest(m.tsv)) u "
            "JOIN q ON q.term = u.lexeme GROUP BY m.id ORDER BY score DESC, m.id LIMIT %s",
            [
                list(idf),
                list(idf.values()),
                cid,
                _tsquery(matching),
                *extra,
                _K1 + 1,
                _K1,
                _B,
                _B,
                avglen,
                k,
            ],
        ).fetchall()
        return [(int(r["id"]), float(r["score"])) for r in rows]

    def _keyword(
        self, conn: Any, cid: str, text: str, k: int, files: list[str] | None
    ) -> list[tuple[int, float]]:
        results: dict[int, float] = {}
        words = query_words(text)
        column = "tsv"
        if words and self.stemming and self.stemmed_index_ready(conn):
            # The query's words as the index's stems (the same configuration made both).
            column, words = "stem_tsv", _stems(conn, words)
        if words:
            for chunk_id, score in self._bm25(conn, cid, column, words, k, files):
                results[chunk_id] = score
        grams = query_grams(text)
        if grams:
            for chunk_id, score in self._bm25(conn, cid, "cjk_tsv", grams, k, files):
                results[chunk_id] = max(results.get(chunk_id, float("-inf")), score)
        return sorted(results.items(), key=lambda kv: -kv[1])[:k]
