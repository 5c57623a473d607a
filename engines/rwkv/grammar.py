"""Grammar-constrained decoding over the RWKV World vocabulary, through llguidance.

Each constrained sequence has a matcher; before a decode step the masks of all
constrained rows are computed on a worker thread (llguidance releases the GIL) while the
forward runs, then applied to those rows' logits only, so a constrained row never stalls
the others. For JSON, the sequence also keeps the JSON bytes so far and, near the end of
its token budget, closes the document: a sampled token is taken only if the shortest
completion after it still fits the tokens left; otherwise the completion is forced, token
by token, and the answer still parses and validates (with ``finish_reason: length``).
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from engines.constraint import Constraint
from engines.rwkv.tokenizer import world_tokenizer

__all__ = ["Guided", "MaskWorker", "check_grammar", "ll_tokenizer"]

log = logging.getLogger(__name__)

# Recompute the closing text only this close to the end of the budget (it is cheap, but
# not free, and far from the end no token can make the completion outgrow the budget).
_CLOSE_MARGIN = 512


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


def check_grammar(grammar: str) -> str | None:
    """An error message when llguidance cannot build the grammar, else None."""
    import llguidance

    error = llguidance.LLMatcher.validate_grammar(grammar, ll_tokenizer())
    return error or None


class Guided:
    """One constrained sequence: its matcher, its closer and its output bytes."""

    def __init__(self, constraint: Constraint, max_tokens: int, encode: Any) -> None:
        import llguidance

        self.constraint = constraint
        self.matcher = llguidance.LLMatcher(ll_tokenizer(), constraint.grammar, log_level=0)
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

    def _closing(self, out: bytes) -> list[int] | None:
        """Tokens of the shortest valid ending after ``out`` (None: the output is not in a
        part that needs closing, e.g. the free-text branch of ``auto``)."""
        if self.closer is None:
            return None
        tail = self.closer.complete(out)
        if tail is None:
            return None
        return list(self.encode_bytes(tail)) if tail else []

    def choose(self, sampled: int, token_bytes: bytes) -> int:
        """The token to emit: the sampled one, or the forced completion near the end."""
        if self.forced:
            return self.forced.popleft()
        left = self.max_tokens - self.generated
        if self.closer is None or left > _CLOSE_MARGIN:
            return sampled
        if sampled != 0:
            after = self._closing(self.out + token_bytes)
            if after is None or len(after) <= left - 1:  # None: free text, nothing to close
                return sampled
        now = self._closing(self.out)
        if now is None or not now:
            return sampled
        self.forced.extend(now)
        self.closed_by_budget = True
        return self.forced.popleft()

    def consume(self, token: int, token_bytes: bytes) -> None:
        self.generated += 1
        if token != 0:
            self.out += token_bytes
        if not self.matcher.consume_token(token):
            log.warning("constrained sequence left its grammar: %s", self.matcher.get_error())


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
