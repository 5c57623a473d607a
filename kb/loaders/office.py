"""Word (.docx), PowerPoint (.pptx) and EPUB: sections with their context kept.

- docx (python-docx): paragraphs in body order, cut at headings; each section carries
  its heading path ("Guide > Install") as context, and each table row is a record of
  "Header: value" pairs under the heading it sits below;
- pptx (python-pptx): one section per slide, its title as context, text frames and
  tables in shape order, the speaker notes after;
- epub: the spine's XHTML documents in reading order, each through the HTML loader.

The zip container is checked like a workbook's (inflated size, compression ratio) before
anything is read.
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

from defusedxml import ElementTree

from kb.loaders.base import Budget, LoaderError, Section
from kb.loaders.markup import iter_html
from kb.loaders.tabular import check_zip

__all__ = ["iter_docx", "iter_epub", "iter_pptx"]


def _heading_level(paragraph: Any) -> int | None:
    name = (paragraph.style.name if paragraph.style is not None else "") or ""
    if name == "Title":
        return 0
    if name.startswith("Heading"):
        tail = name.removeprefix("Heading").strip()
        return int(tail) if tail.isdigit() else 1
    return None


def _table_rows(table: Any, budget: Budget) -> Iterator[str]:
    rows = table.rows
    if not rows:
        return
    header = [c.text.strip()[: budget.limits.max_header_chars] for c in rows[0].cells]
    for row in list(rows)[1:]:
        budget.record()
        cells = [c.text.strip() for c in row.cells][: budget.limits.max_cells_per_row]
        pairs = [f"{h}: {v}" if h else v for h, v in zip(header, cells, strict=False) if v]
        if pairs:
            yield "; ".join(pairs)


def iter_docx(path: Path, budget: Budget) -> Iterator[Section]:
    import docx
    from docx.oxml.ns import qn
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    check_zip(path, budget.limits)
    try:
        document = docx.Document(str(path))
    except Exception as exc:  # noqa: BLE001 - python-docx raises anything on a broken part
        raise LoaderError(f"the Word document could not be read: {exc}") from None
    path_parts: list[tuple[int, str]] = []
    lines: list[str] = []

    def context() -> str:
        return " > ".join(t for _, t in path_parts)

    def flush() -> Iterator[Section]:
        text = "\n".join(lines).strip()
        lines.clear()
        if text:
            yield budget.section(Section(text, prefix=context()))

    for child in document.element.body.iterchildren():
        budget.check_time()
        if child.tag == qn("w:p"):
            para = Paragraph(child, document)
            text = para.text.strip()
            level = _heading_level(para)
            if level is not None and text:
                yield from flush()
                path_parts = [(lv, t) for lv, t in path_parts if lv < level]
                path_parts.append((level, text))
            elif text:
                lines.append(text)
        elif child.tag == qn("w:tbl"):
            yield from flush()
            for record in _table_rows(Table(child, document), budget):
                yield budget.section(Section(record, prefix=context()))
    yield from flush()


def iter_pptx(path: Path, budget: Budget) -> Iterator[Section]:
    from pptx import Presentation

    check_zip(path, budget.limits)
    try:
        deck = Presentation(str(path))
    except Exception as exc:  # noqa: BLE001 - python-pptx raises anything on a broken part
        raise LoaderError(f"the presentation could not be read: {exc}") from None
    for number, slide in enumerate(deck.slides, start=1):
        budget.check_time()
        title_shape = slide.shapes.title
        title = title_shape.text_frame.text.strip() if title_shape is not None else ""
        parts: list[str] = []
        for shape in slide.shapes:
            if shape is title_shape:
                continue
            if shape.has_text_frame and shape.text_frame.text.strip():
                parts.append(shape.text_frame.text.strip())
            if getattr(shape, "has_table", False) and shape.has_table:
                parts.extend(_table_rows(shape.table, budget))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                parts.append(f"Notes: {notes}")
        text = "\n".join(parts).strip()
        if text or title:
            prefix = f"Slide {number}: {title}" if title else f"Slide {number}"
            yield budget.section(Section(text or title, prefix=prefix, page=number))


_OPF = "{http://www.idpf.org/2007/opf}"
_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"


def iter_epub(path: Path, budget: Budget) -> Iterator[Section]:
    check_zip(path, budget.limits)
    try:
        with zipfile.ZipFile(path) as zf:
            root = ElementTree.fromstring(zf.read("META-INF/container.xml"))
            rootfile = root.find(f".//{_CONTAINER}rootfile")
            if rootfile is None:
                raise LoaderError("the EPUB names no package document")
            opf_path = rootfile.get("full-path", "")
            opf = ElementTree.fromstring(zf.read(opf_path))
            base = posixpath.dirname(opf_path)
            items = {i.get("id"): i.get("href", "") for i in opf.iter(f"{_OPF}item") if i.get("id")}
            spine = [r.get("idref") for r in opf.iter(f"{_OPF}itemref")]
            for idref in spine:
                href = items.get(idref)
                if not href:
                    continue
                budget.check_time()
                raw = zf.read(posixpath.normpath(posixpath.join(base, href)))
                yield from iter_html(raw.decode("utf-8", "replace"), budget)
    except (KeyError, ParseError, zipfile.BadZipFile) as exc:
        raise LoaderError(f"the EPUB could not be read: {exc}") from None
