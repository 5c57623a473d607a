"""Loaders: a file on disk -> a stream of text sections with their provenance.

Each loader streams what it can and spends one ``Budget`` as it reads (characters,
records, cells per row, characters per cell, pages, wall-clock time), stopping at the
first limit with a ``LoaderError`` whose code and message name the setting; nothing
reads an unbounded file into memory, and a file that yields no text is an error, never
an empty success.

- txt/md: sections cut at paragraphs; Markdown keeps its heading path as context;
- PDF: one section per page (page numbers kept), OCR for pages without a text layer;
- XLSX and CSV: one record per row ("Header: value" pairs, sheet and row kept);
- HTML: main text and title; JSON: one section per item of a top-level list;
- docx/pptx/epub: headings (slide titles) kept as context, tables as records.

Any other kind (OpenDocument, a bare zip, ...) is an error naming it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

from kb.loaders.base import Budget, Document, LoaderError, LoaderLimits, Section
from kb.loaders.markup import iter_html, iter_json
from kb.loaders.office import iter_docx, iter_epub, iter_pptx
from kb.loaders.pdf import OcrPage, iter_pdf
from kb.loaders.tabular import iter_csv, iter_xlsx
from kb.loaders.text import bom_encoding, iter_markdown, iter_text, read_all

__all__ = [
    "Budget",
    "Document",
    "LoaderError",
    "LoaderLimits",
    "Section",
    "iter_document",
    "kinds_for",
    "load_document",
    "sniff_kind",
]

_EXT_KIND = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".csv": "csv",
    ".html": "html",
    ".htm": "html",
    ".json": "json",
    ".docx": "docx",
    ".pptx": "pptx",
    ".epub": "epub",
}
# Zip-based formats, told apart by the member that defines each.
_ZIP_MEMBERS = (
    ("word/document.xml", "docx"),
    ("ppt/presentation.xml", "pptx"),
    ("xl/workbook.xml", "xlsx"),
    ("META-INF/container.xml", "epub"),
    ("content.xml", "opendocument"),
)
SUPPORTED = frozenset(
    {"text", "markdown", "pdf", "xlsx", "csv", "html", "json", "docx", "pptx", "epub"}
)


def kinds_for(extensions: list[str]) -> frozenset[str]:
    """The loader kinds that a list of allowed file extensions stands for."""
    return frozenset(_EXT_KIND[e.lower()] for e in extensions if e.lower() in _EXT_KIND)


def _zip_kind(path: Path | None) -> str:
    if path is None:
        return "xlsx"
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except zipfile.BadZipFile:
        return "zip"
    for member, kind in _ZIP_MEMBERS:
        if member in names:
            return kind
    # A stripped-down workbook (our zip-bomb checks see those too) still reads as xlsx.
    return "xlsx" if any(n.startswith("xl/") for n in names) else "zip"


def sniff_kind(
    filename: str, head: bytes, content_type: str | None = None, path: Path | None = None
) -> str:
    """The loader for a file: its magic bytes first, then the content type, then the name."""
    ct = (content_type or "").split(";")[0].strip().lower()
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if ct in ("text/html", "application/xhtml+xml"):
        return "html"
    if ct == "application/pdf":
        return "pdf"
    ext = Path(filename).suffix.lower()
    if ext in _EXT_KIND:
        return _EXT_KIND[ext]
    if ct == "text/markdown":
        return "markdown"
    if ct == "text/csv":
        return "csv"
    if ct == "application/json":
        return "json"
    stripped = head.lstrip()[:64].lower()
    if bom_encoding(head) is None and stripped.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


def _check_allowed(
    kind: str, filename: str, content_type: str | None, limits: LoaderLimits
) -> None:
    if kind not in SUPPORTED:
        suffix = Path(filename).suffix.lower()
        shown = f" ({suffix})" if suffix else ""
        raise LoaderError(
            f"{kind} files{shown} are not supported; supported: {', '.join(sorted(SUPPORTED))}",
            "unsupported_file",
        )
    ext = Path(filename).suffix.lower()
    # The name counts for uploads; a fetched page is judged by its content type and bytes.
    named = limits.allowed_extensions is not None and not content_type and ext
    if named and limits.allowed_extensions is not None and ext not in limits.allowed_extensions:
        raise LoaderError(
            f"{ext} files are not accepted here (knowledge.allowed_extensions)",
            "unsupported_file",
        )
    if limits.allowed_kinds is not None and kind not in limits.allowed_kinds:
        raise LoaderError(
            f"{kind} files are not accepted here (knowledge.allowed_extensions)", "unsupported_file"
        )


def iter_document(
    path: Path,
    filename: str,
    limits: LoaderLimits,
    *,
    content_type: str | None = None,
    password: str | None = None,
    ocr: OcrPage | None = None,
    ocr_languages: str | None = None,
    deadline: float | None = None,
    warnings: list[str] | None = None,
) -> Iterator[Section]:
    """The document's sections in reading order, read as they are consumed."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    kind = sniff_kind(filename, head, content_type, path)
    _check_allowed(kind, filename, content_type, limits)
    budget = Budget(limits, deadline)
    notes = warnings if warnings is not None else []
    if kind == "pdf":
        yield from iter_pdf(path, budget, password, notes, ocr, ocr_languages)
    elif kind == "xlsx":
        yield from iter_xlsx(path, budget)
    elif kind == "csv":
        yield from iter_csv(path, budget)
    elif kind == "markdown":
        yield from iter_markdown(path, budget)
    elif kind == "html":
        yield from iter_html(read_all(path, budget), budget)
    elif kind == "json":
        yield from iter_json(read_all(path, budget), budget)
    elif kind == "docx":
        yield from iter_docx(path, budget)
    elif kind == "pptx":
        yield from iter_pptx(path, budget)
    elif kind == "epub":
        yield from iter_epub(path, budget)
    else:
        yield from iter_text(path, budget)


def load_document(
    path: Path,
    filename: str,
    limits: LoaderLimits,
    *,
    content_type: str | None = None,
    password: str | None = None,
) -> Document:
    """The whole document at once (tools and benchmarks; ingestion streams instead)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    kind = sniff_kind(filename, head, content_type, path)
    sections = list(
        iter_document(path, filename, limits, content_type=content_type, password=password)
    )
    return Document(kind, sections=sections)
