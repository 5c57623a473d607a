"""Deterministic fake engines, selectable by config (`engine: fake`), for HTTP-layer tests.

They are real backends with trivial maths: hashed bag-of-words vectors and word-overlap
scores. Options: ``dimensions`` (embedding size), ``delay_ms`` (simulated compute per
batch), ``fail_marker`` (a batch containing this text raises, to exercise failure paths).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from engines.base import EmbeddingBatch, ModelInfo, RerankScores
from engines.options import FakeChatOptions, FakeEmbeddingOptions, FakeOptions

__all__ = ["FakeChatEngine", "FakeEmbedder", "FakeReranker", "FakeTokenizer"]

_WORD = re.compile(r"\w+", re.UNICODE)


class FakeTokenizer:
    """One token per word (CJK: per character), plus none for specials."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    @staticmethod
    def _spans(text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for m in _WORD.finditer(text):
            word = m.group()
            if any("\u4e00" <= ch <= "\u9fff" for ch in word):
                spans.extend((m.start() + i, m.start() + i + 1) for i in range(len(word)))
            else:
                spans.append(m.span())
        return spans

    def words(self, text: str) -> list[str]:
        return [text[a:b].lower() for a, b in self._spans(text)]

    def count(self, texts: list[str]) -> list[int]:
        return [max(1, len(self._spans(t))) for t in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        spans = self._spans(text)
        if len(spans) <= max_tokens:
            return text
        return text[: spans[max_tokens - 1][1]] if max_tokens > 0 else ""


class _FakeBase:
    def __init__(self, info: ModelInfo, options: Mapping[str, Any] | FakeOptions) -> None:
        opts = FakeOptions.of(options)
        self.max_input_tokens = opts.max_length
        self.tokenizer = FakeTokenizer(self.max_input_tokens)
        self._delay = opts.delay_ms / 1000.0
        self._fail_marker = opts.fail_marker

    def _work(self, texts: list[str]) -> None:
        if self._fail_marker and any(self._fail_marker in t for t in texts):
            raise RuntimeError("fake engine asked to fail")
        if self._delay:
            time.sleep(self._delay)

    def close(self) -> None:
        return None


class FakeEmbedder(_FakeBase):
    def __init__(self, info: ModelInfo, options: Mapping[str, Any] | FakeEmbeddingOptions) -> None:
        opts = FakeEmbeddingOptions.of(options)
        super().__init__(info, opts)
        self.dimensions = opts.dimensions
        self.info = ModelInfo(
            id=info.id,
            kind="embedding",
            engine="fake",
            owned_by=info.owned_by,
            created=info.created,
            dimensions=self.dimensions,
            max_input_tokens=self.max_input_tokens,
        )

    def encode(self, texts: list[str], max_tokens: int) -> EmbeddingBatch:
        limit = min(max_tokens, self.max_input_tokens)
        texts = [self.tokenizer.truncate(t, limit) for t in texts]
        return EmbeddingBatch(self.embed(texts), self.tokenizer.count(texts))

    def embed(self, texts: list[str]) -> np.ndarray:
        self._work(texts)
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in self.tokenizer.words(text) or [""]:
                out[row] += self._word_vector(word)
            norm = float(np.linalg.norm(out[row]))
            out[row] = out[row] / norm if norm > 0 else self._word_vector("")
        return out

    def _word_vector(self, word: str) -> np.ndarray:
        # A dense pseudo-random unit vector per word: texts sharing words are similar.
        seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        vec = np.random.default_rng(seed).standard_normal(self.dimensions).astype(np.float32)
        return vec / np.linalg.norm(vec)


class FakeReranker(_FakeBase):
    def __init__(self, info: ModelInfo, options: Mapping[str, Any] | FakeOptions) -> None:
        super().__init__(info, options)
        self.info = ModelInfo(
            id=info.id,
            kind="rerank",
            engine="fake",
            owned_by=info.owned_by,
            created=info.created,
            max_input_tokens=self.max_input_tokens,
        )

    def score_pairs(self, pairs: list[tuple[str, str]], max_tokens: int) -> RerankScores:
        limit = min(max_tokens, self.max_input_tokens)
        counts = [min(limit, n) for n in self.tokenizer.count([f"{q} {d}" for q, d in pairs])]
        return RerankScores(self.score(pairs), counts)

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        self._work([q + "\n" + d for q, d in pairs])
        scores = []
        for query, doc in pairs:
            q = set(self.tokenizer.words(query))
            d = set(self.tokenizer.words(doc))
            overlap = len(q & d) / len(q) if q else 0.0
            # Ties broken by length so the order is total and stable.
            scores.append(round(overlap / (1.0 + 0.001 * len(d)), 6))
        return scores


class _FakeHandle:
    def __init__(self, request: Any) -> None:
        self.request = request
        self.cancelled = False


class FakeChatEngine:
    """A scripted chat engine (no torch): answers each request with the next of
    ``options.script`` (cycled), one character per token, so HTTP-layer tests can drive
    reasoning (``<think>`` text), tool calls, streaming and usage without a model. Under a
    JSON or call constraint it answers the shortest valid output (under ``auto``, where
    an answer may be text, it keeps to its script). Characters are tokens:
    ``encode`` is the text's code points."""

    def __init__(self, info: ModelInfo, options: Mapping[str, Any] | FakeChatOptions) -> None:
        opts = FakeChatOptions.of(options)
        self.options = opts
        self.script = list(opts.script)
        self.context_length = opts.context_length
        self.chat_template = opts.chat_template
        self.max_token_bytes = 4  # a token is a character
        self.state_names: list[str] = []
        self.healthy = True
        self._next = 0
        self.info = ModelInfo(
            id=info.id,
            kind="chat",
            engine="fake",
            owned_by=info.owned_by,
            created=info.created,
            max_input_tokens=self.context_length,
            extra={"version": "fake", "strategy": "scripted"},
        )
        self.stats = {"prompt_tokens": 0, "prefill_tokens": 0, "generated_tokens": 0}
        self.prompts: list[list[int]] = []

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, tokens: list[int]) -> str:
        return "".join(chr(t) for t in tokens if t)

    def forget_states(self, state: str, keys: list[str]) -> None:
        """The fake keeps no states."""

    def prepare(self, constraint: Any, max_tokens: int) -> None:
        """The fake serves any constraint (its answer is the closer's shortest output)."""

    def submit(self, request: Any) -> _FakeHandle:
        self.prompts.append(list(request.prompt_tokens))
        return _FakeHandle(request)

    def _answer(self, request: Any) -> str:
        constraint = request.constraint
        if constraint is not None and constraint.closer is not None and constraint.kind != "auto":
            shortest: bytes | None = constraint.closer.complete(b"")
            if shortest is not None:
                return shortest.decode()
        text = self.script[self._next % len(self.script)]
        self._next += 1
        return text

    async def events(self, handle: _FakeHandle) -> Any:
        from engines.generation import FinishEvent, TokenEvent

        req = handle.request
        answers = [self._answer(req) for _ in range(req.n)]
        for i, text in enumerate(answers):
            limit = req.params.max_tokens
            for ch in text[:limit]:
                yield TokenEvent(i, ch, ord(ch), ch, ch.encode())
            reason = "length" if len(text) > limit else "stop"
            yield FinishEvent(i, reason, min(len(text), limit))

    def close(self) -> None:
        return None
