"""Specification of the runner: every case checked, every number stored, bad cases isolated."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks.base import CheckOutput, CohortCheck, CohortInput, Measurement, MetricInfo
from qa.exitcodes import ExitCode
from qa.io import write_nifti
from qa.runner import run_protocol
from qa.store import Store
from tests.cohort_builders import body_of, make_ct, write_precomputed_cohort

OFFSETS = {"C01": 10.0, "C02": -20.0, "C03": 80.0, "C04": 100.0}


@pytest.fixture()
def store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as opened:
        yield opened


def test_every_case_is_measured_and_graded_against_the_protocol_levels(tmp_path, store):
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS)
    outcome = run_protocol(protocol, store)

    measured = store.measurements(outcome.run_id)
    mae = measured[(measured.metric == "mae_hu") & (measured.label == "")]
    assert mae.case_id.tolist() == list(OFFSETS)  # case-table order
    # sCT = CT + offset inside the body: the MAE over the body is |offset|, exactly
    assert np.allclose(mae.value, [abs(v) for v in OFFSETS.values()], atol=1e-3)
    me = measured[(measured.metric == "me_hu") & (measured.label == "")]
    assert np.allclose(me.value, list(OFFSETS.values()), atol=1e-3)

    verdicts = store.verdicts(outcome.run_id)
    per_case = verdicts[verdicts.statistic == "value"].set_index("case_id")["level"]
    assert per_case.to_dict() == {"C01": "OK", "C02": "OK", "C03": "TOLERANCE",
                                  "C04": "ACTION"}
    cohort = verdicts[verdicts.statistic == "mean"].iloc[0]
    assert cohort.value == pytest.approx(np.mean([10, 20, 80, 100]), abs=1e-3)
    assert cohort.level == "OK"  # 52.5 HU <= 65 HU
    assert outcome.exit_code == ExitCode.ACTION
    assert store.run(outcome.run_id)["exit_code"] == ExitCode.ACTION


def test_the_run_records_its_provenance(tmp_path, store):
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS)
    run_id = run_protocol(protocol, store, operator="physicist A").run_id
    run = store.run(run_id)
    assert run["status"] == "complete"
    assert run["operator"] == "physicist A"
    assert run["model_name"] == "vendor-sct" and run["model_adapter"] == "precomputed"
    assert len(run["protocol_hash"]) == 64 and len(run["dataset_hash"]) == 64
    assert run["protocol_text"] == protocol.read_text(encoding="utf-8")
    assert run["software_version"]
    assert run["finished_at"] >= run["started_at"]
    scopes = set(store.validations(run_id).scope)
    assert scopes == {"case_table", "image_metadata"}
    # the HU error histogram of each case is kept for the report
    histograms = store.details(run_id, name="error_histogram")
    assert len(histograms) == len(OFFSETS)


def test_a_rerun_is_a_new_run_and_gives_the_same_numbers(tmp_path, store):
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS)
    first = run_protocol(protocol, store).run_id
    second = run_protocol(protocol, store).run_id
    assert second != first
    a = store.measurements(first).drop(columns="run_id").reset_index(drop=True)
    b = store.measurements(second).drop(columns="run_id").reset_index(drop=True)
    assert a.equals(b)


def test_bad_cases_are_recorded_and_never_stop_the_others(tmp_path, store):
    folder = tmp_path / "cohort"
    bad_rows = [
        {"case_id": "MISSING", "ct": "nowhere/ct.nii.gz", "sct": "C01/sct.nii.gz",
         "body": "C01/body.nii.gz", "sex": "F", "bmi": "25"},
        {"case_id": "DUP", "ct": "C01/ct.nii.gz", "sct": "C01/sct.nii.gz",
         "body": "C01/body.nii.gz", "sex": "F", "bmi": "25"},
        {"case_id": "DUP", "ct": "C02/ct.nii.gz", "sct": "C02/sct.nii.gz",
         "body": "C02/body.nii.gz", "sex": "F", "bmi": "25"},
        {"case_id": "NAN", "ct": "NAN/ct.nii.gz", "sct": "NAN/sct.nii.gz",
         "body": "NAN/body.nii.gz", "sex": "M", "bmi": "25"},
        {"case_id": "EMPTY", "ct": "C01/ct.nii.gz", "sct": "C01/sct.nii.gz",
         "body": "EMPTY/body.nii.gz", "sex": "M", "bmi": "25"},
        {"case_id": "GRID", "ct": "C01/ct.nii.gz", "sct": "GRID/sct.nii.gz",
         "body": "C01/body.nii.gz", "sex": "M", "bmi": "25"},
        {"case_id": "TRUNC", "ct": "TRUNC/ct.nii.gz", "sct": "C01/sct.nii.gz",
         "body": "C01/body.nii.gz", "sex": "M", "bmi": "25"},
    ]
    protocol = write_precomputed_cohort(folder, OFFSETS, extra_rows=bad_rows)
    ct = make_ct(0)
    for name in ("NAN", "EMPTY", "GRID", "TRUNC"):
        (folder / name).mkdir()
    nan_sct = ct.array.copy()
    nan_sct[5, 7, 8] = np.nan
    write_nifti(ct, folder / "NAN" / "ct.nii.gz")
    write_nifti(ct.with_array(nan_sct), folder / "NAN" / "sct.nii.gz")
    write_nifti(body_of(ct), folder / "NAN" / "body.nii.gz")
    write_nifti(ct.with_array(np.zeros(ct.shape, dtype=bool)), folder / "EMPTY" / "body.nii.gz")
    shifted = type(ct)(ct.array, ct.spacing, (0.0, 0.0, 0.0))
    write_nifti(shifted, folder / "GRID" / "sct.nii.gz")
    full = gzip.compress((folder / "C01" / "ct.nii.gz").read_bytes())
    (folder / "TRUNC" / "ct.nii.gz").write_bytes(full[: len(full) // 3])

    outcome = run_protocol(protocol, store)

    assert outcome.exit_code == ExitCode.ERRORS
    errors = store.errors(outcome.run_id)
    by_case = {case: " | ".join(group.message) for case, group in errors.groupby("case_id")}
    assert set(by_case) == {"MISSING", "DUP", "NAN", "EMPTY", "GRID", "TRUNC"}
    assert "not found" in by_case["MISSING"].lower() or "does not exist" in by_case["MISSING"]
    assert "appears on rows 7, 8" in by_case["DUP"]
    assert "NaN" in by_case["NAN"] or "non-finite" in by_case["NAN"]
    assert "empty" in by_case["EMPTY"].lower()
    assert "different grids" in by_case["GRID"]
    missing_row = errors[errors.case_id == "MISSING"].iloc[0]
    assert "ct" in (missing_row.field or "") + (missing_row.role or "")
    trunc_row = errors[errors.case_id == "TRUNC"].iloc[0]
    assert "TRUNC" in trunc_row.path and trunc_row.role == "ct"
    # the good cases were all measured and graded
    measured = store.measurements(outcome.run_id)
    assert set(measured.case_id) == set(OFFSETS)
    cases = store.cases(outcome.run_id).set_index("case_id")["status"]
    assert cases[list(OFFSETS)].eq("ok").all()
    assert cases[["MISSING", "NAN", "EMPTY", "GRID", "TRUNC", "DUP"]].eq("error").all()
    assert outcome.summary["cases_with_errors"] == sorted(
        ["DUP", "EMPTY", "GRID", "MISSING", "NAN", "TRUNC"])


def test_cohort_statistics_ignore_nothing_silently(tmp_path, store):
    protocol = write_precomputed_cohort(tmp_path / "cohort", {"A": 70.0, "B": 90.0},
                                        cohort_mean=(75, 85))
    outcome = run_protocol(protocol, store)
    verdicts = store.verdicts(outcome.run_id)
    mean = verdicts[verdicts.statistic == "mean"].iloc[0]
    assert mean.value == pytest.approx(80.0, abs=1e-3)
    assert mean.level == "TOLERANCE"
    # both bounds are inclusive: 70 and 90 HU sit exactly on the levels
    per_case = verdicts[verdicts.statistic == "value"].set_index("case_id")["level"]
    assert per_case.to_dict() == {"A": "OK", "B": "TOLERANCE"}
    assert not math.isnan(mean.value)


@pytest.mark.slow
def test_two_worker_processes_give_the_same_rows_as_one(tmp_path, store):
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS)
    serial = run_protocol(protocol, store, workers=1).run_id
    parallel = run_protocol(protocol, store, workers=2).run_id
    a = store.measurements(serial).drop(columns="run_id").reset_index(drop=True)
    b = store.measurements(parallel).drop(columns="run_id").reset_index(drop=True)
    assert a.equals(b)
    va = store.verdicts(serial).drop(columns="run_id").reset_index(drop=True)
    vb = store.verdicts(parallel).drop(columns="run_id").reset_index(drop=True)
    assert va.equals(vb)


# ------------------------------------------------------------------------ cohort checks


class _Spread(CohortCheck):
    """A fake cohort check with a known answer: the range (max - min) of the per-case MAE,
    and the number of cases per sex. ``fail`` makes it raise, as a buggy check would."""

    name = "mae_spread"
    title = "Spread of the per-case MAE (test double)"
    metrics = {"mae_range_hu": MetricInfo("HU", "max - min of the per-case MAE"),
               "n_cases": MetricInfo("1", "cases per sex", "higher")}

    @pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
    class Options:
        fail: bool = False

    seen: list[CohortInput] = []

    def run_cohort(self, data: CohortInput) -> CheckOutput:
        type(self).seen.append(data)
        if self.options.fail:
            raise ValueError("cannot split the cohort: every case has the same sex")
        mae = data.measurements[(data.measurements.metric == "mae_hu")
                                & (data.measurements.label == "")]
        counts = data.cases.groupby("sex").size()
        return CheckOutput(
            (Measurement("mae_range_hu", mae.value.max() - mae.value.min(), "HU"),
             *(Measurement("n_cases", float(n), "1", sex) for sex, n in counts.items())),
            {"cases_seen": sorted(data.cases.case_id)})


@pytest.fixture()
def spread_check(monkeypatch):
    import checks.registry

    monkeypatch.setitem(checks.registry._REGISTRY, "mae_spread",
                        f"{__name__}:_Spread")
    _Spread.seen.clear()
    return _Spread


def _with_cohort_check(protocol, body: str):
    text = protocol.read_text(encoding="utf-8") + body
    protocol.write_text(text, encoding="utf-8")
    return protocol


_SPREAD = """\
  - check: mae_spread
    tolerances:
      mae_range_hu: {tolerance: {max: 50}, action: {max: 80}}
