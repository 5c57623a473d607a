"""Token-aware chunking: sentence and paragraph boundaries first, with overlap.

Sizes are counted with the collection's embedding tokenizer (any callable that counts the
tokens of a list of texts). Sentence ends include CJK punctuation, so Chinese and Japanese
text splits at 。！？ as English splits at . ! ?.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Chunk", "ChunkingStrategy", "chunk_text"]

# A sentence ends at ASCII or CJK terminal punctuation (plus closing quotes), or at a
# newline; the lookbehind keeps the punctuation with its sentence.
_SENTENCE = re.compile(r"(?<=[.!?。！？；;])[\"'”’）)]*\s+|(?<=[。！？；])|\n+")
_PARAGRAPH = re.compile(r"\n\s*\n+")

Counter = Callable[[list[str]], list[int]]
# A chunk holds at most this many characters per token of its budget, whatever the
# tokenizer says (a tokenizer may read a long run of one character as a single token).
CHARS_PER_TOKEN = 16


@dataclass(frozen=True, slots=True)
class ChunkingStrategy:
    """OpenAI's static chunking: max tokens per chunk (100-4096), overlap <= half."""

    max_chunk_size_tokens: int = 800
    chunk_overlap_tokens: int = 400

    def __post_init__(self) -> None:
        if not 100 <= self.max_chunk_size_tokens <= 4096:
            raise ValueError("max_chunk_size_tokens must be between 100 and 4096")
        if not 0 <= self.chunk_overlap_tokens <= self.max_chunk_size_tokens // 2:
            raise ValueError("chunk_overlap_tokens must be between 0 and half the chunk size")


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    token_count: int
    position: int


def _pieces(text: str) -> list[str]:
    """Sentences, keeping paragraph breaks as their own marker pieces."""
    out: list[str] = []
    for p_i, para in enumerate(_PARAGRAPH.split(text)):
        para = para.strip()
        if not para:
            continue
        if p_i and out:
            out.append("\n\n")
        out.extend(s.strip() for s in _SENTENCE.split(para) if s and s.strip())
    return out


def _split_long(piece: str, limit: int, count: Counter) -> list[str]:
    """A sentence longer than the limit is cut on words (or characters, for CJK and text
    without spaces). Each cut is found by galloping then bisecting over the words, so a
    long piece costs O(n log n) token counting, not O(n^2)."""
    words = re.findall(r"\S+\s*", piece) if " " in piece else list(piece)
    parts: list[str] = []
    start = 0
    while start < len(words):

        def fits(end: int, start: int = start) -> bool:
            text = "".join(words[start:end])
            return len(text) <= limit * CHARS_PER_TOKEN and count([text])[0] <= limit

        step = 1
        good = start + 1  # a single word always goes, even when it alone is too long
        while good + step <= len(words) and fits(good + step):
            good += step
            step *= 2
        lo, hi = good, min(len(words), good + step)
        while lo < hi:  # the largest end in [good, hi] that fits
            mid = (lo + hi + 1) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid - 1
        text = "".join(words[start:lo]).strip()
        if text:
            parts.append(text)
        start = lo
    return parts


def chunk_text(
    text: str, strategy: ChunkingStrategy, count: Counter, *, prefix: str = ""
) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``max_chunk_size_tokens`` (``prefix`` included:
    e.g. the Markdown headings a section sits under), overlapping by about
    ``chunk_overlap_tokens``."""
    limit = strategy.max_chunk_size_tokens
    head = f"{prefix}\n" if prefix else ""
    budget = max(16, limit - (count([head])[0] if head else 0))
    pieces: list[str] = []
    for piece in _pieces(text):
        if piece == "\n\n":
            pieces.append(piece)
            continue
        too_long = len(piece) > budget * CHARS_PER_TOKEN or count([piece])[0] > budget
        pieces.extend(_split_long(piece, budget, count) if too_long else [piece])
    sizes = count([p for p in pieces if p != "\n\n"]) if pieces else []
    it = iter(sizes)
    sized = [(p, 0 if p == "\n\n" else next(it)) for p in pieces]

    chunks: list[Chunk] = []
    window: list[tuple[str, int]] = []
    total = 0

    def emit() -> None:
        body = " ".join(p for p, _ in window if p != "\n\n").strip()
        if body:
            joined = head + body
            chunks.append(Chunk(joined, count([joined])[0], len(chunks)))

    max_chars = budget * CHARS_PER_TOKEN
    for piece, size in sized:
        if piece == "\n\n":
            continue
        chars = sum(len(p) + 1 for p, _ in window)
        if window and (total + size > budget or chars + len(piece) > max_chars):
            emit()
            # Carry the tail of the window forward as overlap.
            carried: list[tuple[str, int]] = []
            kept = 0
            for prev in reversed(window):
                if kept + prev[1] > strategy.chunk_overlap_tokens or len(prev[0]) > max_chars // 2:
                    break
                carried.insert(0, prev)
                kept += prev[1]
            window, total = carried, kept
        window.append((piece, size))
        total += size
    if window:
        emit()
    return chunks
