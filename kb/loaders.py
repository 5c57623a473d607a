"""Loaders: a file on disk -> sections of text with their provenance.

Each loader streams what it can and stops at a named limit (pages, rows, extracted
characters, inflated bytes) with a ``LoaderError`` whose ``code`` and message end up in
the vector store file's ``last_error``; nothing reads an unbounded file into memory.

- txt/md: one section per Markdown section, its heading path kept as context;
- PDF (pypdf, lenient): one section per page, page numbers kept; encrypted PDFs need a
  password, corrupt ones are recovered where pypdf can, else fail clearly;
- XLSX (openpyxl read-only) and CSV: one record per row, "Header: value" pairs, sheet
  name and row number kept; the zip is checked against inflation limits before parsing;
- HTML (trafilatura): main text and title, scripts, styles and boilerplate dropped.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charset_normalizer import from_bytes

__all__ = [
    "Document",
    "LoaderError",
    "LoaderLimits",
    "Section",
    "iter_document",
    "kinds_for",
    "load_document",
    "sniff_kind",
]


class LoaderError(Exception):
    """A file that cannot be ingested; ``code`` follows the Vector Stores API's last_error."""

    def __init__(self, message: str, code: str = "invalid_file") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class LoaderLimits:
    max_pdf_pages: int = 2000
    max_sheet_rows: int = 200_000
    max_extracted_chars: int = 50_000_000
    max_xlsx_uncompressed_bytes: int = 1024**3
    max_xlsx_compression_ratio: float = 200.0
    max_text_bytes: int = 256 * 1024 * 1024
    allowed_kinds: frozenset[str] | None = None  # None = every kind below


def kinds_for(extensions: list[str]) -> frozenset[str]:
    """The loader kinds that a list of allowed file extensions stands for."""
    return frozenset(_EXT_KIND[e.lower()] for e in extensions if e.lower() in _EXT_KIND)


@dataclass(slots=True)
class Section:
    text: str
    prefix: str = ""
    page: int | None = None
    sheet: str | None = None
    row: int | None = None


@dataclass(slots=True)
class Document:
    kind: str
    title: str | None = None
    sections: list[Section] = field(default_factory=list)


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
}


def sniff_kind(filename: str, head: bytes, content_type: str | None = None) -> str:
    """The loader for a file: its magic bytes first, then the content type, then the name."""
    ct = (content_type or "").split(";")[0].strip().lower()
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if ct in ("text/html", "application/xhtml+xml"):
        return "html"
    if ct == "application/pdf":
        return "pdf"
    ext = Path(filename).suffix.lower()
    if ext in _EXT_KIND:
        return _EXT_KIND[ext]
    if ct == "text/markdown":
        return "markdown"
    if ct in ("text/csv",):
        return "csv"
    if ct == "application/json":
        return "json"
    stripped = head.lstrip()[:64].lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


def load_document(
    path: Path,
    filename: str,
    limits: LoaderLimits,
    *,
    content_type: str | None = None,
    password: str | None = None,
) -> Document:
    with open(path, "rb") as fh:
        head = fh.read(512)
    kind = sniff_kind(filename, head, content_type)
    if kind in ("text", "markdown", "csv", "json") and b"\x00" in head:
        raise LoaderError(
            f"{filename!r} is a binary file of an unsupported type", "unsupported_file"
        )
    if limits.allowed_kinds is not None and kind not in limits.allowed_kinds:
        raise LoaderError(
            f"{kind} files are not accepted here (knowledge.allowed_extensions)", "unsupported_file"
        )
    if kind == "pdf":
        doc = _load_pdf(path, limits, password)
    elif kind == "xlsx":
        doc = _load_xlsx(path, limits)
    else:
        text = _read_text(path, limits)
        if kind == "html":
            doc = _load_html(text, limits)
        elif kind == "markdown":
            doc = Document("markdown", sections=markdown_sections(text))
        elif kind == "csv":
            doc = _load_csv(text, limits)
        elif kind == "json":
            doc = _load_json(text)
        else:
            doc = Document("text", sections=[Section(text)] if text.strip() else [])
    total = sum(len(s.text) for s in doc.sections)
    if total > limits.max_extracted_chars:
        raise LoaderError(
            f"the file holds {total} characters of text; the limit is "
            f"{limits.max_extracted_chars} (knowledge.max_extracted_chars)",
            "file_too_large",
        )
    return doc


