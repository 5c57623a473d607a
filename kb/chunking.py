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
    """A sentence longer than the limit is cut on words (or characters, for CJK)."""
    words = re.findall(r"\S+\s*", piece) if " " in piece else list(piece)
    parts: list[str] = []
    current = ""
    for w in words:
        candidate = current + w
        if current and count([candidate])[0] > limit:
            parts.append(current.strip())
            current = w
        else:
            current = candidate
    if current.strip():
        parts.append(current.strip())
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
        pieces.extend(_split_long(piece, budget, count) if count([piece])[0] > budget else [piece])
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

    for piece, size in sized:
        if piece == "\n\n":
            continue
        if window and total + size > budget:
            emit()
            # Carry the tail of the window forward as overlap.
            carried: list[tuple[str, int]] = []
            kept = 0
            for prev in reversed(window):
                if kept + prev[1] > strategy.chunk_overlap_tokens:
                    break
                carried.insert(0, prev)
                kept += prev[1]
            window, total = carried, kept
        window.append((piece, size))
        total += size
    if window:
        emit()
    return chunks
