"""Specification of the HTML run report (reports.html, reports.plots).

The report is rendered from a store holding a small hand-written run; every expected string
below is written out by hand from the stored numbers and the documented precision rules
(HU 1 decimal, dB 2, SSIM 3, n/a for NaN), not produced by the code under test.
"""

from __future__ import annotations

import base64
import datetime as dt
import html as html_lib
import math
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from checks.base import Measurement
from qa.store import Store
from reports.html import SUPPORTED_LANGUAGES, Formatter, default_report_path, render_run_report
from reports.plots import hu_section, sum_histograms

UTC = dt.timezone.utc
XSS_CASE = "<script>alert(1)</script>"
NASTY_LABEL = "\"&<>'"
CASES = ["p01", XSS_CASE, "p03", "p04"]  # p04 fails to run
HU_ID = "hu_accuracy"
EDGES = [-100.0, -50.0, 0.0, 50.0, 100.0]

RUN = {
    "uid": "0b7c9c4e-5a3f-4a5e-9a55-2f2f4f1f2a10",
    "protocol_name": "MR-to-sCT pelvis <b>commissioning</b>",
    "protocol_kind": "commissioning",
    "protocol_hash": "a" * 64,
    "protocol_text": "name: MR-to-sCT pelvis\nchecks: []\n",
    "dataset_hash": "b" * 64,
    "case_table_path": "/data/cases.csv",
    "model_name": "mr2ct-pelvis",
    "model_version": "2.1",
    "model_adapter": "torch",
    "model_sha256": "0123456789abcdef" * 4,
    "model_details": {"device": "cpu"},
    "software_version": "0.1.0",
    "operator": "alice",
    "hostname": "physics-ws1",
    # 05:04:05 at UTC+2 is 03:04:05 UTC: the report prints UTC.
    "started_at": dt.datetime(2025, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "finished_at": dt.datetime(2025, 1, 2, 3, 6, 5, tzinfo=UTC),
    "status": "incomplete",
    "exit_code": 1,
    "summary": None,
}
ATTRIBUTES = {
    "p01": {"sex": "F", "age": 63, "scanner": "<i>MR1</i>"},
    XSS_CASE: {"sex": "M", "age": 70.5, "scanner": "MR1"},
    "p03": {"sex": "F", "age": 55, "scanner": "MR2"},
    "p04": {"sex": "M", "age": 48, "scanner": "MR2"},
}
# case → (mae_hu, me_hu, rmse_hu, psnr_db, ssim); p03's SSIM could not be computed (NaN).
OVERALL = {
    "p01": (63.27, -2.449, 88.04, 28.456, 0.91234),
    XSS_CASE: (71.04, 4.5, 95.5, 27.1, 0.8867),
    "p03": (92.46, 10.01, 120.0, 25.004, math.nan),
}
# case → tissue → (mae_hu, me_hu, n_voxels)
TISSUE = {
    "p01": {"air_lung": (150.0, -20.0, 1000), "bone": (200.0, 30.0, 500),
            NASTY_LABEL: (10.0, 1.0, 7)},
    XSS_CASE: {"air_lung": (160.0, -10.0, 2000), "bone": (230.0, 60.0, 700),
               NASTY_LABEL: (20.0, 2.0, 8)},
    "p03": {"air_lung": (170.0, 0.0, 3000), "bone": (math.nan, math.nan, 0),
            NASTY_LABEL: (30.0, 3.0, 9)},
}
HISTOGRAMS = {  # per case: counts, underflow, overflow
    "p01": ([1, 5, 6, 2], 3, 1),
    XSS_CASE: ([0, 4, 4, 0], 2, 0),
    "p03": ([2, 2, 2, 2], 0, 5),
}
THRESHOLDS = {"air_lung": [None, -400.0], "bone": [200.0, None], NASTY_LABEL: [-400.0, 200.0]}
ERROR = {"case_id": "p04", "check_id": HU_ID, "role": "sct", "path": "/data/p04/sct<1>.nii.gz",
         "field": "spacing", "message": "sct spacing differs from ct & cannot be resampled"}


def _verdict(case_id, metric, statistic, value, level, message, label=""):
    return {"case_id": case_id, "check_id": HU_ID, "metric": metric, "label": label,
            "statistic": statistic, "value": value, "level": level, "tolerance_min": None,
            "tolerance_max": 70.0, "action_min": None, "action_max": 90.0, "message": message}


VERDICTS = [
    _verdict(None, "mae_hu", "mean", 75.59, "TOLERANCE", "mean of mae_hu over 3 cases"),
    {**_verdict(None, "mae_hu", "pass_rate", 100.0 / 3.0, "ACTION", "pass_rate (1 of 3 OK)"),
     "tolerance_min": 95.0, "tolerance_max": None, "action_min": 90.0, "action_max": None},
    _verdict("p01", "mae_hu", "value", 63.27, "OK", "ok"),
    _verdict(XSS_CASE, "mae_hu", "value", 71.04, "TOLERANCE", "over tolerance"),
    _verdict("p03", "mae_hu", "value", 92.46, "ACTION", "over action <max>"),
]
VALIDATION = {
    "scope": "case_table", "success": False,
    "statistics": {"evaluated_expectations": 4, "successful_expectations": 3,
                   "success_percent": 75.0},
    "result": {"results": [
        {"expectation_type": "expect_column_values_to_be_between", "column": "age",
         "success": False, "unexpected_count": 1, "unexpected_values": [140],
         "case_ids": ["p03"]},
        {"expectation_type": "expect_column_values_to_not_be_null", "column": "sex",
         "success": True, "unexpected_count": 0, "unexpected_values": [], "case_ids": []},
    ]},
}
# The form qa.validation writes: "unexpected" entries and "unexpected_case_ids".
METADATA_VALIDATION = {
    "scope": "image_metadata", "success": False,
    "statistics": {"evaluated_expectations": 2},
    "result": {"results": [
        {"expectation_type": "expect_column_values_to_be_between", "column": "spacing_z_mm",
         "description": "slice spacing within [0.5, 5] mm", "success": False,
         "unexpected_count": 2, "error": None,
         "unexpected": [{"case_id": "p03", "value": 7.5, "role": "ct"},
                        {"case_id": XSS_CASE, "value": 6.0, "role": "ct"}],
         "unexpected_case_ids": sorted(["p03", XSS_CASE])},
    ]},
}


def _measurement_rows() -> list[dict]:
    rows = []
    units = ("HU", "HU", "HU", "dB", "1")
    for case_id, values in OVERALL.items():
        names = ("mae_hu", "me_hu", "rmse_hu", "psnr_db", "ssim")
        for metric, unit, value in zip(names, units, values, strict=True):
            rows.append((case_id, metric, "", value, unit))
        rows.append((case_id, "n_voxels", "", 100000.0, "voxels"))
        for tissue, (mae, me, n) in TISSUE[case_id].items():
            rows += [(case_id, "mae_hu", tissue, mae, "HU"), (case_id, "me_hu", tissue, me, "HU"),
                     (case_id, "n_voxels", tissue, float(n), "voxels")]
    return [{"case_id": c, "check_id": HU_ID, "check": "hu_accuracy", "metric": m, "label": lab,
             "value": v, "unit": u} for c, m, lab, v, u in rows]


def _detail_rows() -> list[dict]:
    rows = []
    for case_id, (counts, under, over) in HISTOGRAMS.items():
        payloads = {
            "error_histogram": {"edges_hu": EDGES, "counts": counts, "underflow": under,
                                "overflow": over},
            "tissue_thresholds_hu": THRESHOLDS,
            "clip_range_hu": [-1024.0, 3071.0],
            "data_range_hu": 4095.0,
            "warnings": ["mask touches the image border"] if case_id == "p03" else [],
        }
        rows += [{"case_id": case_id, "check_id": HU_ID, "name": k, "payload": v}
                 for k, v in payloads.items()]
    return rows


class FakeStore:
    """Read-only stand-in with the query methods of ``qa.store.Store``."""

    def __init__(self, verdicts: list[dict] = VERDICTS, errors: list[dict] = (ERROR,),
                 failed: tuple[str, ...] = ("p04",)) -> None:
        self._verdicts, self._errors, self._failed = list(verdicts), list(errors), failed

    def run(self, run_id: int) -> dict:
        return {"id": run_id, **RUN}

    def runs(self) -> pd.DataFrame:
        return pd.DataFrame([{"run_id": 7, **RUN}])

    def cases(self, run_id: int) -> pd.DataFrame:
        return pd.DataFrame([
            {"case_id": c, "position": i, "status": "error" if c in self._failed else "ok",
             **ATTRIBUTES[c]} for i, c in enumerate(CASES)])

    def measurements(self, run_id: int, check_id: str | None = None) -> pd.DataFrame:
        return pd.DataFrame([{"run_id": run_id, **r} for r in _measurement_rows()])

    def verdicts(self, run_id: int) -> pd.DataFrame:
        return pd.DataFrame([{"run_id": run_id, **v} for v in self._verdicts],
                            columns=["run_id", *VERDICTS[0]])

    def errors(self, run_id: int) -> pd.DataFrame:
        created = dt.datetime(2025, 1, 2, 3, 5, 0, tzinfo=UTC)
        return pd.DataFrame([{**e, "created_at": created} for e in self._errors],
                            columns=[*ERROR, "created_at"])

    def details(self, run_id: int, check_id: str | None = None,
                name: str | None = None) -> pd.DataFrame:
        frame = pd.DataFrame([{"run_id": run_id, **r} for r in _detail_rows()])
        if check_id is not None:
            frame = frame[frame["check_id"] == check_id]
        return frame if name is None else frame[frame["name"] == name]

    def validations(self, run_id: int) -> pd.DataFrame:
        return pd.DataFrame([VALIDATION, METADATA_VALIDATION])


class Page(HTMLParser):
    """Headings, table cells by row, img sources, every tag and attribute of a page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.headings: list[str] = []
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self._heading: list[str] | None = None
        self._cell: list[str] | None = None
        self.by_id: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._table = ""
        self._id_stack: list[tuple[str, str, list[str]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(k, v or "") for k, v in attrs]
        attrs = dict(attrs)
        if tag in ("h1", "h2", "h3"):
            self._heading = []
        elif tag == "table":
            self._table = attrs.get("id") or attrs.get("class") or ""
        elif tag == "tr":
            self.rows.append([])
            self.tables.setdefault(self._table, []).append(self.rows[-1])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br":
            self.handle_data(" ")
        elif tag == "img":
            self.images.append(attrs.get("src") or "")
        if "id" in attrs and tag in ("td", "p"):
            self._id_stack.append((tag, attrs["id"], []))

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        if self._id_stack and self._id_stack[-1][0] == tag:
            _, name, parts = self._id_stack.pop()
            self.by_id[name] = " ".join("".join(parts).split())

    def handle_data(self, data):
        for sink in (self._heading, self._cell, *(p for _, _, p in self._id_stack)):
            if sink is not None:
                sink.append(data)

    def row(self, first: str, **where: str) -> list[str]:
        """The first table row whose first cell is ``first`` (and containing ``where`` cells)."""
        for row in self.rows:
            if row and row[0] == first and all(v in row for v in where.values()):
                return row
        raise AssertionError(f"no row starting with {first!r} in {self.rows}")

    def case_row(self, case_id: str) -> list[str]:
        """The row of ``case_id`` in the per-case table."""
        return next(r for r in self.tables["case-table"] if r[0] == case_id)


READS = frozenset({"run", "runs", "verify", "run_anchor", "audit_events", "cases",
                   "measurements", "verdicts", "errors", "details", "validations"})


class ReadOnly:
    """Lets the report call the store's read methods only; anything else fails the test."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name not in READS:
            raise AssertionError(f"the report called store.{name}; it may only read")
        return getattr(self._store, name)


@dataclass
class Source:
    """A store holding the test run, where to write reports, and the pages rendered so far."""

    store: Any
    run_id: int
    folder: Path
    pages: dict[str, tuple[str, Page]] = field(default_factory=dict)


def _fill_real_store(url: str) -> int:
    """The same run as FakeStore, written through the real store's public API."""
    with Store(url) as store:
        model = {"name": RUN["model_name"], "version": RUN["model_version"],
                 "adapter": RUN["model_adapter"], "sha256": RUN["model_sha256"],
                 **RUN["model_details"]}
        run_id = store.create_run(
            protocol_name=RUN["protocol_name"], protocol_kind=RUN["protocol_kind"],
            protocol_hash=RUN["protocol_hash"], protocol_text=RUN["protocol_text"],
            dataset_hash=RUN["dataset_hash"], case_table_path=RUN["case_table_path"],
            model=model, software_version=RUN["software_version"], operator=RUN["operator"],
            hostname=RUN["hostname"], started_at=RUN["started_at"])
        for position, case_id in enumerate(CASES):
            store.add_case(run_id, case_id, position=position, attributes=ATTRIBUTES[case_id],
                           status="error" if case_id == "p04" else "ok")
        for case_id in OVERALL:
            rows = [r for r in _measurement_rows() if r["case_id"] == case_id]
            store.add_measurements(run_id, case_id, HU_ID, "hu_accuracy", [
                Measurement(r["metric"], r["value"], r["unit"], r["label"]) for r in rows])
            store.add_details(run_id, case_id, HU_ID, {
                r["name"]: r["payload"] for r in _detail_rows() if r["case_id"] == case_id})
        store.add_verdicts(run_id, VERDICTS)
        store.add_error(run_id, ERROR["message"], **{k: v for k, v in ERROR.items()
                                                     if k != "message"})
        for validation in (VALIDATION, METADATA_VALIDATION):
            store.add_validation(run_id, validation["scope"], validation["success"],
                                 validation["result"], statistics=validation["statistics"])
        store.finish_run(run_id, RUN["status"], exit_code=RUN["exit_code"],
                         finished_at=RUN["finished_at"])
    return run_id


@pytest.fixture(scope="module")
def real_store_url(tmp_path_factory) -> tuple[str, int]:
    url = f"sqlite:///{tmp_path_factory.mktemp('store')}/qa.db"
    return url, _fill_real_store(url)


@pytest.fixture(scope="module", params=["fake", "real"])
def source(request, real_store_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"report-{request.param}")
    if request.param == "fake":
        yield Source(ReadOnly(FakeStore()), 7, folder)
        return
    url, run_id = real_store_url
    store = Store(url)
    yield Source(ReadOnly(store), run_id, folder)
    store.close()


def _fake(folder: Path, **kwargs: Any) -> Source:
    return Source(ReadOnly(FakeStore(**kwargs)), 7, folder)


def _render(source: Source, language: str = "en") -> tuple[str, Page]:
    """The report of the source's run (rendered once per language; matplotlib is slow)."""
    if language not in source.pages:
        path = render_run_report(source.store, source.run_id,
                                 source.folder / f"report-{language}.html", language=language)
        html = path.read_text(encoding="utf-8")
        source.pages[language] = html, Page(html)
    return source.pages[language]


def test_sections_headings_and_footer(source):
    html, page = _render(source)
    for heading in ("Model QA run report", "Scope and traceability", "Data validation",
                    "Verdicts", "Cohort verdicts", "Per-case verdicts not OK",
                    "Per-case results", "Cases with errors", "HU accuracy", "Errors",
                    "Tissue classes and thresholds used", "Agreement by tissue class"):
        assert heading in page.headings
    assert "Generated from the results store; no value recomputed." in html
    assert "@page" in html and "size: A4" in html


def test_overall_verdict_is_the_worst_level_and_errors_are_prominent(source, tmp_path):
    _, page = _render(source)
    assert page.by_id["overall-verdict"] == "ACTION"
    assert page.by_id["errored-cases-alert"].startswith("1 case with errors (of 4)")
    only_tolerance = [v for v in VERDICTS if v["level"] != "ACTION"]
    _, page = _render(_fake(tmp_path, verdicts=only_tolerance, errors=[], failed=()))
    assert page.by_id["overall-verdict"] == "TOLERANCE"
    assert "errored-cases-alert" not in page.by_id


def test_failed_case_is_never_a_pass(tmp_path):
    # All verdicts OK, but p04 failed to run (status "error", no error row): still flagged.
    ok = [v for v in VERDICTS if v["level"] == "OK"]
    _, page = _render(_fake(tmp_path, verdicts=ok, errors=[]))
    assert page.by_id["overall-verdict"] == "OK"
    assert page.by_id["errored-cases-alert"].startswith("1 case with errors (of 4)")
    assert page.case_row("p04")[-1] == "ERROR"


def test_run_that_failed_before_any_case_renders_and_says_so(real_store_url, tmp_path):
    url, _ = real_store_url
    with Store(url) as store:
        run_id = store.create_run(
            protocol_name="broken", protocol_kind="periodic", protocol_hash="c" * 64,
            protocol_text="name: broken\n", dataset_hash="d" * 64, case_table_path="cases.csv",
            model={"name": "m", "version": "1", "adapter": "precomputed"},
            software_version="0.1.0", operator="bob", hostname="h")
        store.add_error(run_id, "key 'checks' is missing; list at least one check",
                        path="/p/protocol.yaml", field="checks")
        store.finish_run(run_id, "failed", exit_code=2)
        html = render_run_report(ReadOnly(store), run_id, tmp_path / "r.html").read_text("utf-8")
    page = Page(html)
    assert page.by_id["overall-verdict"] == "no verdicts recorded"
    assert "1 run-level error(s) not tied to a case" in html
    assert page.row("(run)")[1:6] == ["", "", "/p/protocol.yaml", "checks",
                                      "key 'checks' is missing; list at least one check"]
    assert "HU accuracy" not in page.headings
    assert "No data validation was recorded for this run." in html
    assert page.row("Finished (UTC)")[1] != "n/a" and page.row("Cases")[1] == "0"


def test_provenance_prints_full_hashes_and_utc_times(source):
    _, page = _render(source)
    assert page.row("Model SHA-256")[1] == "0123456789abcdef" * 4
    assert page.row("Protocol SHA-256")[1] == "a" * 64
    assert page.row("Dataset SHA-256")[1] == "b" * 64
    assert page.row("Started (UTC)")[1] == "2025-01-02T03:04:05Z"
    assert page.row("Finished (UTC)")[1] == "2025-01-02T03:06:05Z"
    assert page.row("Duration")[1] == "120.0 s"
    assert page.row("Cases")[1] == "4 (ok: 3, error: 1)"
    for label, value in (("Model", "mr2ct-pelvis"), ("Model version", "2.1"),
                         ("Model adapter", "torch"), ("Software version", "0.1.0"),
                         ("Operator", "alice"), ("Host", "physics-ws1")):
        assert page.row(label)[1] == value


def test_validation_lists_failed_expectations_with_case_ids(source):
    html, page = _render(source)
    assert "case_table: failed" in page.headings
    assert ("evaluated_expectations: 4; successful_expectations: 3; success_percent: 75.0 %"
            in " ".join(html.split()))
    assert page.row("expect_column_values_to_be_between") == [
        "expect_column_values_to_be_between", "age", "1", "140", "p03"]
    with pytest.raises(AssertionError):  # the passed expectation is not listed
        page.row("expect_column_values_to_not_be_null")
    assert "image_metadata: failed" in page.headings
    assert page.row("expect_column_values_to_be_between slice spacing within [0.5, 5] mm") == [
        "expect_column_values_to_be_between slice spacing within [0.5, 5] mm", "spacing_z_mm",
        "2", "7.5, 6.0", f"{XSS_CASE}, p03"]


def test_verdict_tables_show_stored_numbers_with_units_and_levels_as_text(source):
    _, page = _render(source)
    assert page.row("hu_accuracy", s="mean") == [
        "hu_accuracy", "mae_hu", "", "mean", "75.6 HU", "≤ 70.0 HU", "≤ 90.0 HU", "TOLERANCE",
        "mean of mae_hu over 3 cases"]
    assert page.row("hu_accuracy", s="pass rate")[4:8] == [
        "33.3 %", "≥ 95.0 %", "≥ 90.0 %", "ACTION"]
    not_ok = [r for r in page.rows if len(r) == 9 and r[1] == "hu_accuracy"]
    assert [r[0] for r in not_ok] == [XSS_CASE, "p03"]  # p01 is OK: not listed
    assert not_ok[1][4:] == ["92.5 HU", "≤ 70.0 HU", "≤ 90.0 HU", "ACTION", "over action <max>"]


def test_per_case_table_formats_stored_values_and_worst_level(source):
    _, page = _render(source)
    header = page.tables["case-table"][0]
    assert header == ["Case", "Status", "sex", "age", "scanner", "MAE (HU)", "ME (HU)",
                      "RMSE (HU)", "PSNR (dB)", "SSIM", "Worst level"]
    assert page.case_row("p01") == ["p01", "ok", "F", "63", "<i>MR1</i>", "63.3", "-2.4", "88.0",
                               "28.46", "0.912", "OK"]
    assert page.case_row(XSS_CASE)[3:] == ["70.5", "MR1", "71.0", "4.5", "95.5", "27.10",
                                           "0.887", "TOLERANCE"]
    assert page.case_row("p03")[5:] == ["92.5", "10.0", "120.0", "25.00", "n/a", "ACTION"]
    assert page.case_row("p04")[5:] == ["n/a"] * 5 + ["ERROR"]


def test_errored_case_is_listed_with_its_location(source):
    _, page = _render(source)
    expected = ["p04", HU_ID, "sct", "/data/p04/sct<1>.nii.gz", "spacing",
                "sct spacing differs from ct & cannot be resampled"]
    rows = [r for r in page.rows if r[:1] == ["p04"] and len(r) == 7]
    assert [r[:6] for r in rows] == [expected, expected]  # cases section and errors section
    for row in rows:  # recording time, ISO 8601 UTC (the real store stamps it itself)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row[6])


def test_hu_section_histogram_thresholds_and_tissue_table(source):
    html, page = _render(source)
    assert len(page.images) == 2
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # 3 + 2 + 0 voxels below, 1 + 0 + 5 above the edges.
    assert ("Voxel counts summed over 3 case(s); bins from -100.0 HU to 100.0 HU; "
            "5 voxels below and 6 above the range.") in " ".join(html.split())
    assert page.row("air_lung", x="—") == ["air_lung", "—", "-400.0"]
    assert page.row("bone", x="—") == ["bone", "200.0", "—"]
    assert page.row(NASTY_LABEL, x="-400.0") == [NASTY_LABEL, "-400.0", "200.0"]
    assert page.row("Clip range") == ["Clip range", "[-1,024.0, 3,071.0] HU"]
    assert page.row("Data range") == ["Data range", "4,095.0 HU"]
    # Means over cases of the stored values; bone has a NaN MAE for p03 (0 voxels).
    assert page.row("air_lung", n="160.0") == ["air_lung", "160.0", "-10.0", "3", "6,000"]
    assert page.row("bone", n="215.0") == ["bone", "215.0", "45.0", "2", "1,200"]
    assert page.row(NASTY_LABEL, n="20.0") == [NASTY_LABEL, "20.0", "2.0", "3", "24"]
    assert "p03: mask touches the image border" in " ".join(html.split())


def test_no_nan_text_and_no_external_resource_or_script(source):
    html, page = _render(source)
    cells = [cell for row in page.rows for cell in row]
    assert not [c for c in cells if re.search(r"\bnan\b", c, re.IGNORECASE)]
    assert "script" not in page.tags and "link" not in page.tags
    assert not [v for _, v in page.attributes if "http" in v.lower()]
    assert "http://" not in html and "https://" not in html


def test_user_text_is_escaped(source):
    html, page = _render(source)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&amp;&lt;&gt;&#39;" in html  # the tissue label
    assert "<b>commissioning</b>" not in html and "<i>MR1</i>" not in html
    assert "<p class=\"protocol\">MR-to-sCT pelvis &lt;b&gt;commissioning&lt;/b&gt;</p>" in html
    assert page.tags.count("b") == 0 and page.tags.count("i") == 0


def test_french_report_uses_the_catalog_and_a_decimal_comma(source):
    html, page = _render(source, language="fr")
    for heading in ("Rapport de contrôle qualité du modèle", "Périmètre et traçabilité",
                    "Validation des données", "Verdicts sur la cohorte", "Résultats par cas",
                    "Erreurs"):
        assert heading in page.headings
    assert page.case_row("p01")[5:10] == ["63,3", "-2,4", "88,0", "28,46", "0,912"]
    assert page.row("hu_accuracy", s="moyenne")[4:8] == [
        "75,6 UH", "≤ 70,0 UH", "≤ 90,0 UH", "TOLÉRANCE"]
    assert page.by_id["overall-verdict"] == "ACTION"
    assert "aucune valeur recalculée" in html
    assert '<html lang="fr">' in html


def test_catalogs_have_the_same_keys():
    # the main catalogs plus the per-section ones (reports/locales/<lang>/*.yaml), merged
    from reports._format import _catalog

    catalogs = {lang: set(_catalog(lang)) for lang in SUPPORTED_LANGUAGES}
    assert catalogs["fr"] == catalogs["en"]
    assert "section.hu" in catalogs["en"]


def test_unknown_language_names_the_supported_ones(source, tmp_path):
    with pytest.raises(ValueError, match=r"unsupported report language 'de'.*en, fr"):
        render_run_report(source.store, source.run_id, tmp_path / "r.html", language="de")
    assert not (tmp_path / "r.html").exists()


def test_unknown_level_in_store_is_refused(tmp_path):
    bad = [{**VERDICTS[0], "level": "WARN"}]
    with pytest.raises(ValueError, match="verdict level 'WARN'.*OK, TOLERANCE, ACTION"):
        render_run_report(_fake(tmp_path, verdicts=bad).store, 7, tmp_path / "r.html")


def test_default_path_and_rendering_into_a_folder(source, tmp_path):
    assert default_report_path({"run_id": 12}) == "report-run-12.html"
    assert default_report_path({"id": 12}) == "report-run-12.html"
    assert default_report_path({"run_id": "../x y"}) == "report-run-.._x_y.html"
    path = render_run_report(source.store, source.run_id, tmp_path)
    assert path == tmp_path / f"report-run-{source.run_id}.html" and path.is_file()


def test_sum_histograms_adds_bins_and_leaves_out_other_edges():
    payloads = {
        "a": {"edges_hu": [0, 1, 2], "counts": [1, 2], "underflow": 1, "overflow": 0},
        "b": {"edges_hu": [0, 1, 2], "counts": [3, 4], "underflow": 0, "overflow": 2},
        "c": {"edges_hu": [0, 5, 10], "counts": [9, 9], "underflow": 0, "overflow": 0},
        "d": {"edges_hu": [0, 1, 2], "counts": [1]},  # counts do not match edges
    }
    summed = sum_histograms(payloads)
    assert summed.edges_hu == (0.0, 1.0, 2.0)
    assert summed.counts_voxels == (4, 6)
    assert (summed.underflow_voxels, summed.overflow_voxels) == (1, 2)
    assert summed.case_ids == ("a", "b")
    assert summed.excluded_case_ids == ("c", "d")
    assert sum_histograms({}) is None


def test_hu_section_keeps_each_threshold_set_with_its_cases_and_plots_odd_names():
    odd = r"$\undefinedmacro$"  # would be a mathtext error if drawn unescaped
    details = pd.DataFrame([
        {"case_id": "a", "name": "tissue_thresholds_hu", "payload": {odd: [None, -400.0]}},
        {"case_id": "b", "name": "tissue_thresholds_hu", "payload": {odd: [None, -200.0]}},
        {"case_id": "c", "name": "tissue_thresholds_hu", "payload": {odd: [None, -400.0]}},
    ])
    measurements = pd.DataFrame([
        {"case_id": c, "check_id": "hu", "metric": "mae_hu", "label": odd, "value": v}
        for c, v in (("a", 1.0), ("b", 2.0), ("c", 3.0))])
    section = hu_section(details, measurements, "hu", Formatter("en"))
    assert [(t["case_ids"], t["rows"]) for t in section["thresholds"]] == [
        ("a, c", [(odd, "n/a", "-400.0")]), ("b", [(odd, "n/a", "-200.0")])]
    assert section["histogram"] is None
    assert section["tissue_plot"].startswith("data:image/png;base64,")
    assert section["tissue_rows"][0]["mean_mae"] == "2.0"


def _visible(html: str) -> str:
    """The page's text: tags removed (entities kept), whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", "", html).split())


def test_first_page_is_the_decision_with_its_reasons_then_the_contents(source):
    html, page = _render(source)
    assert html.index('id="decision"') < html.index('id="toc"') < html.index('id="provenance"')
    # run incomplete, cohort pass rate at ACTION, two validations failed, 1 of 4 cases errored
    assert page.by_id["decision-outcome"] == "Not approved for clinical use"
    reasons = re.findall(r'<li class="(blocking|condition)">', html)
    assert reasons[:5] == ["blocking"] * 5 and set(reasons[5:]) == {"condition"}
    text = _visible(html)
    assert ("Blocking: ACTION on hu_accuracy · mae_hu (pass rate): pass_rate (1 of 3 OK)"
            in text)
    assert "Blocking: 1 of 4 cases (25.0 %) could not be evaluated: more than the 10.0 % " \
           "allowed." in text
    assert "Condition: TOLERANCE on hu_accuracy · mae_hu (mean)" in text
    assert "The tool proposes; the radiation protection committee decides and signs" in text


def test_contents_link_to_every_top_level_section_in_page_order(source):
    html, page = _render(source)
    anchors = re.findall(r'<li><a href="#([^"]+)">', html)
    assert anchors[:4] == ["decision", "provenance", "validation", "verdicts"]
    assert anchors[4:] == [f"check-{HU_ID}", "cases", "risk", "recommendations", "errors",
                           "signoff", "appendix"]
    positions = [html.index(f'id="{a}"') for a in anchors]
    assert positions == sorted(positions)
    assert all(f'data-toc-page="{a}"' in html for a in anchors)


def test_signoff_and_appendix_state_who_decides_and_what_was_applied(source):
    html, page = _render(source)
    for heading in ("Recommendations", "Sign-off", "Decision rule",
                    "Tolerance and action levels as applied", "Methods and formulas",
                    "Conventions", "Protocol as run"):
        assert heading in page.headings
    assert page.row("Medical physicist") == ["Medical physicist", "", "", ""]
    assert page.row("Chair of the radiation protection committee")[1:] == ["", "", ""]
    levels = page.tables["levels-table"]
    assert levels[1:] == [  # per-case levels first, then the cohort statistics as stored
        ["hu_accuracy", "mae_hu", "", "each case", "≤ 70.0 HU", "≤ 90.0 HU"],
        ["hu_accuracy", "mae_hu", "", "mean", "≤ 70.0 HU", "≤ 90.0 HU"],
        ["hu_accuracy", "mae_hu", "", "pass rate", "≥ 95.0 %", "≥ 90.0 %"]]
    text = _visible(html)
    assert "more than 10.0 % of the cases could not be evaluated" in text
    assert "MAE = Σ|sCT − CT|·m / Σm" in text
    # one recommendation per kind of reason, the outcome's last; the proposal in the sign-off
    recommendations = re.findall(r"<li>([^<]*)</li>", html[html.index('id="recommendation'):
                                                           html.index('id="errors"')])
    assert recommendations[0].startswith("Find why the run did not complete")
    assert recommendations[-1].startswith("Do not use the model clinically until")
    assert len(recommendations) == len(set(recommendations))
    assert "Decision proposed by the tool: Not approved for clinical use" in text


def test_same_run_renders_byte_identical_html_dated_by_the_run(tmp_path):
    first = render_run_report(_fake(tmp_path).store, 7, tmp_path / "a.html")
    second = render_run_report(_fake(tmp_path).store, 7, tmp_path / "b.html")
    assert first.read_bytes() == second.read_bytes()
    # the only time in the footer is the run's own (finished 2025-01-02T03:06:05Z)
    assert "report of the run of 2025-01-02T03:06:05Z" in first.read_text(encoding="utf-8")


def test_periodic_run_asks_about_continued_use(tmp_path):
    class Periodic(FakeStore):
        def run(self, run_id):
            return {**super().run(run_id), "protocol_kind": "periodic", "status": "complete"}

    ok = [v for v in VERDICTS if v["level"] == "OK"]
    path = render_run_report(ReadOnly(Periodic(verdicts=ok, errors=[], failed=())), 7,
                             tmp_path / "p.html", language="fr")
    page = Page(path.read_text(encoding="utf-8"))
    # validations failed in the fake store: suspend
    assert page.by_id["decision-outcome"] == "Suspendre l'utilisation clinique"
    text = html_lib.unescape(_visible(path.read_text(encoding="utf-8")))
    assert "L'utilisation clinique du modèle peut-elle se poursuivre ?" in text
    assert "Suspendre l'utilisation clinique du modèle jusqu'à résolution" in text


def test_user_text_in_decision_reasons_is_escaped(tmp_path):
    nasty = {**VERDICTS[0], "label": NASTY_LABEL, "message": "<script>alert(2)</script>"}
    html = render_run_report(_fake(tmp_path, verdicts=[nasty]).store, 7,
                             tmp_path / "x.html").read_text(encoding="utf-8")
    assert "<script>" not in html
    assert ("TOLERANCE on hu_accuracy · mae_hu [&#34;&amp;&lt;&gt;&#39;] (mean): "
            "&lt;script&gt;alert(2)&lt;/script&gt;") in _visible(html)


def test_first_page_lists_at_most_fifteen_reasons_and_counts_the_rest(tmp_path):
    many = [{**VERDICTS[1], "label": f"structure {i:02d}"} for i in range(20)]
    html = render_run_report(_fake(tmp_path, verdicts=many, errors=[], failed=()).store, 7,
                             tmp_path / "m.html").read_text(encoding="utf-8")
    # 25 reasons: run incomplete, 20 pass rates at ACTION, 2 validations, 2 from the risks
    assert len(re.findall(r'<li class="(?:blocking|condition)">', html)) == 15
    assert "… and 10 more reason(s) of the same kinds" in _visible(html)
