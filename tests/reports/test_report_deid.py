"""No identifying DICOM value reaches the report, in HTML or PDF.

The run of ``conftest.dicom_run`` reads DICOM series whose every file carries a patient name,
ID, birth date, institution, station, accession number and dates; the case identifiers are
the case table's pseudonyms (``PSEUDO-01`` ...), and those are what the report shows.
"""

from __future__ import annotations

import pytest

from tests.qa.io.dicom_factory import IDENTIFYING
from tests.reports.conftest import OFFSETS_HU

# Values too short or too common to search for as text ("F" is also the sex attribute the
# case table declares; "054Y" is an age string).
SEARCHABLE = {k: v for k, v in IDENTIFYING.items() if len(v) >= 6}


def _variants(value: str) -> set[str]:
    """The value as stored and as a viewer would print it (``Doe^Jane`` -> ``Doe Jane``)."""
    return {value, value.replace("^", " "), value.replace("^", ", "), value.upper()}


def test_identifying_dicom_values_never_appear_in_the_html(dicom_run):
    assert "PatientName" in SEARCHABLE and "PatientID" in SEARCHABLE
    for path in (dicom_run.html_en, dicom_run.html_fr):
        html = path.read_text(encoding="utf-8")
        for case_id in OFFSETS_HU:  # the pseudonyms are there: the report is about these cases
            assert case_id in html
        for keyword, value in SEARCHABLE.items():
            for variant in _variants(value):
                assert variant not in html, f"{keyword} value {variant!r} printed in {path.name}"


@pytest.mark.slow  # prints a PDF with Chromium (about 5 s)
def test_identifying_dicom_values_never_appear_in_the_french_pdf(dicom_run, chromium, poppler,
                                                                tmp_path):
    import subprocess

    from qa.store import Store
    from reports.pdf import render_run_pdf

    with Store(dicom_run.url) as store:
        pdf = render_run_pdf(store, dicom_run.run_id, tmp_path / "r.pdf", language="fr",
                             html_path=dicom_run.html_fr)
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True,
                          capture_output=True, text=True).stdout
    assert "PSEUDO-01" in text
    assert "Utilisation clinique non approuvée" in " ".join(text.split())
    for keyword, value in SEARCHABLE.items():
        for variant in _variants(value):
            assert variant not in text, f"{keyword} value {variant!r} printed in the PDF"