"""


def test_a_cohort_check_runs_once_after_the_cases_and_is_stored_without_case(
        tmp_path, store, spread_check):
    protocol = _with_cohort_check(write_precomputed_cohort(tmp_path / "cohort", OFFSETS),
                                  _SPREAD)
    outcome = run_protocol(protocol, store)

    assert len(spread_check.seen) == 1
    seen = spread_check.seen[0]
    assert list(seen.measurements.columns) == ["case_id", "check_id", "check", "metric",
                                               "label", "value", "unit"]
    assert set(seen.measurements.check_id) == {"hu_accuracy"}  # per-case results only
    assert list(seen.cases.columns) == ["case_id", "sex", "bmi"]
    assert seen.cases.case_id.tolist() == list(OFFSETS)
    assert seen.cases.bmi.tolist() == [20.0, 23.0, 26.0, 29.0]
    assert seen.verdicts.case_id.notna().all() and len(seen.verdicts) == len(OFFSETS)
    assert seen.attributes["bmi"] == {"min": 10.0, "max": 70.0, "unit": "kg/m2",
                                      "required": True}

    cohort_rows = store.measurements(outcome.run_id, check_id="mae_spread")
    assert cohort_rows.case_id.isna().all()
    got = dict(zip(cohort_rows.metric + "[" + cohort_rows.label + "]", cohort_rows.value,
                   strict=True))
    # |offsets| = 10, 20, 80, 100 HU: range 90 HU; sexes alternate F, M, F, M
    assert got == pytest.approx({"mae_range_hu[]": 90.0, "n_cases[F]": 2.0, "n_cases[M]": 2.0},
                                abs=1e-3)
    assert store.details(outcome.run_id, check_id="mae_spread").payload.tolist() == [
        list(OFFSETS)]
    verdicts = store.verdicts(outcome.run_id)
    spread = verdicts[verdicts.check_id == "mae_spread"]
    assert len(spread) == 1 and spread.case_id.isna().all()
    assert (spread.statistic.iloc[0], spread.level.iloc[0]) == ("value", "ACTION")
    assert "> action max 80 HU" in spread.message.iloc[0]
    assert outcome.summary["cohort_checks_with_errors"] == []


def test_a_failing_cohort_check_is_a_run_error_and_loses_nothing_else(
        tmp_path, store, spread_check):
    protocol = _with_cohort_check(
        write_precomputed_cohort(tmp_path / "cohort", {"A": 10.0, "B": 20.0}),
        _SPREAD + "    options: {fail: true}\n")
    outcome = run_protocol(protocol, store)

    assert outcome.exit_code == ExitCode.ERRORS
    assert outcome.summary["cohort_checks_with_errors"] == ["mae_spread"]
    assert outcome.summary["cases_with_errors"] == []
    errors = store.errors(outcome.run_id)
    assert len(errors) == 1
    error = errors.iloc[0]
    assert error.check_id == "mae_spread" and pd.isna(error.case_id)
    assert error.message == ("cohort check 'mae_spread' could not be run: ValueError: cannot "
                             "split the cohort: every case has the same sex")
    # the per-case results and the cohort statistics are all there
    assert len(store.measurements(outcome.run_id, check_id="hu_accuracy")) > 0
    verdicts = store.verdicts(outcome.run_id)
    assert verdicts.statistic.tolist() == ["value", "value", "mean"]
    assert store.run(outcome.run_id)["status"] == "complete"


def test_grading_a_cohort_measurement_gives_a_cohort_verdict():
    from qa.protocol import CheckSpec
    from qa.verdicts import grade_measurements

    spec = CheckSpec.model_validate({
        "check": "mae_spread", "id": "spread",
        "tolerances": {"mae_range_hu": {"tolerance": {"max": 50}, "action": {"max": 80}}}})
    (verdict,) = grade_measurements(spec, None, [Measurement("mae_range_hu", 60.0, "HU")])
    assert verdict.case_id is None and verdict.statistic == "value"
    assert verdict.level == "TOLERANCE" and verdict.value == 60.0
