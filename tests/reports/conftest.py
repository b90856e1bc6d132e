"""A real run whose report the PDF, browser and de-identification tests look at.

Three synthetic cases stored as DICOM CT and synthetic-CT series that carry every identifying
attribute of :data:`tests.qa.io.dicom_factory.IDENTIFYING` (patient name, ID, birth date,
institution, dates ...), run through the real runner (precomputed adapter, ``hu_accuracy``)
into a real store, and rendered once (HTML in English and French, PDF in English). The
sCT is the CT plus a constant offset inside the body, so the MAE of each case is the
offset's magnitude: 10 HU (OK), 80 HU (TOLERANCE), 100 HU (ACTION) against 70 / 90 HU.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from qa.io import read_image, write_nifti
from qa.runner import run_protocol
from qa.store import Store
from reports.html import render_run_report
from tests.cohort_builders import make_ct
from tests.qa.io.dicom_factory import write_series

OFFSETS_HU = {"PSEUDO-01": 10.0, "PSEUDO-02": 80.0, "PSEUDO-03": -100.0}
#: Set to 1 to skip the tests that need Chromium on a machine without it (never in CI).
SKIP_ENV = "QA_SKIP_BROWSER_TESTS"


@dataclass(frozen=True)
class RenderedRun:
    """The store URL and run id, the rendered HTML reports (en, fr) and the folder."""

    url: str
    run_id: int
    html_en: Path
    html_fr: Path
    folder: Path


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable; a test that needs it FAILS when it is missing (so CI cannot
    pass without the browser checks), unless ``QA_SKIP_BROWSER_TESTS=1`` is set."""
    from reports.pdf import ChromiumNotFoundError, find_chromium

    try:
        return find_chromium()
    except ChromiumNotFoundError as exc:
        if os.environ.get(SKIP_ENV) == "1":
            pytest.skip(f"{exc} ({SKIP_ENV}=1)")
        pytest.fail(f"{exc}. `make test` installs chromium and poppler-utils; to skip the "
                    f"browser and PDF tests on a machine without them set {SKIP_ENV}=1",
                    pytrace=False)


@pytest.fixture(scope="session")
def poppler() -> None:
    """poppler-utils (``pdftoppm``, ``pdftotext``), which read the PDF back as a person would;
    missing: FAIL like :func:`chromium`, unless ``QA_SKIP_BROWSER_TESTS=1``."""
    missing = [tool for tool in ("pdftoppm", "pdftotext") if shutil.which(tool) is None]
    if not missing:
        return
    message = (f"{', '.join(missing)} not found: install poppler-utils (`make test` does it); "
               f"to skip the PDF tests on a machine without it set {SKIP_ENV}=1")
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def dicom_run(tmp_path_factory) -> RenderedRun:
    folder = tmp_path_factory.mktemp("dicom-run")
    cohort = folder / "cohort"
    rows = []
    for i, (case_id, offset) in enumerate(OFFSETS_HU.items()):
        ct = make_ct(i)
        body = ct.array > -500
        sct = np.where(body, ct.array + offset, ct.array)
        origin_lps = (-16.0, -14.0, -12.0)
        for role, values in (("ct", ct.array), ("sct", sct)):
            stored = np.rint(values + 1024.0).astype(np.int16)
            write_series(cohort / case_id / role, stored, origin_lps=origin_lps, step_mm=3.0,
                         pixel_spacing=(2.0, 2.0), slice_thickness=3.0)
        read_back = read_image(cohort / case_id / "ct")
        write_nifti(read_back.with_array(read_back.array > -500), cohort / case_id / "body.nii.gz")
        rows.append({"case_id": case_id, "ct": f"{case_id}/ct", "sct": f"{case_id}/sct",
                     "body": f"{case_id}/body.nii.gz", "sex": "MF"[i % 2],
                     "bmi": str(22 + 4 * i)})
    with open(cohort / "cases.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    protocol = cohort / "protocol.yaml"
    protocol.write_text("""\
name: sCT HU accuracy — DICOM report test
kind: commissioning
model: {name: vendor-sct, version: "1.0", adapter: precomputed, output: sct}
cases: cases.csv
attributes:
  sex: {values: [F, M]}
  bmi: {min: 10, max: 70, unit: kg/m2}
checks:
  - check: hu_accuracy
    reference: ct
    evaluated: sct
    mask: body
    tolerances:
      mae_hu: {tolerance: {max: 70}, action: {max: 90}}
    cohort:
      - metric: mae_hu
        statistic: mean
        tolerance: {max: 65}
        action: {max: 80}
""", encoding="utf-8")
    url = f"sqlite:///{folder / 'qa.db'}"
    with Store(url) as store:
        run_id = run_protocol(protocol, store, operator="physicist A").run_id
        html_en = render_run_report(store, run_id, folder / "report-en.html")
        html_fr = render_run_report(store, run_id, folder / "report-fr.html", language="fr")
    return RenderedRun(url, run_id, html_en, html_fr, folder)
