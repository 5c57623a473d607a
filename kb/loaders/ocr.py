"""OCR of PDF pages that have no text layer, through Tesseract when it is installed
(``apt-get install tesseract-ocr tesseract-ocr-chi-sim`` and ``pytesseract``).

A scanned page is one or more images; each is read with the file's languages (the
vector store file's ``ocr_languages``, else ``knowledge.ocr_languages``, else
``eng+chi_sim`` where both are installed). Without Tesseract the PDF loader reports the
pages by number instead (never silently empty).
"""

from __future__ import annotations

import functools
import logging
import shutil
from typing import Any

from kb.loaders.base import LoaderError
from kb.loaders.pdf import OcrPage

__all__ = ["installed_languages", "tesseract_ocr"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def installed_languages() -> frozenset[str]:
    """Tesseract's installed languages (empty when Tesseract or pytesseract is missing)."""
    if shutil.which("tesseract") is None:
        return frozenset()
    try:
        import pytesseract

        return frozenset(pytesseract.get_languages(config=""))
    except (ImportError, OSError, RuntimeError) as exc:
        log.warning("tesseract is not usable: %s", exc)
        return frozenset()


def _default_languages(installed: frozenset[str]) -> str:
    wanted = [lang for lang in ("eng", "chi_sim") if lang in installed]
    return "+".join(wanted) or sorted(installed - {"osd"})[0]


def tesseract_ocr(default: str | None = None, page_timeout_s: float = 60.0) -> OcrPage | None:
    """An OCR function for the PDF loader, or None when Tesseract is not installed."""
    installed = installed_languages()
    if not installed - {"osd"}:
        return None
    fallback = default or _default_languages(installed)

    def ocr(reader: Any, index: int, languages: str | None) -> str | None:
        import pytesseract

        langs = languages or fallback
        missing = [x for x in langs.split("+") if x and x not in installed]
        if missing:
            raise LoaderError(
                f"OCR language(s) not installed: {', '.join(missing)} "
                f"(installed: {', '.join(sorted(installed))})",
                "unsupported_file",
            )
        texts = []
        for image in reader.pages[index].images:
            try:
                texts.append(
                    pytesseract.image_to_string(image.image, lang=langs, timeout=page_timeout_s)
                )
            except RuntimeError as exc:  # pytesseract's timeout
                raise LoaderError(
                    f"OCR of page {index + 1} took longer than {page_timeout_s:.0f} s "
                    "(knowledge.ocr_page_timeout_s)",
                    "file_too_large",
                ) from exc
        return "\n".join(t.strip() for t in texts if t.strip()) or None

    return ocr