def iter_document(
    path: Path,
    filename: str,
    limits: LoaderLimits,
    *,
    content_type: str | None = None,
    password: str | None = None,
    ocr_languages: str | None = None,
    deadline: float | None = None,
    warnings: list[str] | None = None,
) -> Iterator[Section]:
    """The document's sections, in reading order."""
    del ocr_languages, deadline, warnings
    yield from load_document(
        path, filename, limits, content_type=content_type, password=password
    ).sections


def _read_text(path: Path, limits: LoaderLimits) -> str:
    size = path.stat().st_size
    if size > limits.max_text_bytes:
        raise LoaderError(f"text file of {size} bytes is over the limit", "file_too_large")
    data = path.read_bytes()
    if not data:
        return ""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        best = from_bytes(data).best()
        if best is None:
            raise LoaderError("the file is not text in any encoding we recognise") from None
        return str(best)


# -- Markdown ------------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^(```|~~~)")


def markdown_sections(text: str) -> list[Section]:
    """One section per heading; the path of headings above it becomes the chunk prefix, so
    a chunk deep in "Install > Linux" still says what it is about."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    buf: list[str] = []
    in_fence = False

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            sections.append(Section(body, prefix=" > ".join(h for _, h in path)))
        buf.clear()

    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            flush()
            level = len(m.group(1))
            path[:] = [(lv, h) for lv, h in path if lv < level]
            path.append((level, m.group(2).strip()))
        else:
            buf.append(line)
    flush()
    return sections


# -- PDF -----------------------------------------------------------------------------------


def _open_pdf(path: Path, password: str | None) -> tuple[Any, int]:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError, PdfStreamError

    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted:
            # An owner-password-only PDF opens with the empty user password.
            ok = reader.decrypt(password or "")
            if not ok:
                raise LoaderError(
                    "the PDF is encrypted; give its password to ingest it"
                    if not password
                    else "the PDF password is wrong",
                    "encrypted_file",
                )
        n = len(reader.pages)
    except LoaderError:
        raise
    except FileNotDecryptedError:
        raise LoaderError("the PDF is encrypted; give its password", "encrypted_file") from None
    except (PdfReadError, PdfStreamError, ValueError, KeyError, OSError) as exc:
        raise LoaderError(f"the PDF is corrupt and could not be read: {exc}") from None
    return reader, n


def _load_pdf(path: Path, limits: LoaderLimits, password: str | None) -> Document:
    reader, n = _open_pdf(path, password)
    if n > limits.max_pdf_pages:
        raise LoaderError(
            f"the PDF has {n} pages; the limit is {limits.max_pdf_pages} (knowledge.max_pdf_pages)",
            "file_too_large",
        )
    title = None
    try:
        meta = reader.metadata
        title = str(meta.title) if meta and meta.title else None
    except Exception:  # noqa: BLE001 - pypdf raises anything on broken metadata; the title is optional
        title = None
    doc = Document("pdf", title=title)
    failed = 0
    chars = 0
    for i in range(n):
        try:
            text = reader.pages[i].extract_text() or ""
        except Exception:  # noqa: BLE001 - one broken page must not lose the rest (pypdf raises anything on it)
            # Lenient recovery: one broken page does not lose the rest of the document.
            failed += 1
            continue
        chars += len(text)
        if chars > limits.max_extracted_chars:
            raise LoaderError("the PDF holds more text than the limit", "file_too_large")
        if text.strip():
            doc.sections.append(Section(text, page=i + 1))
    if failed == n and n:
        raise LoaderError("no page of the PDF could be read (corrupt)")
    return doc


# -- spreadsheets --------------------------------------------------------------------------


def _check_zip(path: Path, limits: LoaderLimits) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            total = 0
            for info in zf.infolist():
                total += info.file_size
                ratio = info.file_size / max(1, info.compress_size)
                if info.file_size > 1024 * 1024 and ratio > limits.max_xlsx_compression_ratio:
                    raise LoaderError(
                        f"{info.filename} inflates {ratio:.0f}x; refused as a zip bomb "
                        "(knowledge.max_xlsx_compression_ratio)",
                        "file_too_large",
                    )
            if total > limits.max_xlsx_uncompressed_bytes:
                raise LoaderError(
                    f"the workbook inflates to {total} bytes; the limit is "
                    f"{limits.max_xlsx_uncompressed_bytes} (knowledge.max_xlsx_uncompressed_bytes)",
                    "file_too_large",
                )
    except zipfile.BadZipFile:
        raise LoaderError("the file is not a valid xlsx (zip) archive") from None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _records(
    rows: Iterator[tuple[Any, ...]], sheet: str | None, budget: list[int], limits: LoaderLimits
) -> Iterator[Section]:
    """Rows -> "Header: value; ..." records; the first non-empty row is the header."""
    header: list[str] | None = None
    for number, row in enumerate(rows, start=1):
        cells = [_cell(v) for v in row]
        if not any(cells):
            continue
        if header is None:
            header = [c or f"column {i + 1}" for i, c in enumerate(cells)]
            continue
        budget[0] += 1
        if budget[0] > limits.max_sheet_rows:
            raise LoaderError(
                f"more than {limits.max_sheet_rows} rows (knowledge.max_sheet_rows)",
                "file_too_large",
            )
        names = header + [f"column {i + 1}" for i in range(len(header), len(cells))]
        text = "; ".join(f"{names[i]}: {c}" for i, c in enumerate(cells) if c)
        yield Section(text, prefix=sheet or "", sheet=sheet, row=number)


def _load_xlsx(path: Path, limits: LoaderLimits) -> Document:
    _check_zip(path, limits)
    import openpyxl

    doc = Document("xlsx")
    budget = [0]
    # A file object, not the path: stored uploads have no extension for openpyxl to check.
    with open(path, "rb") as fh:
        try:
            wb = openpyxl.load_workbook(fh, read_only=True, data_only=True)
        except Exception as exc:  # noqa: BLE001 - openpyxl raises anything on a malformed workbook; it becomes the file's error
            raise LoaderError(f"the workbook could not be read: {exc}") from None
        try:
            for ws in wb.worksheets:
                rows = ws.iter_rows(values_only=True)
                doc.sections.extend(_records(rows, ws.title, budget, limits))
        finally:
            wb.close()
    return doc


def _load_csv(text: str, limits: LoaderLimits) -> Document:
    try:
        dialect = csv.Sniffer().sniff(text[:4096])
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    return Document("csv", sections=list(_records(iter(map(tuple, reader)), None, [0], limits)))


def _load_json(text: str) -> Document:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoaderError(f"invalid JSON: {exc}") from None
    if isinstance(data, list):
        return Document(
            "json",
            sections=[
                Section(json.dumps(item, ensure_ascii=False, indent=1), row=i + 1)
                for i, item in enumerate(data)
            ],
        )
    return Document("json", sections=[Section(json.dumps(data, ensure_ascii=False, indent=1))])


# -- HTML ----------------------------------------------------------------------------------


def _load_html(html: str, limits: LoaderLimits) -> Document:
    import trafilatura

    title: str | None = None
    text: str | None = None
    try:
        result = trafilatura.bare_extraction(
            html, output_format="python", with_metadata=True, include_tables=True, as_dict=True
        )
    except Exception:  # noqa: BLE001 - trafilatura raises anything on odd markup; the lxml fallback takes over
        result = None
    if isinstance(result, dict):
        title = result.get("title") or None
        text = result.get("text") or None
    if not text:
        # Short pages fall below trafilatura's content heuristics: take the body text.
        text, title2 = _plain_html_text(html)
        title = title or title2
    doc = Document("html", title=title)
    if text and text.strip():
        doc.sections.append(Section(text.strip(), prefix=title or ""))
    return doc


def _plain_html_text(html: str) -> tuple[str, str | None]:
    import lxml.html

    try:
        root = lxml.html.fromstring(html)
    except Exception:  # noqa: BLE001 - lxml raises anything on odd markup; such a page has no text
        return "", None
    for bad in root.xpath(
        "//script|//style|//noscript|//template|//nav|//header|//footer|//aside|//form"
    ):
        bad.drop_tree()
    titles = root.xpath("//title/text()")
    body = root.find("body")
    text = (body if body is not None else root).text_content()
    return re.sub(r"\n\s*\n+", "\n\n", text).strip(), (titles[0].strip() if titles else None)
