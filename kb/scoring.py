"""Absolute relevance scores: what a hit's ``score`` means.

A hit's score depends only on the query and that chunk, never on the other hits or on
what else the store holds (so it is the same at ``max_num_results`` 1 or 50, and after
unrelated files arrive). It is a probability-like number in [0, 1]: ~0.5 is an even-odds
match, and every threshold in the product (``score_threshold``, Dify's, profiles',
``ranking_options``, no-answer) reads it.

It comes from two store-independent signals, combined by a logistic model fitted on the
evaluation sets' dev queries (``bench/eval/tune.py``):

- the cosine similarity, put on a per-model, per-script scale by a probe (``Probe``):
  the model embeds a few fixed paraphrase pairs and unrelated pairs in Latin and in CJK
  script; ``z = (cos - unrelated) / (paraphrase - unrelated)`` is ~0 for an unrelated
  chunk and ~1 for a paraphrase, whatever the model. The probe's gap also says how much
  the model can be trusted on that script (an English-only embedder has almost none on
  Chinese), which weights the dense signal, in scoring and in fusion;
- the query's term coverage in the chunk (content words; CJK character bigrams), which
  saturates: a chunk holding every query term scores as a strong lexical match.

When a reranker runs, its sigmoid score is the score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from kb.keywords import STOPWORDS

__all__ = [
    "FITTED",
    "ScoreModel",
    "Weights",
    "coverage",
    "query_terms",
    "script_of",
]

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
_WORD = re.compile(r"[^\W\d_]{2,}|\d+", re.UNICODE)


def script_of(text: str) -> str:
    """``cjk`` when CJK characters make up a third of the letters, else ``latin``."""
    cjk = len(_CJK.findall(text))
    letters = sum(1 for ch in text if ch.isalpha())
    return "cjk" if letters and cjk / letters >= 1 / 3 else "latin"


def _stem(word: str) -> str:
    w = word.lower()
    for suffix in ("ing", "ed", "es", "s"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w


def query_terms(text: str) -> set[str]:
    """Content words (lightly stemmed) and CJK character bigrams."""
    terms = {_stem(w) for w in _WORD.findall(_CJK_RUN.sub(" ", text)) if w.lower() not in STOPWORDS}
    for run in _CJK_RUN.findall(text):
        if len(run) == 1:
            terms.add(run)
        terms.update(run[i : i + 2] for i in range(len(run) - 1))
    return terms


def coverage(query: set[str], chunk: str) -> float:
    """The share of the query's terms the chunk holds (0 for a query with none)."""
    if not query:
        return 0.0
    return len(query & query_terms(chunk)) / len(query)


@dataclass(frozen=True)
class Weights:
    bias: float
    w_dense: float
    w_lex: float


# Fitted per script on the evaluation sets' dev queries by bench/eval/tune.py (a CJK
# query's bigram coverage is partial even for an exact answer, so it earns more weight).
FITTED: dict[str, Weights] = {
    "latin": Weights(-3.925, 3.308, 2.446),
    "cjk": Weights(-2.701, 2.034, 6.076),
}


@dataclass(frozen=True)
class ScoreModel:
    """p = sigmoid(bias + w_dense * trust * z + w_lex * coverage), per script, see the
    module doc."""

    weights: dict[str, Weights] = field(default_factory=lambda: dict(FITTED))

    def logits(
        self,
        z: np.ndarray,
        trust: float,
        cov: np.ndarray,
        script: str,
        *,
        dense_weight: float = 1.0,
        lexical_weight: float = 1.0,
    ) -> np.ndarray:
        """The model's log-odds; the weights scale its two evidence terms (1, 1 is the
        fitted model, which ``scores`` uses)."""
        w = self.weights[script]
        x = w.bias + dense_weight * w.w_dense * trust * z + lexical_weight * w.w_lex * cov
        return np.asarray(x, dtype=np.float64)

    def scores(self, z: np.ndarray, trust: float, cov: np.ndarray, script: str) -> np.ndarray:
        x = self.logits(z, trust, cov, script)
        return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)
