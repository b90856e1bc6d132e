"""The PDF report as a reader sees it: printed by Chromium, converted to PNG pages with
poppler's ``pdftoppm``, its text read back with ``pdftotext``.

Checks: one PNG per PDF page; the first page states the decision; every page has its footer
``page N / M``; the table of contents' page numbers are the pages where the sections start;
the creation date is the run's own time and the tagged structure's node IDs are renumbered,
so printing the same run twice gives the same bytes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from qa.cli import main
from qa.store import Store
from reports.pdf import (
    ChromiumNotFoundError,
    _renumber_node_ids,
    render_pdf,
    render_run_pdf,
    section_pages,
)


def _pages_text(pdf: Path) -> list[str]:
    """Text of each page (pdftotext separates pages with form feeds)."""
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True,
                          capture_output=True, text=True).stdout
    return text.split("\f")[:-1]


# Tests marked slow use Chromium: the module prints the run twice (about 12 s).
@pytest.fixture(scope="module")
def printed(dicom_run, chromium, poppler, tmp_path_factory):
    """The run printed twice: from the HTML already rendered, and by ``qa report``."""
    folder = tmp_path_factory.mktemp("pdf")
    with Store(dicom_run.url) as store:
        run = store.run(dicom_run.run_id)
        first = render_run_pdf(store, dicom_run.run_id, folder / "a.pdf",
                               html_path=dicom_run.html_en)
    # `qa report RUN --format both`: the HTML rendered again, then printed
    out = subprocess.run([sys.executable, "-m", "qa", "report", str(dicom_run.run_id),
                          "--store", dicom_run.url, "--out", str(folder / "both"),
                          "--format", "both"], check=True, capture_output=True, text=True)
    both = [Path(line) for line in out.stdout.splitlines()]
    return first, both, run


@pytest.mark.slow
def test_pdf_pages_convert_to_png_and_carry_the_decision_and_footers(printed, tmp_path):
    pdf = printed[0]
    pages = _pages_text(pdf)
    assert 4 <= len(pages) <= 40
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(pdf), str(tmp_path / "p")], check=True)
    pngs = sorted(tmp_path.glob("p-*.png"))
    assert len(pngs) == len(pages)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    first = " ".join(pages[0].split())
    assert "Decision proposed to the committee" in first
    assert "Not approved for clinical use" in first
    for number, page in enumerate(pages, start=1):
        assert f"page {number} / {len(pages)}" in " ".join(page.split())


@pytest.mark.slow
def test_table_of_contents_page_numbers_are_where_sections_start(printed):
    pdf = printed[0]
    pages = _pages_text(pdf)
    toc_page = next(i for i, p in enumerate(pages) if p.lstrip().startswith("Contents"))
    toc = {}
    for line in pages[toc_page].splitlines():
        match = re.fullmatch(r"\s*(\S.*?\S)\s{2,}(\d+)\s*", line)
        if match:
            toc[match.group(1)] = int(match.group(2))
    for title in ("Scope and traceability", "HU accuracy", "Risk register", "Sign-off",
                  "Recommendations"):
        page = toc[next(t for t in toc if t.startswith(title))]
        lines = [" ".join(line.split()) for line in pages[page - 1].splitlines()]
        assert any(line.startswith(title) for line in lines), (title, page)
    assert section_pages(pdf.read_bytes())["signoff"] == toc["Sign-off"]


@pytest.mark.slow
def test_same_run_prints_the_same_bytes_dated_by_the_run(printed, dicom_run):
    first, both, run = printed
    assert [p.name for p in both] == ["both.html", "both.pdf"]
    html_a, html_b = dicom_run.html_en.read_bytes(), both[0].read_bytes()
    assert html_a == html_b, _first_difference(html_a, html_b)  # HTML: byte-identical
    pdf_a, pdf_b = first.read_bytes(), both[1].read_bytes()
    assert pdf_a == pdf_b, _first_difference(pdf_a, pdf_b)      # PDF too (same Chromium)
    stamp = run["finished_at"].strftime("%Y%m%d%H%M%S")
    assert f"/CreationDate (D:{stamp}+00'00')".encode() in first.read_bytes()


def test_without_chromium_the_pdf_fails_with_what_to_install(dicom_run, monkeypatch, tmp_path,
                                                             capsys):
    monkeypatch.setenv("QA_CHROMIUM", "no-such-browser")
    with pytest.raises(ChromiumNotFoundError, match="QA_CHROMIUM='no-such-browser' is not an "
                                                    "executable"):
        render_pdf(dicom_run.html_en, tmp_path / "r.pdf", footer_label="x")
    assert not (tmp_path / "r.pdf").exists()
    code = main(["report", str(dicom_run.run_id), "--store", dicom_run.url,
                 "--out", str(tmp_path / "r.pdf"), "--format", "pdf"])
    assert code == 40
    assert "QA_CHROMIUM" in capsys.readouterr().err


def _tagged(first_id: int, gap: int) -> bytes:
    """A tagged-PDF fragment as Chromium writes it: two elements, a header reference, the ID
    tree with its limits, and an outline title that merely looks like an ID."""
    a, b = b"node%08d" % first_id, b"node%08d" % (first_id + gap)
    return (b"10 0 obj\n<</S /TH\n/ID (" + a + b")>>\nendobj\n"
            b"11 0 obj\n<</S /TD\n/A [<</O /Table\n/Headers [(" + a + b")]>>]\n/ID ("
            + b + b")>>\nendobj\n12 0 obj\n<</Limits [(" + a + b") (" + b + b")]\n/Names [("
            + a + b") 10 0 R (" + b + b") 11 0 R]>>\nendobj\n"
            b"13 0 obj\n<</Title (node00000007)>>\nendobj\n")


def test_structure_node_ids_are_renumbered_by_rank_whatever_chromium_counted():
    # Chromium numbered the same elements 14 and 20 in one print, 15 and 21 in the next
    first, second = _renumber_node_ids(_tagged(14, 6)), _renumber_node_ids(_tagged(15, 6))
    assert first == second
    assert len(first) == len(_tagged(14, 6))  # the cross-reference offsets stay valid
    assert b"/Names [(node00000001) 10 0 R (node00000002) 11 0 R]" in first  # still sorted
    assert b"/Limits [(node00000001) (node00000002)]" in first
    assert b"/Headers [(node00000001)]" in first
    assert b"/Title (node00000007)" in first  # not an element's ID: left as written


def _first_difference(a: bytes, b: bytes) -> str:
    """Where two outputs first differ, with 80 bytes of context (for the failure message)."""
    n = min(len(a), len(b))
    at = next((i for i in range(n) if a[i] != b[i]), n)
    return (f"lengths {len(a)} / {len(b)}; first difference at byte {at}: "
            f"{a[max(0, at - 40):at + 40]!r} / {b[max(0, at - 40):at + 40]!r}")
