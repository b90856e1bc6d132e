"""Specification of the segmentation report section: built from stored rows, both languages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from checks.segmentation import SegmentationCheck
from qa.io.structures import structure_metadata
from qa.runner import run_protocol
from qa.store import Store
from qa.volume import Volume
from reports._format import Formatter
from reports.html import render_run_report
from reports.sections.segmentation import section_data
from tests.checks._segmentation_cohort import (
    RECTUM,
    SHAPE,
    SPACING,
    bladder,
    write_segmentation_cohort,
)

SHIFTS = {"A01": 0.0, "A02": 2.0, "A03": 1.0}


def _section(language: str):
    """Run the check on three cases as the engine would and build the section from its rows."""
    rows, overlays = [], {}
    ct = Volume(np.where(bladder(), 10.0, 40.0), SPACING)
    for case_id, shift in SHIFTS.items():
        ref = {"bladder": structure_metadata(Volume(bladder(), SPACING), "bladder"),
               "rectum": structure_metadata(Volume(RECTUM.mask(SHAPE, SPACING), SPACING),
                                            "rectum")}
        auto = {"bladder": structure_metadata(Volume(bladder(shift), SPACING), "bladder")}
        out = SegmentationCheck().run({"image": ct, "reference": ref, "evaluated": auto})
        rows += [{"case_id": case_id, "check_id": "segmentation", "metric": m.metric,
                  "label": m.label, "value": m.value, "unit": m.unit}
                 for m in out.measurements]
        overlays[case_id] = out.details["overlays"]
    return section_data(pd.DataFrame(rows), overlays, Formatter(language))


def test_worst_cases_come_first_with_an_overlay_per_structure():
    section = _section("en")
    by_name = {row["name"]: row for row in section["structures"]}
    assert [c["case_id"] for c in by_name["bladder"]["worst"]] == ["A02", "A03", "A01"]
    assert by_name["bladder"]["worst_case"] == "A02"
    # rectum is missing from every automatic set: Dice 0, never a perfect score
    assert by_name["rectum"]["missing"] == 3
    assert by_name["rectum"]["medians"][0] == "0.000"
    assert by_name["bladder"]["overlay"].startswith("data:image/png;base64,")
    assert section["distribution"].startswith("data:image/png;base64,")


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segmentation-run")
    protocol = write_segmentation_cohort(folder, SHIFTS)
    with Store(f"sqlite:///{folder / 'qa.db'}") as store:
        yield store, run_protocol(protocol, store).run_id, folder


@pytest.mark.parametrize(("language", "title", "worst"), [
    ("en", "Segmentation agreement (auto-contouring)", "Worst cases first"),
    ("fr", "Concordance de segmentation (contourage automatique)", "Pires cas en premier"),
])
def test_run_report_renders_the_section_from_the_store(stored_run, language, title, worst):
    store, run_id, folder = stored_run
    html = render_run_report(store, run_id, folder / f"r-{language}.html",
                             language=language).read_text("utf-8")
    assert title in html and worst in html
    section = html[html.index('class="segmentation"'):]
    bladder_rows = section[section.index("<h4>bladder</h4>"):section.index("<h4>rectum</h4>")]
    assert bladder_rows.index("A02") < bladder_rows.index("A03") < bladder_rows.index("A01")
    assert section.count("data:image/png;base64,") == 1  # no image bound: no overlay


def test_engine_stores_overlays_when_the_image_slot_is_bound(tmp_path):
    protocol = write_segmentation_cohort(tmp_path, SHIFTS, with_image=True)
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = run_protocol(protocol, store).run_id
        overlays = store.details(run_id, name="overlays")
        html = render_run_report(store, run_id, tmp_path / "r.html").read_text("utf-8")
    assert len(overlays) == len(SHIFTS)
    assert set(overlays.payload.iloc[0]) == {"bladder", "rectum"}
    section = html[html.index('class="segmentation"'):]
    assert section.count("data:image/png;base64,") == 3  # distributions + 2 overlays


def test_a_structure_not_compared_is_counted_and_listed_first_never_scored(tmp_path):
    protocol = write_segmentation_cohort(tmp_path, SHIFTS)
    (tmp_path / "A01" / "auto" / "Bladder.nii.gz").write_bytes(b"truncated")
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = run_protocol(protocol, store).run_id
        measurements = store.measurements(run_id)
        html = render_run_report(store, run_id, tmp_path / "r.html").read_text("utf-8")
    section = section_data(measurements, {}, Formatter("en"))
    bladder = next(row for row in section["structures"] if row["name"] == "bladder")
    rectum = next(row for row in section["structures"] if row["name"] == "rectum")
    assert (bladder["n"], bladder["missing"], bladder["not_compared"]) == (2, 0, 1)
    assert (rectum["n"], rectum["not_compared"]) == (3, 0)
    assert bladder["worst"][0]["case_id"] == "A01"  # undefined, shown first
    assert bladder["worst"][0]["values"][0] == Formatter("en").number(float("nan"), "dice", "1")
    summary = html[html.index('class="segmentation-summary"'):]
    assert "Not compared (input error)" in summary
    assert "<td>bladder</td><td class=\"num\">2</td><td class=\"num\">0</td>" \
           "<td class=\"num\">1</td>" in summary
    assert "structure &#39;Bladder&#39;: SimpleITK cannot read" in html  # the Errors section


def test_cases_without_the_reference_structure_are_not_listed_as_its_worst():
    def rows(case_id, name, dice, **flags):
        values = {**({} if dice is None else {"dice": dice}), **flags}
        return [{"case_id": case_id, "check_id": "segmentation", "metric": metric,
                 "label": name, "value": value, "unit": "1"}
                for metric, value in values.items()]
    frame = pd.DataFrame(
        rows("A", "bladder", 0.9, empty_reference=0.0)
        + rows("A", "prostate", 0.8, empty_reference=0.0)
        + rows("B", "bladder", 0.95, empty_reference=0.0)
        + rows("B", "prostate", None, missing_reference=1.0))  # a female patient
    section = section_data(frame, {}, Formatter("en"))
    prostate = next(row for row in section["structures"] if row["name"] == "prostate")
    assert [case["case_id"] for case in prostate["worst"]] == ["A"]
    assert (prostate["n"], prostate["not_compared"], prostate["worst_case"]) == (1, 0, "A")
