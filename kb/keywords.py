"""Keyword analysis shared by the storage backends: query terms without function words,
and overlapping CJK character bigrams (as Lucene's CJK analyzer does), so text with no
spaces between words is searchable by keyword too. Bigrams rather than trigrams: most
Chinese words are two characters, which a trigram index cannot match."""

from __future__ import annotations

import re

__all__ = ["STOPWORDS", "cjk_bigrams", "query_grams", "query_words"]

_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
_TOKEN = re.compile(r"\w+", re.UNICODE)


# Function words carry no topic; matching on them lets BM25 rank a chunk for "until" or
# "my". Only the query side drops them (documents are indexed whole).
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
    ]
)


def cjk_bigrams(text: str) -> str:
    """Overlapping character bigrams of each CJK run, space-separated ("熊猫吃" -> "熊猫 猫吃");
    a lone CJK character stands for itself."""
    grams: list[str] = []
    for run in _CJK_RUN.findall(text):
        grams.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
    return " ".join(grams)


def query_words(query: str) -> list[str]:
    """The query's words, function words dropped (unless nothing else is left)."""
    tokens = _TOKEN.findall(query)
    return [w for w in tokens if w.lower() not in STOPWORDS] or tokens


def query_grams(query: str) -> list[str]:
    """The query's distinct CJK bigrams, in order."""
    return list(dict.fromkeys(cjk_bigrams(query).split()))
