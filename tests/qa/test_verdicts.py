"""Specification of qa.verdicts: grading against two levels, per case and over a cohort.

Expected cohort statistics are computed in the tests with numpy directly on the values.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from checks.base import Measurement
from qa.protocol import CheckSpec
from qa.verdicts import (
    Bound,
    Level,
    Levels,
    Verdict,
    grade,
    grade_cohort,
    grade_measurements,
    worst_level,
)
from tests.qa.test_protocol import register_fake_checks

MAX_LEVELS = Levels(Bound(max=70), Bound(max=90))
MIN_LEVELS = Levels(Bound(min=95), Bound(min=90))
BAND_LEVELS = Levels(Bound(min=-5, max=5), Bound(min=-10, max=10))


@pytest.fixture(autouse=True)
def _fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    register_fake_checks(monkeypatch)  # cohort units come from the check's metrics


def spec(**extra: object) -> CheckSpec:
    """A check spec built directly (bindings are not looked at by the grading)."""
    return CheckSpec.model_validate({"check": "fake_hu", "id": "hu_body", **extra})


@pytest.mark.parametrize(("value", "expected"), [
    (0.0, "OK"), (70.0, "OK"), (70.0001, "TOLERANCE"), (90.0, "TOLERANCE"),
    (90.0001, "ACTION"), (-1e9, "OK"),
])
def test_max_only_levels_inclusive(value: float, expected: str) -> None:
    assert grade(value, MAX_LEVELS) == Level(expected)


@pytest.mark.parametrize(("value", "expected"), [
    (100.0, "OK"), (95.0, "OK"), (94.99, "TOLERANCE"), (90.0, "TOLERANCE"),
    (89.99, "ACTION"), (1e9, "OK"),
])
def test_min_only_levels_inclusive(value: float, expected: str) -> None:
    assert grade(value, MIN_LEVELS) == Level(expected)


@pytest.mark.parametrize(("value", "expected"), [
    (-5.0, "OK"), (5.0, "OK"), (-7.0, "TOLERANCE"), (7.0, "TOLERANCE"), (-10.0, "TOLERANCE"),
    (10.5, "ACTION"), (-10.5, "ACTION"),
])
def test_two_sided_levels(value: float, expected: str) -> None:
    assert grade(value, BAND_LEVELS) == Level(expected)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_is_action(value: float) -> None:
    assert grade(value, MAX_LEVELS) is Level.ACTION
    assert grade(value, MIN_LEVELS) is Level.ACTION


def test_level_order_and_text() -> None:
    assert Level.OK < Level.TOLERANCE < Level.ACTION
    assert max([Level.TOLERANCE, Level.ACTION, Level.OK]) is Level.ACTION
    assert [str(level) for level in Level] == ["OK", "TOLERANCE", "ACTION"]
    assert Level("ACTION") is Level.ACTION and Level.OK == "OK"


def test_worst_level() -> None:
    assert worst_level([]) is Level.OK
    assert worst_level([Level.OK, Level.TOLERANCE]) is Level.TOLERANCE
    verdicts = grade_measurements(spec(tolerances={"mae_hu": MAX_LEVELS}), "c1",
                                  [Measurement("mae_hu", 95.0, "HU")])
    assert worst_level(verdicts + [Level.OK]) is Level.ACTION


def test_bound_rules() -> None:
    with pytest.raises(ValidationError, match="a level needs min, max or both"):
        Bound()
    with pytest.raises(ValidationError, match="min 3 > max 2"):
        Bound(3, 2)
    with pytest.raises(ValidationError, match=r"tolerance.max \(95\) must be <= action.max"):
        Levels(Bound(max=95), Bound(max=90))
    with pytest.raises(ValidationError, match=r"tolerance.min \(absent\) must be >= action.min"):
        Levels(Bound(max=95), Bound(min=0, max=100))
    # equal tolerance and action levels are allowed (no warning band)
    assert grade(90.0, Levels(Bound(max=90), Bound(max=90))) is Level.OK


def test_grade_measurements_per_key_with_labels_and_messages() -> None:
    check = spec(tolerances={"mae_hu": MAX_LEVELS,
                             "mae_hu[bone]": Levels(Bound(max=200), Bound(max=250)),
                             "me_hu": BAND_LEVELS})
    measurements = [Measurement("mae_hu", 93.2, "HU"), Measurement("mae_hu", 210.0, "HU", "bone"),
                    Measurement("me_hu", 1.0, "HU"), Measurement("rmse_hu", 500.0, "HU")]
    v = grade_measurements(check, "c7", measurements)
    assert [(x.metric, x.label, x.level) for x in v] == [
        ("mae_hu", "", Level.ACTION), ("mae_hu", "bone", Level.TOLERANCE),
        ("me_hu", "", Level.OK)]
    assert v[0].message == "mae_hu = 93.2 HU > action max 90 HU (ACTION)"
    assert v[1].message == ("mae_hu[bone] = 210 HU > tolerance max 200 HU, within action "
                            "<= 250 HU (TOLERANCE)")
    assert v[2].message == "me_hu = 1 HU within tolerance [-5, 5] HU (OK)"
    assert (v[0].case_id, v[0].check_id, v[0].statistic, v[0].value) == (
        "c7", "hu_body", "value", 93.2)
    assert (v[1].tolerance_min, v[1].tolerance_max, v[1].action_min, v[1].action_max) == (
        None, 200.0, None, 250.0)


def test_missing_or_nan_measurement_is_action() -> None:
    check = spec(tolerances={"mae_hu": MAX_LEVELS, "mae_hu[bone]": MAX_LEVELS})
    v = grade_measurements(check, "c1", [Measurement("mae_hu", math.nan, "HU")])
    assert [x.level for x in v] == [Level.ACTION, Level.ACTION]
    assert v[0].message == "mae_hu = nan: not a finite number, so it cannot pass (ACTION)"
    assert math.isnan(v[1].value)
    assert v[1].message == ("mae_hu[bone] was not measured for this case, so it cannot pass "
                            "(ACTION)")


def test_a_label_the_check_declares_not_applicable_gets_no_verdict() -> None:
    # e.g. a prostate tolerance for a female patient: the structure is in neither set
    check = spec(tolerances={"mae_hu": MAX_LEVELS, "mae_hu[bone]": MAX_LEVELS})
    v = grade_measurements(check, "c1", [Measurement("mae_hu", 10.0, "HU")],
                           not_applicable=["bone"])
    assert [(x.metric, x.label, x.level) for x in v] == [("mae_hu", "", Level.OK)]
    # the overall value is never skipped: only labelled keys can be declared not applicable
    v = grade_measurements(check, "c1", [], not_applicable=[""])
    assert [x.level for x in v] == [Level.ACTION, Level.ACTION]


def test_verdict_to_dict_gives_the_level_as_text() -> None:
    check = spec(tolerances={"mae_hu": MAX_LEVELS})
    [v] = grade_measurements(check, "c1", [Measurement("mae_hu", 71.0, "HU")])
    assert v.to_dict()["level"] == "TOLERANCE"


VALUES = {"c1": 60.0, "c2": 72.0, "c3": 95.0, "c4": 40.0, "c5": 66.0, "c6": 88.0, "c7": 50.0}


def cohort_setup(statistic: str, metric: str = "mae_hu") -> tuple[CheckSpec, pd.DataFrame,
                                                                   list[Verdict]]:
    levels = {"tolerance": {"min": 0, "max": 1e6}, "action": {"min": -1e9, "max": 1e9}}
    check = spec(tolerances={"mae_hu": MAX_LEVELS},
                 cohort=[{"metric": metric, "statistic": statistic, **levels}])
    rows = [{"case_id": c, "metric": "mae_hu", "label": "", "value": v} for c, v in VALUES.items()]
    rows.append({"case_id": "c1", "metric": "mae_hu", "label": "bone", "value": 1000.0})
    rows.append({"case_id": "c1", "metric": "me_hu", "label": None, "value": 3.0})
    frame = pd.DataFrame(rows)
    verdicts = [v for c, x in VALUES.items()
                for v in grade_measurements(check, c, [Measurement("mae_hu", x, "HU")])]
    return check, frame, verdicts


@pytest.mark.parametrize(("statistic", "numpy_value"), [
    ("mean", np.mean(list(VALUES.values()))),
    ("median", np.median(list(VALUES.values()))),
    ("p95", np.percentile(list(VALUES.values()), 95)),
    ("min", 40.0),
    ("max", 95.0),
])
def test_cohort_statistics_match_numpy(statistic: str, numpy_value: float) -> None:
    check, frame, verdicts = cohort_setup(statistic)
    [v] = grade_cohort(check, frame, verdicts)
    assert v.case_id is None and v.statistic == statistic and v.metric == "mae_hu"
    assert v.value == pytest.approx(float(numpy_value), rel=1e-12)
    assert v.message.startswith(f"{statistic} of mae_hu over 7 cases = ")


def test_p95_is_linear_interpolation() -> None:
    # sorted: 40 50 60 66 72 88 95; rank 0.95*(7-1) = 5.7 -> 88 + 0.7*(95-88) = 92.9
    check, frame, verdicts = cohort_setup("p95")
    assert grade_cohort(check, frame, verdicts)[0].value == pytest.approx(92.9)


def test_cohort_grading_and_label_selection() -> None:
    check = spec(tolerances={"mae_hu": MAX_LEVELS},
                 cohort=[{"metric": "mae_hu", "statistic": "mean",
                          "tolerance": {"max": 65}, "action": {"max": 80}},
                         {"metric": "mae_hu[bone]", "statistic": "max",
                          "tolerance": {"max": 65}, "action": {"max": 80}}])
    _, frame, verdicts = cohort_setup("mean")
    mean, bone = grade_cohort(check, frame, verdicts)
    assert mean.value == pytest.approx(67.285714285714, rel=1e-9)
    assert mean.level is Level.TOLERANCE
    assert (bone.label, bone.value, bone.level) == ("bone", 1000.0, Level.ACTION)
    assert bone.message == "max of mae_hu[bone] over 1 case = 1000 HU > action max 80 HU (ACTION)"


def test_pass_rate_denominator_is_graded_cases() -> None:
    check = spec(tolerances={"mae_hu": MAX_LEVELS},
                 cohort=[{"metric": "mae_hu", "statistic": "pass_rate",
                          "tolerance": {"min": 95}, "action": {"min": 50}}])
    _, frame, verdicts = cohort_setup("pass_rate")
    # a verdict of another check and a cohort verdict must not count
    other = Verdict("c9", "other", "mae_hu", "", "value", 1.0, Level.OK, None, 1, None, 2, "")
    [v] = grade_cohort(check, frame, verdicts + [other])
    ok = sum(x <= 70 for x in VALUES.values())  # c1 60, c4 40, c5 66, c7 50 -> 4 of 7
    assert v.value == pytest.approx(100 * ok / 7)
    assert v.level is Level.TOLERANCE
    assert v.message == ("pass_rate of mae_hu (4 of 7 graded cases OK) = 57.143 % < tolerance "
                         "min 95 %, within action >= 50 % (TOLERANCE)")


def test_pass_rate_without_graded_cases_is_action() -> None:
    check = spec(tolerances={"mae_hu": MAX_LEVELS},
                 cohort=[{"metric": "mae_hu", "statistic": "pass_rate",
                          "tolerance": {"min": 95}, "action": {"min": 90}}])
    [v] = grade_cohort(check, pd.DataFrame(columns=["case_id", "metric", "label", "value"]), [])
    assert v.level is Level.ACTION and math.isnan(v.value)
    assert "0 of 0" in v.message


def test_cohort_with_a_nan_case_is_undefined() -> None:
    check, frame, verdicts = cohort_setup("mean")
    frame.loc[frame["case_id"] == "c3", "value"] = math.nan
    [v] = grade_cohort(check, frame, verdicts)
    assert v.level is Level.ACTION and math.isnan(v.value)
    assert v.message == ("mean of mae_hu over 7 cases: 1 of 7 cases have no finite value, so "
                         "the statistic is undefined and cannot pass (ACTION)")


def test_cohort_filters_on_check_id_and_refuses_duplicates() -> None:
    check, frame, verdicts = cohort_setup("max")
    frame["check_id"] = "hu_body"
    extra = pd.DataFrame([{"case_id": "c1", "metric": "mae_hu", "label": "", "value": 1e5,
                           "check_id": "other"}])
    [v] = grade_cohort(check, pd.concat([frame, extra]), verdicts)
    assert v.value == 95.0
    dup = pd.concat([frame, frame.iloc[[0]]])
    with pytest.raises(ValueError, match=r"several mae_hu values for case\(s\) \['c1'\]"):
        grade_cohort(check, dup, verdicts)
