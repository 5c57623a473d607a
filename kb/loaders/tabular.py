"""Spreadsheets and CSV: one record per row, "Header: value" pairs, sheet and row kept.

Rows stream one at a time and every budget is checked per row: rows per file, cells per
row, characters per cell, characters in all. A header repeats in every record, so each
header name is cut to ``max_header_chars`` there (a 100 KB header cell would otherwise be
copied into every row). XLSX zips are checked against inflation limits before parsing.
"""

from __future__ import annotations

import codecs
import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kb.loaders.base import Budget, LoaderError, LoaderLimits, Section
from kb.loaders.text import detect_encoding

__all__ = ["check_zip", "iter_csv", "iter_xlsx", "records"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def records(
    rows: Iterator[tuple[Any, ...]], sheet: str | None, budget: Budget, first_row: int = 1
) -> Iterator[Section]:
    """Rows -> "Header: value; ..." records; the first non-empty row is the header."""
    limits = budget.limits
    header: list[str] | None = None
    for number, row in enumerate(rows, start=first_row):
        if len(row) > limits.max_cells_per_row:
            raise LoaderError(
                f"row {number} has {len(row)} cells; the limit is {limits.max_cells_per_row} "
                "(knowledge.max_cells_per_row)",
                "file_too_large",
            )
        cells = [_cell(v) for v in row]
        for c in cells if header is not None else ():
            if len(c) > limits.max_cell_chars:
                raise LoaderError(
                    f"a cell in row {number} holds {len(c)} characters; the limit is "
                    f"{limits.max_cell_chars} (knowledge.max_cell_chars)",
                    "file_too_large",
                )
        budget.check_time()
        if not any(cells):
            continue
        if header is None:
            header = [
                (c or f"column {i + 1}")[: limits.max_header_chars] for i, c in enumerate(cells)
            ]
            continue
        budget.record()
        names = header + [f"column {i + 1}" for i in range(len(header), len(cells))]
        text = "; ".join(f"{names[i]}: {c}" for i, c in enumerate(cells) if c)
        yield budget.section(Section(text, prefix=sheet or "", sheet=sheet, row=number))


def check_zip(path: Path, limits: LoaderLimits) -> None:
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
                    f"the archive inflates to {total} bytes; the limit is "
                    f"{limits.max_xlsx_uncompressed_bytes} (knowledge.max_xlsx_uncompressed_bytes)",
                    "file_too_large",
                )
    except zipfile.BadZipFile:
        raise LoaderError("the file is not a valid zip archive") from None


def iter_xlsx(path: Path, budget: Budget) -> Iterator[Section]:
    check_zip(path, budget.limits)
    import openpyxl

    # A file object, not the path: stored uploads have no extension for openpyxl to check.
    with open(path, "rb") as fh:
        try:
            wb = openpyxl.load_workbook(fh, read_only=True, data_only=True)
        except Exception as exc:  # noqa: BLE001 - openpyxl raises anything on a malformed workbook
            raise LoaderError(f"the workbook could not be read: {type(exc).__name__}") from None
        try:
            for ws in wb.worksheets:
                rows = _guarded(ws.iter_rows(values_only=True))
                yield from records(rows, ws.title, budget)
        finally:
            wb.close()


def _guarded(rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """openpyxl's rows, its errors on a malformed sheet (a shared-string index past the
    table, a bad cell reference) turned into the file's error."""
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except (IndexError, KeyError, ValueError, TypeError) as exc:
            raise LoaderError(f"the workbook is malformed ({type(exc).__name__}: {exc})") from None
        yield row


def iter_csv(path: Path, budget: Budget) -> Iterator[Section]:
    limits = budget.limits
    size = path.stat().st_size
    if size > limits.max_text_bytes:
        raise LoaderError(f"the CSV file is {size} bytes; over the limit", "file_too_large")
    with open(path, "rb") as raw:
        head = raw.read(64 * 1024)
        encoding, skip = detect_encoding(head)
        raw.seek(skip)
        sample = codecs.decode(head[skip:], encoding, "replace")[:8192]
        try:
            dialect: Any = csv.Sniffer().sniff(sample)
        except csv.Error:
            dialect = csv.excel
        text = io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")
        # The csv module's field limit is process-wide (ours is the same for every file).
        # It stops a runaway field while parsing; the exact cell limit is checked per row,
        # and header cells, cut where they repeat, may be longer.
        csv.field_size_limit(4 * max(limits.max_cell_chars, 1024))
        reader = csv.reader(text, dialect)
        yield from records(_csv_rows(reader, limits), None, budget)


def _csv_rows(reader: Any, limits: LoaderLimits) -> Iterator[tuple[Any, ...]]:
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The csv module's errors carry no kind: an over-long field and a malformed
            # file both end here, and the message says which limit may apply.
            raise LoaderError(
                f"the CSV file is malformed or holds a field longer than "
                f"{4 * limits.max_cell_chars} characters (knowledge.max_cell_chars): {exc}",
                "file_too_large",
            ) from None
        yield tuple(row)
