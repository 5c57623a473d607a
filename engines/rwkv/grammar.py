"""Grammar-constrained decoding over the RWKV World vocabulary, through llguidance.

Each constrained sequence has a matcher; before a decode step the masks of all
constrained rows are computed on a worker thread (llguidance releases the GIL) while the
forward runs, then applied to those rows' logits only, so a constrained row never stalls
the others. For JSON, the sequence also keeps the JSON bytes so far and, near the end of
its token budget, closes the document: a sampled token is taken only if the shortest
completion after it (checked against the grammar) still fits the tokens left; otherwise
the completion is forced, token by token, and the answer still parses and validates (with
``finish_reason: length``). A sequence that cannot be closed so fails instead.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from engines.constraint import Constraint
from engines.rwkv.tokenizer import world_tokenizer

__all__ = [
    "MAX_ITEMS_IN_ROW",
    "GrammarFailure",
    "Guided",
    "MaskWorker",
    "check_grammar",
    "ll_tokenizer",
    "parser_limits",
]

log = logging.getLogger(__name__)

# Recompute the closing text only this close to the end of the budget (it is cheap, but
# not free, and far from the end no token can make the completion outgrow the budget).
_CLOSE_MARGIN = 512

# llguidance's Earley parser holds about four items per optional property of an object
# in one row; its default cap (2000) breaks objects of ~500 optional properties mid-answer.
# This cap holds the largest object the gateway admits (ChatSettings
# ``max_schema_properties``, 1000 by default) with room for nesting around it.
MAX_ITEMS_IN_ROW = 20_000

_NO_ENDING = [-1]  # no token list: the closer proposed no ending the grammar accepts


@functools.lru_cache(maxsize=1)
def ll_tokenizer() -> Any:
    """llguidance's view of the RWKV World vocabulary (built once per process)."""
    import llguidance

    tok = world_tokenizer()
    vocab = 65536
    tokens: list[bytes] = []
    for i in range(vocab):
        raw = tok.idx2token.get(i)
        if i == 0:
            tokens.append(b"\xff[EOS]")  # llguidance marks special tokens with 0xFF
        elif raw is None:
            tokens.append(b"\xff[UNUSED_%d]" % i)
        else:
            tokens.append(bytes(raw))

    class _World:
        eos_token_id = 0
        bos_token_id = None
        special_token_ids = [0]

        def __init__(self) -> None:
            self.tokens = tokens

        def __call__(self, text: bytes | str) -> list[int]:
            if isinstance(text, bytes):
                return list(tok.encodeBytes(text))
            return list(tok.encode(text))

    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_World()))


def parser_limits() -> Any:
    """llguidance's parser limits with the row limit raised to ``MAX_ITEMS_IN_ROW``."""
    import llguidance

    return llguidance.LLParserLimits(max_items_in_row=MAX_ITEMS_IN_ROW)


def check_grammar(grammar: str) -> str | None:
    """An error message when llguidance cannot build the grammar, else None."""
    import llguidance

    error = llguidance.LLMatcher.validate_grammar(grammar, ll_tokenizer(), limits=parser_limits())
    return error or None


class GrammarFailure(RuntimeError):
    """A constrained sequence that cannot go on within its grammar (it ends in error)."""


