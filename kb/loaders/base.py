"""What every loader shares: sections, the errors they end with, and the budget they
spend while reading (checked as they go, never after)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["Budget", "Document", "LoaderError", "LoaderLimits", "Section"]


class LoaderError(Exception):
    """A file that cannot be ingested; ``code`` follows the Vector Stores API's last_error."""

    def __init__(self, message: str, code: str = "invalid_file") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class LoaderLimits:
    """Every budget one file's reading spends (each a ``knowledge.*`` setting)."""

    max_pdf_pages: int = 2000
    max_sheet_rows: int = 200_000
    max_extracted_chars: int = 50_000_000
    max_xlsx_uncompressed_bytes: int = 1024**3
    max_xlsx_compression_ratio: float = 200.0
    max_text_bytes: int = 256 * 1024 * 1024
    max_cells_per_row: int = 16_384
    max_cell_chars: int = 65_536
    max_header_chars: int = 128
    max_html_depth: int = 200
    allowed_kinds: frozenset[str] | None = None  # None = every kind
    allowed_extensions: frozenset[str] | None = None  # None = any name


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


class Budget:
    """Characters, records and wall-clock time of one file, spent as it is read."""

    def __init__(self, limits: LoaderLimits, deadline: float | None = None) -> None:
        self.limits = limits
        self.deadline = deadline
        self.chars = 0
        self.records = 0

    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise LoaderError(
                "reading the file took longer than its time budget "
                "(knowledge.max_seconds_per_file)",
                "file_too_large",
            )

    def text(self, n: int) -> None:
        self.chars += n
        if self.chars > self.limits.max_extracted_chars:
            raise LoaderError(
                f"the file holds more than {self.limits.max_extracted_chars} characters of "
                "text (knowledge.max_extracted_chars)",
                "file_too_large",
            )
        self.check_time()

    def record(self) -> None:
        self.records += 1
        if self.records > self.limits.max_sheet_rows:
            raise LoaderError(
                f"the file holds more than {self.limits.max_sheet_rows} rows "
                "(knowledge.max_sheet_rows)",
                "file_too_large",
            )

    def section(self, section: Section) -> Section:
        self.text(len(section.text) + len(section.prefix))
        return section
