"""Word, PowerPoint and EPUB files keep their headings and tables as context; scanned PDF
pages are OCRed through Tesseract (a page rendered to an image in the test, no text
layer), or, without Tesseract, reported by page number; other kinds are named."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from kb.loaders import LoaderError, LoaderLimits, iter_document
from kb.loaders.ocr import installed_languages, tesseract_ocr


def _docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Pump manual", 0)
    d.add_heading("Maintenance", 1)
    d.add_paragraph("Check the seals every month.")
    d.add_heading("Reset", 2)
    d.add_paragraph("Hold the red button for ten seconds.")
    table = d.add_table(rows=3, cols=2)
    for row, (a, b) in zip(
        table.rows, [("Part", "Interval"), ("Filter", "yearly"), ("Seal", "monthly")], strict=True
    ):
        row.cells[0].text, row.cells[1].text = a, b
    d.save(str(path))


def _pptx(path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Quarterly results"
    slide.placeholders[1].text = "Revenue grew by twelve percent."
    slide.notes_slide.notes_text_frame.text = "Mention the new market."
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(4), Inches(1)).table
    table.cell(0, 0).text, table.cell(0, 1).text = "Region", "Growth"
    table.cell(1, 0).text, table.cell(1, 1).text = "Asia", "20%"
    deck.save(str(path))


def _epub(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
        zf.writestr(
            "META-INF/container.xml",
            '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container" version="1.0">'
            '<rootfiles><rootfile full-path="OEBPS/book.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        zf.writestr(
            "OEBPS/book.opf",
            '<package xmlns="http://www.idpf.org/2007/opf" version="3.0"><manifest>'
            '<item id="c2" href="two.xhtml" media-type="application/xhtml+xml"/>'
            '<item id="c1" href="one.xhtml" media-type="application/xhtml+xml"/>'
            '</manifest><spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>',
        )
        for name, text in (
            ("one", "The lighthouse keeper woke at dawn."),
            ("two", "A storm came from the west."),
        ):
            zf.writestr(
                f"OEBPS/{name}.xhtml",
                f"<html><head><title>{name}</title></head><body><p>{text}</p></body></html>",
            )


def _scanned_pdf(path: Path, lines: list[str]) -> None:
    """Text drawn into an image, saved as an image-only PDF (no text layer)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (1400, 120 + 90 * len(lines)), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=48)
    for i, line in enumerate(lines):
        draw.text((60, 60 + 90 * i), line, fill="black", font=font)
    img.save(str(path), "PDF", resolution=150)


def _sections(path: Path, **kw: object) -> list[tuple[str, str, int | None]]:
    return [
        (s.prefix, s.text, s.page) for s in iter_document(path, path.name, LoaderLimits(), **kw)
    ]  # type: ignore[arg-type]


def test_docx_keeps_heading_paths_and_table_rows(tmp_path: Path) -> None:
    path = tmp_path / "manual.docx"
    _docx(path)
    got = _sections(path)
    assert ("Pump manual > Maintenance", "Check the seals every month.", None) in got
    assert (
        "Pump manual > Maintenance > Reset",
        "Hold the red button for ten seconds.",
        None,
    ) in got
    rows = [t for p, t, _ in got if t.startswith("Part:")]
    assert rows == ["Part: Filter; Interval: yearly", "Part: Seal; Interval: monthly"]


def test_pptx_is_one_section_per_slide_with_tables_and_notes(tmp_path: Path) -> None:
    path = tmp_path / "deck.pptx"
    _pptx(path)
    ((prefix, text, page),) = _sections(path)
    assert prefix == "Slide 1: Quarterly results" and page == 1
    assert "Revenue grew by twelve percent." in text
    assert "Region: Asia; Growth: 20%" in text
    assert text.endswith("Notes: Mention the new market.")


def test_epub_reads_the_spine_in_order(tmp_path: Path) -> None:
    path = tmp_path / "book.epub"
    _epub(path)
    text = " ".join(t for _, t, _ in _sections(path))
    assert text.index("lighthouse keeper") < text.index("storm came")


def test_other_kinds_are_named(tmp_path: Path) -> None:
    odt = tmp_path / "letter.odt"
    with zipfile.ZipFile(odt, "w") as zf:
        zf.writestr("content.xml", "<office:document-content/>")
    with pytest.raises(
        LoaderError, match=r"opendocument files \(\.odt\) are not supported; supported: csv, docx"
    ):
        _sections(odt)
    bare = tmp_path / "archive.zip"
    with zipfile.ZipFile(bare, "w") as zf:
        zf.writestr("a.txt", "x")
    with pytest.raises(LoaderError, match=r"zip files \(\.zip\) are not supported"):
        _sections(bare)
    fake = tmp_path / "broken.docx"
    fake.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(LoaderError):
        _sections(fake)


def test_a_scanned_page_without_tesseract_is_reported_by_number(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    _scanned_pdf(path, ["The pump resets in ten seconds."])
    warnings: list[str] = []
    assert _sections(path, ocr=None, warnings=warnings) == []
    assert warnings == ["pages with no text layer (OCR is not installed): 1"]


@pytest.mark.skipif(not {"eng"} <= installed_languages(), reason="tesseract-ocr is not installed")
def test_a_scanned_page_is_read_by_ocr(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    _scanned_pdf(path, ["The water pump resets", "after ten seconds."])
    ocr = tesseract_ocr()
    got = _sections(path, ocr=ocr, ocr_languages="eng")
    assert len(got) == 1 and got[0][2] == 1
    text = " ".join(got[0][1].split()).lower()
    assert "water pump resets" in text and "ten seconds" in text
    with pytest.raises(LoaderError, match="not installed: xyz"):
        _sections(path, ocr=ocr, ocr_languages="xyz")


@pytest.mark.skipif(
    not {"eng", "chi_sim"} <= installed_languages(), reason="tesseract chi_sim is not installed"
)
def test_the_default_ocr_languages_read_chinese_too(tmp_path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    fonts = [p for p in Path("/usr/share/fonts").rglob("*") if p.suffix in (".ttc", ".ttf", ".otf")]
    cjk = [p for p in fonts if any(k in p.name.lower() for k in ("cjk", "wqy", "noto", "droid"))]
    if not cjk:
        pytest.skip("no CJK font to draw the test page with")
    img = Image.new("RGB", (1200, 200), "white")
    ImageDraw.Draw(img).text(
        (40, 50), "退款五个工作日到账", fill="black", font=ImageFont.truetype(str(cjk[0]), 72)
    )
    buf = io.BytesIO()
    img.save(buf, "PDF", resolution=150)
    path = tmp_path / "zh.pdf"
    path.write_bytes(buf.getvalue())
    (got,) = _sections(path, ocr=tesseract_ocr())
    assert "工作日" in got[1].replace(" ", "")
