"""PDF (pypdf, lenient): one section per page, page numbers kept. Encrypted PDFs need a
password; corrupt ones are recovered where pypdf can, else fail clearly. Pages without a
text layer are OCRed when Tesseract is there, else reported by number."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kb.loaders.base import Budget, LoaderError, Section

__all__ = ["iter_pdf", "pdf_title"]

# (reader, page index, languages) -> the page's text by OCR, or None when OCR is missing.
OcrPage = Callable[[Any, int, str | None], str | None]


def _open(path: Path, password: str | None) -> Any:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError, PdfStreamError

    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted and not reader.decrypt(password or ""):
            # An owner-password-only PDF opens with the empty user password.
            raise LoaderError(
                "the PDF is encrypted; give its password to ingest it"
                if not password
                else "the PDF password is wrong",
                "encrypted_file",
            )
        reader.pages.__len__()  # reading the page tree surfaces corruption now
    except FileNotDecryptedError:
        raise LoaderError("the PDF is encrypted; give its password", "encrypted_file") from None
    except (PdfReadError, PdfStreamError, ValueError, KeyError, OSError) as exc:
        raise LoaderError(f"the PDF is corrupt and could not be read: {exc}") from None
    return reader


def pdf_title(reader: Any) -> str | None:
    try:
        meta = reader.metadata
        return str(meta.title) if meta and meta.title else None
    except Exception:  # noqa: BLE001 - pypdf raises anything on broken metadata; the title is optional
        return None


def iter_pdf(
    path: Path,
    budget: Budget,
    password: str | None,
    warnings: list[str],
    ocr: OcrPage | None = None,
    ocr_languages: str | None = None,
) -> Iterator[Section]:
    reader = _open(path, password)
    n = len(reader.pages)
    if n > budget.limits.max_pdf_pages:
        raise LoaderError(
            f"the PDF has {n} pages; the limit is {budget.limits.max_pdf_pages} "
            "(knowledge.max_pdf_pages)",
            "file_too_large",
        )
    failed: list[int] = []
    blank: list[int] = []
    for i in range(n):
        budget.check_time()
        try:
            text = reader.pages[i].extract_text() or ""
        except Exception:  # noqa: BLE001 - one broken page must not lose the rest
            failed.append(i + 1)
            continue
        if not text.strip() and ocr is not None:
            text = ocr(reader, i, ocr_languages) or ""
            if not text.strip():
                blank.append(i + 1)
        elif not text.strip():
            blank.append(i + 1)
        if text.strip():
            yield budget.section(Section(text, page=i + 1))
    if failed and len(failed) == n:
        raise LoaderError("no page of the PDF could be read (corrupt)")
    if failed:
        warnings.append(f"pages that could not be read: {_pages(failed)}")
    if blank:
        why = (
            "no text layer, and OCR found no text"
            if ocr
            else "no text layer (OCR is not installed)"
        )
        warnings.append(f"pages with {why}: {_pages(blank)}")


def _pages(numbers: list[int]) -> str:
    shown = ", ".join(str(p) for p in numbers[:20])
    return shown + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")
