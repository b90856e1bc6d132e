"""Specification of baselines and of the comparison of periodic runs with them.

Known answers: each case's MAE is |offset| HU (``tests/cohort_builders.py``), so the
difference to baseline of a case is the difference of the absolute offsets, exactly.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

import qa.baseline
from qa.baseline import BaselineSpec, compare_with_baseline, fingerprint_verdict
from qa.exitcodes import ExitCode
from qa.junit import junit_xml
from qa.runner import run_protocol
from qa.store import Store
from tests.cohort_builders import write_precomputed_cohort

SPEC = BaselineSpec.model_validate({"levels": {"hu_accuracy": {
    "mae_hu": {"tolerance": {"max": 5}, "action": {"max": 10}}}}})


@pytest.fixture()
def store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as opened:
        yield opened


def _rows(values: dict[str, float], check_id: str = "hu_accuracy") -> pd.DataFrame:
    return pd.DataFrame([{"case_id": case, "check_id": check_id, "metric": "mae_hu",
                          "label": "", "value": value, "unit": "HU"}
                         for case, value in values.items()])


def test_differences_are_current_minus_baseline_graded_on_their_absolute_value():
    reference = _rows({"A": 50.0, "B": 60.0, "C": 70.0, "D": 40.0})
    current = _rows({"A": 53.0, "B": 52.0, "C": math.nan, "NEW": 99.0})
    differences, verdicts, missing = compare_with_baseline(current, reference, SPEC)

    assert differences.case_id.tolist() == ["A", "B", "C"]  # NEW is not in the baseline
    np.testing.assert_array_equal(differences.difference, [3.0, -8.0, np.nan])
    np.testing.assert_array_equal(differences.baseline, [50.0, 60.0, 70.0])
    assert missing == ["D"]
    by_case = {v.case_id: v for v in verdicts}
    assert set(by_case) == {"A", "B", "C"}
    assert (by_case["A"].level, by_case["A"].value) == ("OK", 3.0)
    assert (by_case["B"].level, by_case["B"].value) == ("TOLERANCE", 8.0)
    assert by_case["B"].message == ("|mae_hu - baseline| = 8 HU (now 52, baseline 60) outside "
                                    "tolerance <= 5 HU, within action <= 10 HU (TOLERANCE)")
    assert by_case["C"].level == "ACTION" and math.isnan(by_case["C"].value)
    assert "cannot be compared" in by_case["C"].message
    assert {v.check_id for v in verdicts} == {"baseline.hu_accuracy"}
    assert {v.statistic for v in verdicts} == {"abs_difference"}
    assert (by_case["A"].tolerance_max, by_case["A"].action_max) == (5.0, 10.0)


def test_a_declared_constancy_set_is_compared_alone():
    # commissioning ran 4 cases; the monthly constancy set is A and B only
    reference = _rows({"A": 50.0, "B": 60.0, "C": 70.0, "D": 40.0})
    spec = SPEC.model_copy(update={"constancy_cases": ["A", "B"]})
    differences, verdicts, missing = compare_with_baseline(_rows({"A": 51.0, "B": 60.0}),
                                                           reference, spec)
    assert missing == [] and differences.case_id.tolist() == ["A", "B"]
    assert {v.case_id: v.level for v in verdicts} == {"A": "OK", "B": "OK"}
    # a constancy case missing from the run, or never in the baseline, cannot pass
    spec = SPEC.model_copy(update={"constancy_cases": ["A", "B", "Z"]})
    _, _, missing = compare_with_baseline(_rows({"A": 51.0}), reference, spec)
    assert missing == ["B", "Z"]


def test_a_metric_with_levels_but_not_measured_now_cannot_pass():
    reference = _rows({"A": 50.0})
    current = _rows({"A": 50.0}, check_id="other")
    _, verdicts, _ = compare_with_baseline(current, reference, SPEC)
    assert [(v.case_id, v.level) for v in verdicts] == [("A", "ACTION")]
    assert "was not measured in this run" in verdicts[0].message


BASE = {"baseline_id": 3, "run_id": 7, "set_at": pd.Timestamp("2026-03-02", tz="UTC"),
        "operator": "physicist A", "model_name": "mr2ct", "model_version": "2.1",
        "model_sha256": "a" * 64}


def _model(version="2.1", sha256="a" * 64):
    return {"name": "mr2ct", "version": version, "adapter": "torch", "sha256": sha256}


def test_a_model_that_changed_without_recommissioning_is_action():
    same = fingerprint_verdict(_model(), BASE, "p")
    assert (same.level, same.value, same.case_id, same.metric) == ("OK", 0.0, None,
                                                                   "model_fingerprint")
    assert same.check_id == "baseline" and same.statistic == "value"
    swapped = fingerprint_verdict(_model(sha256="b" * 64), BASE, "p")
    assert (swapped.level, swapped.value) == ("ACTION", 1.0)
    assert swapped.message.startswith("model changed — re-commission: sha256 aaaaaaaaaaaa -> "
                                      "bbbbbbbbbbbb")
    assert "(baseline 3: run 7, set 2026-03-02 by physicist A)" in swapped.message
    bumped = fingerprint_verdict(_model(version="2.2"), BASE, "p")
    assert bumped.level == "ACTION" and "version '2.1' -> '2.2'" in bumped.message
    adapter = fingerprint_verdict(_model(), BASE, "p", baseline_model={
        **_model(), "adapter": "command"})
    assert adapter.level == "ACTION" and "adapter 'command' -> 'torch'" in adapter.message


def test_a_model_that_cannot_be_verified_is_tolerance():
    unhashed = {**BASE, "model_sha256": None}
    assert fingerprint_verdict(_model(sha256=None), unhashed, "p").level == "TOLERANCE"
    none = fingerprint_verdict(_model(), None, "p")
    assert none.level == "TOLERANCE" and math.isnan(none.value)
    assert "no baseline is set for protocol 'p'" in none.message


def _periodic(folder, offsets, version="1.0"):
    protocol = write_precomputed_cohort(folder, offsets)
    text = protocol.read_text(encoding="utf-8").replace("kind: commissioning",
                                                        "kind: periodic")
    protocol.write_text(text.replace('version: "1.0"', f'version: "{version}"'),
                        encoding="utf-8")
    return protocol


def test_a_periodic_run_is_compared_with_the_active_baseline(tmp_path, store, monkeypatch):
    monkeypatch.setattr(qa.baseline, "baseline_spec", lambda protocol: SPEC)
    first = run_protocol(_periodic(tmp_path / "m0", {"A": 10.0, "B": 20.0, "C": 30.0}), store)
    verdicts = store.verdicts(first.run_id)
    (fingerprint,) = verdicts[verdicts.metric == "model_fingerprint"].itertuples()
    assert fingerprint.level == "TOLERANCE" and "no baseline is set" in fingerprint.message
    assert first.exit_code == ExitCode.TOLERANCE and first.summary["baseline"] is None

    baseline_id = store.set_baseline(first.run_id, operator="physicist A",
                                     reason="constancy set measured at commissioning")
    month = run_protocol(_periodic(tmp_path / "m1", {"A": 12.0, "B": -35.0}, version="1.1"),
                         store)

    assert month.summary["baseline"] == {"baseline_id": baseline_id, "run_id": first.run_id,
                                         "protocol_name": "sCT HU accuracy — test"}
    measured = store.measurements(month.run_id, check_id="baseline.hu_accuracy")
    mae = measured[(measured.metric == "mae_hu") & (measured.label == "")]
    # |12| - |10| = 2 HU and |-35| - |20| = 15 HU
    assert mae.case_id.tolist() == ["A", "B"]
    np.testing.assert_allclose(mae.value, [2.0, 15.0], atol=1e-3)
    assert set(measured.check) == {"baseline"}

    verdicts = store.verdicts(month.run_id)
    diff = verdicts[verdicts.check_id == "baseline.hu_accuracy"].set_index("case_id")["level"]
    assert diff.to_dict() == {"A": "OK", "B": "ACTION"}
    cohort = verdicts[verdicts.check_id == "baseline"].set_index("metric")
    assert cohort.loc["model_fingerprint", "level"] == "ACTION"
    assert cohort.loc["model_fingerprint", "message"].startswith(
        "model changed — re-commission: version '1.0' -> '1.1'")
    assert cohort.loc["constancy_cases_missing", "value"] == 1.0
    assert cohort.loc["constancy_cases_missing", "level"] == "ACTION"
    assert "(C)" in cohort.loc["constancy_cases_missing", "message"]
    assert cohort.case_id.isna().all()
    assert month.exit_code == ExitCode.ACTION

    junit = ET.fromstring(junit_xml(store, month.run_id))
    outcomes = {(t.get("classname").split(".", 1)[1], t.get("name")):
                next((child.get("type") for child in t), "pass") for t in junit.iter("testcase")}
    assert outcomes[("baseline.hu_accuracy", "A")] == "pass"
    assert outcomes[("baseline.hu_accuracy", "B")] == "ACTION"
    assert outcomes[("baseline.cohort", "value(model_fingerprint)")] == "ACTION"
    assert outcomes[("baseline.cohort", "value(constancy_cases_missing)")] == "ACTION"

    (comparison,) = store.details(month.run_id, check_id="baseline").payload
    assert comparison["baseline"]["reason"] == "constancy set measured at commissioning"
    assert comparison["missing_cases"] == ["C"] and comparison["cases_not_in_baseline"] == []
    rows = {(r["case_id"], r["metric"], r["label"]): r for r in comparison["rows"]}
    assert rows[("B", "mae_hu", "")]["baseline"] == pytest.approx(20.0, abs=1e-3)
    assert rows[("B", "mae_hu", "")]["current"] == pytest.approx(35.0, abs=1e-3)


def test_commissioning_runs_are_not_compared(tmp_path, store):
    outcome = run_protocol(write_precomputed_cohort(tmp_path / "c", {"A": 10.0}), store)
    verdicts = store.verdicts(outcome.run_id)
    assert not verdicts.check_id.str.startswith("baseline").any()
    assert outcome.summary["baseline"] is None


def test_a_failed_comparison_is_a_run_error_and_keeps_the_run(tmp_path, store, monkeypatch):
    import qa.runner

    def broken(*args, **kwargs):
        raise RuntimeError("baseline run 1 was read back empty")

    monkeypatch.setattr(qa.runner, "run_baseline_comparison", broken)
    outcome = run_protocol(_periodic(tmp_path / "m", {"A": 10.0}), store)
    assert outcome.exit_code == ExitCode.ERRORS
    (error,) = store.errors(outcome.run_id).itertuples()
    assert error.check_id == "baseline" and pd.isna(error.case_id)
    assert error.message == ("the comparison with the baseline could not be made: "
                             "RuntimeError: baseline run 1 was read back empty (please report "
                             "this with the log)")
    assert len(store.measurements(outcome.run_id)) > 0
    assert store.run(outcome.run_id)["status"] == "complete"
