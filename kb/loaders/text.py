"""Plain text and Markdown, read incrementally in the file's own encoding.

Byte-order marks (UTF-8, UTF-16, UTF-32) are honoured before anything else; otherwise
UTF-8 is tried and, failing that, the encoding is detected from the first 64 KiB. Text
comes out in sections of at most ``SECTION_CHARS`` characters cut at paragraph breaks
(Markdown: one section per heading, the heading path kept as context).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path

from charset_normalizer import from_bytes

from kb.loaders.base import Budget, LoaderError, Section

__all__ = ["SECTION_CHARS", "detect_encoding", "iter_markdown", "iter_text", "read_text_blocks"]

SECTION_CHARS = 256 * 1024
_BLOCK = 64 * 1024
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^(```|~~~)")


def bom_encoding(head: bytes) -> tuple[str, int] | None:
    """(encoding, BOM length) when ``head`` starts with a byte-order mark."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    return None


def detect_encoding(head: bytes) -> tuple[str, int]:
    """The encoding of a file from its first bytes, and how many BOM bytes to skip."""
    found = bom_encoding(head)
    if found is not None:
        return found
    try:
        head.decode("utf-8")
        return "utf-8", 0
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3:  # a character cut by the end of the sample
            return "utf-8", 0
    best = from_bytes(head).best()
    if best is None:
        raise LoaderError("the file is not text in any encoding we recognise")
    return best.encoding, 0


def read_text_blocks(path: Path, budget: Budget) -> Iterator[str]:
    """The file's text in blocks, decoded incrementally; its size is checked first."""
    size = path.stat().st_size
    if size > budget.limits.max_text_bytes:
        raise LoaderError(
            f"the text file is {size} bytes; the limit is {budget.limits.max_text_bytes}",
            "file_too_large",
        )
    with open(path, "rb") as fh:
        head = fh.read(_BLOCK)
        encoding, skip = detect_encoding(head)
        decoder = codecs.getincrementaldecoder(encoding)("replace")
        data = head[skip:]
        while data:
            text = decoder.decode(data)
            if "\x00" in text:
                raise LoaderError(
                    "the file holds NUL characters: it is not text", "unsupported_file"
                )
            budget.text(len(text))
            yield text
            data = fh.read(_BLOCK)
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


def _lines(blocks: Iterator[str]) -> Iterator[str]:
    rest = ""
    for block in blocks:
        parts = (rest + block).split("\n")
        rest = parts.pop()
        yield from parts
        if len(rest) > SECTION_CHARS:  # one enormous line: hand it on in pieces
            yield rest
            rest = ""
    if rest:
        yield rest


def iter_text(path: Path, budget: Budget) -> Iterator[Section]:
    """Sections of up to ``SECTION_CHARS`` characters, cut at a blank line when one comes."""
    buf: list[str] = []
    size = 0
    for line in _lines(read_text_blocks(path, budget)):
        buf.append(line)
        size += len(line) + 1
        if size >= SECTION_CHARS and (not line.strip() or size >= 2 * SECTION_CHARS):
            text = "\n".join(buf).strip()
            if text:
                yield Section(text)
            buf, size = [], 0
    text = "\n".join(buf).strip()
    if text:
        yield Section(text)


def iter_markdown(path: Path, budget: Budget) -> Iterator[Section]:
    """One section per heading (long ones cut), the heading path as the chunk prefix, so a
    chunk deep in "Install > Linux" still says what it is about."""
    heads: list[tuple[int, str]] = []
    buf: list[str] = []
    size = 0
    in_fence = False

    def flush() -> Iterator[Section]:
        body = "\n".join(buf).strip()
        if body:
            yield Section(body, prefix=" > ".join(h for _, h in heads))

    for line in _lines(read_text_blocks(path, budget)):
        if _FENCE.match(line.strip()):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m is None:
            buf.append(line)
            size += len(line) + 1
            if size >= 2 * SECTION_CHARS:
                yield from flush()
                buf, size = [], 0
            continue
        yield from flush()
        buf, size = [], 0
        level = len(m.group(1))
        heads[:] = [(lv, h) for lv, h in heads if lv < level]
        heads.append((level, m.group(2).strip()[:200]))
    yield from flush()


def read_all(path: Path, budget: Budget) -> str:
    """The whole text (for formats parsed as a whole: HTML, JSON), within the budget."""
    return "".join(read_text_blocks(path, budget))