class Guided:
    """One constrained sequence: its matcher, its closer and its output bytes.

    Every ending the closer proposes is checked against the matcher (the tokens must be
    accepted and leave the grammar satisfied) before it counts: near the end of the
    budget a sampled token is kept only if some checked ending after it still fits, and
    the ending forced is the shortest checked one. A sequence that cannot be closed
    validly, or whose grammar fails, raises ``GrammarFailure`` rather than emit text
    that breaks its grammar."""

    def __init__(self, constraint: Constraint, max_tokens: int, encode: Any) -> None:
        import llguidance

        self.constraint = constraint
        self.matcher = llguidance.LLMatcher(
            ll_tokenizer(), constraint.grammar, log_level=0, limits=parser_limits()
        )
        if self.matcher.is_error():
            raise ValueError(self.matcher.get_error())
        self.closer = constraint.closer
        self.encode_bytes = encode
        self.max_tokens = max_tokens
        self.generated = 0
        self.out = b""
        self.forced: deque[int] = deque()
        self.closed_by_budget = False

    @property
    def done(self) -> bool:
        return self.matcher.is_stopped() or (self.closed_by_budget and not self.forced)

    def _accepts(self, tokens: list[int]) -> bool:
        """Whether the matcher takes ``tokens`` now and is then satisfied (its state is
        left as it was)."""
        if not tokens:
            return bool(self.matcher.is_accepting())
        if self.matcher.validate_tokens(tokens) != len(tokens):
            return False
        if not self.matcher.consume_tokens(tokens):
            raise GrammarFailure(self.matcher.get_error())
        ok = bool(self.matcher.is_accepting())
        self.matcher.rollback(len(tokens))
        return ok

    def _closing(self, out: bytes) -> list[int] | None:
        """Tokens of the shortest ending after ``out`` that the grammar accepts (None:
        the output is in a part with nothing to close, e.g. the free text of ``auto``;
        ``_NO_ENDING`` when no proposed ending is valid)."""
        if self.closer is None:
            return None
        tails = self.closer.endings(out)
        if tails is None:
            return None
        for tail in tails:
            tokens = list(self.encode_bytes(tail)) if tail else []
            if self._accepts(tokens):
                return tokens
        return _NO_ENDING

    def _closing_after(self, token: int, token_bytes: bytes) -> list[int] | None:
        """``_closing`` as if ``token`` were taken (the matcher is left as it was)."""
        if not self.matcher.consume_token(token):
            raise GrammarFailure(self.matcher.get_error())
        try:
            return self._closing(self.out + token_bytes)
        finally:
            self.matcher.rollback(1)

    def choose(self, sampled: int, token_bytes: bytes) -> int:
        """The token to emit: the sampled one, or the forced completion near the end."""
        if self.forced:
            return self.forced.popleft()
        left = self.max_tokens - self.generated
        if self.closer is None or left > _CLOSE_MARGIN:
            return sampled
        if sampled != 0:
            after = self._closing_after(sampled, token_bytes)
            if after is None or (after != _NO_ENDING and len(after) <= left - 1):
                return sampled  # None: free text, nothing to close
        now = self._closing(self.out)
        if now is None or not now:
            return sampled
        if now == _NO_ENDING or len(now) > left:
            raise GrammarFailure(
                f"no valid ending of the constrained output fits the {left} tokens left"
            )
        self.forced.extend(now)
        self.closed_by_budget = True
        return self.forced.popleft()

    def consume(self, token: int, token_bytes: bytes) -> None:
        self.generated += 1
        if token != 0:
            self.out += token_bytes
        if not self.matcher.consume_token(token):
            raise GrammarFailure(self.matcher.get_error())


class MaskWorker:
    """Computes the constrained rows' masks on a worker thread while the forward runs
    (llguidance releases the GIL; a mask costs ~0.01 ms per row on this vocabulary)."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab
        self.words = (vocab + 31) // 32
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="grammar-masks")

    def start(self, rows: list[tuple[Any, int]], batch: int) -> Future[Any]:
        """``rows``: (matcher, row) of the constrained rows of a batch of ``batch``."""
        import numpy as np
        import torch

        def fill() -> Any:
            bitmask = np.full((batch, self.words), -1, dtype=np.int32)
            for matcher, row in rows:
                words = np.frombuffer(matcher.compute_bitmask(), dtype=np.int32)
                bitmask[row] = words[: self.words]
            return torch.from_numpy(bitmask)

        return self.pool.submit(fill)

    def apply(self, logits: Any, bitmask: Any, rows: list[int]) -> Any:
        """Logits with every token a row's grammar forbids at -inf (those rows only)."""
        import torch

        if not rows:
            return logits
        idx = torch.tensor(rows, device=logits.device)
        bm = bitmask[rows].to(logits.device)
        shifts = torch.arange(32, device=logits.device, dtype=torch.int32)
        allowed = (
            ((bm.unsqueeze(-1) >> shifts) & 1).bool().view(len(rows), -1)[:, : logits.shape[1]]
        )
        out = logits.clone()
        out[idx] = logits[idx].masked_fill(~allowed, float("-inf"))
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
