"""Control charts of qa.trend: published examples, hand-computed alarm points, false-alarm rates."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from qa.trend import (
    D2,
    Baseline,
    alarm_verdicts,
    cohort_series,
    cusum_chart,
    estimate_baseline,
    ewma_chart,
    imr_chart,
)
from qa.verdicts import Level

# Montgomery, Introduction to Statistical Quality Control, 6th ed. (Wiley 2009), table 9.1:
# 20 observations from N(10, 1), then 10 from N(11, 1). Used by his examples 9.1 (CUSUM)
# and 9.2 (EWMA).
MONTGOMERY_9_1 = [
    9.45, 7.99, 9.29, 11.66, 12.16, 10.18, 8.04, 11.46, 9.20, 10.34,
    9.03, 11.47, 10.51, 9.40, 10.08, 9.37, 10.62, 10.31, 8.52, 10.84,
    10.90, 9.33, 12.29, 11.50, 10.60, 11.08, 10.38, 11.62, 11.31, 10.52,
]
# Montgomery table 9.2, column C+_i, periods 1-29 (k = 0.5, h = 5, mu0 = 10, sigma = 1).
MONTGOMERY_C_PLUS = [
    0.0, 0.0, 0.0, 1.16, 2.82, 2.50, 0.04, 1.00, 0.0, 0.0, 0.0, 0.97, 0.98, 0.0, 0.0,
    0.0, 0.12, 0.0, 0.0, 0.34, 0.74, 0.0, 1.79, 2.79, 2.89, 3.47, 3.35, 4.47, 5.28,
]
KNOWN = Baseline.known(0.0, 1.0)


# -- published examples -------------------------------------------------------------------------

def test_cusum_reproduces_montgomery_example_9_1():
    chart = cusum_chart(MONTGOMERY_9_1, baseline=Baseline.known(10.0, 1.0), h_sigma=5.0)
    assert [round(p.statistic, 2) for p in chart.points[:29]] == MONTGOMERY_C_PLUS
    first = chart.first_alarm()
    # Montgomery: signal at period 29; N+ = 7, so the shift began after period 22; the new
    # mean is estimated at 10 + 0.5 + 5.28 / 7 = 11.25.
    assert (first.index, first.direction) == (28, "up")
    assert first.shift_start_index == 22
    assert first.estimated_mean == pytest.approx(11.25, abs=0.005)
    # His table keeps accumulating after the signal: 5.30 at period 30 (our default).
    assert chart.points[29].statistic == pytest.approx(5.30, abs=0.005)
    assert chart.alarm_indices() == [28, 29]


def test_cusum_reset_restarts_the_sum_after_an_alarm():
    chart = cusum_chart(MONTGOMERY_9_1, baseline=Baseline.known(10.0, 1.0),
                        reset_after_alarm=True)
    assert chart.points[29].statistic == pytest.approx(10.52 - 10.5)
    assert chart.alarm_indices() == [28]


def test_ewma_matches_montgomery_example_9_2_start_and_asymptote():
    # Example 9.2: lambda = 0.1, L = 2.7; z_1 = 9.945, z_2 = 9.7495; limits 9.73 / 10.27 at
    # period 1, tending to 9.38 / 10.62.
    chart = ewma_chart(MONTGOMERY_9_1, baseline=Baseline.known(10.0, 1.0), lam=0.1, L=2.7)
    assert chart.points[0].statistic == pytest.approx(9.945)
    assert chart.points[1].statistic == pytest.approx(9.7495)
    assert (round(chart.points[0].lower_limit, 2), round(chart.points[0].upper_limit, 2)) == (
        9.73, 10.27)
    assert round(chart.points[-1].upper_limit, 2) == 10.62
    assert round(chart.points[-1].lower_limit, 2) == 9.38
    # independent recomputation of every z_i and limit
    z = 10.0
    for i, (x, point) in enumerate(zip(MONTGOMERY_9_1, chart.points, strict=True), start=1):
        z = 0.1 * x + 0.9 * z
        half = 2.7 * math.sqrt(0.1 / 1.9 * (1 - 0.9 ** (2 * i)))
        assert point.statistic == pytest.approx(z)
        assert point.upper_limit == pytest.approx(10 + half)
        assert point.alarm == (abs(z - 10) > half)
    assert chart.alarm_indices() and min(chart.alarm_indices()) >= 20  # only after the shift


def test_imr_limits_by_hand():
    # x = 10, 12, 11, 13: mean 11.5, moving ranges 2, 1, 2 -> MR-bar 5/3.
    result = imr_chart([10.0, 12.0, 11.0, 13.0, 30.0], baseline=4)
    mr_bar = 5.0 / 3.0
    point = result.individuals.points[0]
    assert point.centre == pytest.approx(11.5)
    assert point.upper_limit == pytest.approx(11.5 + 3 * mr_bar / 1.128)
    assert point.lower_limit == pytest.approx(11.5 - 3 * mr_bar / 1.128)
    assert point.upper_limit == pytest.approx(11.5 + 2.66 * mr_bar, abs=1e-3)  # textbook form
    assert result.individuals.baseline.sigma == pytest.approx(mr_bar / 1.128)
    mr = result.moving_range
    assert math.isnan(mr.points[0].statistic) and not mr.points[0].alarm
    assert mr.points[4].statistic == pytest.approx(17.0)
    assert mr.points[4].upper_limit == pytest.approx(3.267 * mr_bar)
    assert result.individuals.alarm_indices() == [4]
    assert mr.alarm_indices() == [4]
    assert result.individuals.points[4].rules == ("rule1",)


# -- shifts and drifts with the alarm point computed by hand ------------------------------------

def test_individuals_step_of_four_sigma_alarms_at_the_step():
    values = [0.0] * 12 + [4.0] * 3
    chart = imr_chart(values, baseline=KNOWN).individuals
    assert chart.first_alarm().index == 12  # 4 > 3 sigma at once


def test_individuals_linear_drift_crosses_the_limit_when_expected():
    # x_i = 0.25 (i - 9) from i = 10 on: above 3 sigma when 0.25 j > 3, i.e. j = 13 -> i = 22.
    values = [0.0] * 10 + [0.25 * j for j in range(1, 20)]
    chart = imr_chart(values, baseline=KNOWN).individuals
    assert chart.first_alarm().index == 22


def test_ewma_step_of_two_sigma_alarms_on_the_fourth_point():
    # Noise-free step of 2 sigma at i = 10: z = 2 (1 - 0.8^j) after j shifted points; the limit
    # is 3 sqrt(0.2/1.8 (1 - 0.64^i)) ~ 1.0: j = 3 gives 0.976 (no), j = 4 gives 1.181 (alarm).
    values = [0.0] * 10 + [2.0] * 6
    chart = ewma_chart(values, baseline=KNOWN)
    half = 3 * math.sqrt(0.2 / 1.8 * (1 - 0.64 ** 13))
    assert chart.points[12].statistic == pytest.approx(2 * (1 - 0.8 ** 3))
    assert chart.points[12].upper_limit == pytest.approx(half)
    assert chart.first_alarm().index == 13
    assert chart.first_alarm().direction == "up"


@pytest.mark.parametrize(("h_sigma", "expected"), [(4.0, 18), (5.0, 20)])
def test_cusum_one_sigma_step_by_hand(h_sigma, expected):
    # x = 1 sigma from i = 10: C+ grows by 1 - 0.5 = 0.5 per point and exceeds h after
    # j = 2h + 1 points (strict comparison), i.e. at i = 10 + 2h.
    values = [0.0] * 10 + [1.0] * 15
    alarm = cusum_chart(values, baseline=KNOWN, h_sigma=h_sigma).first_alarm()
    assert alarm.index == expected
    assert alarm.shift_start_index == 10
    assert alarm.estimated_mean == pytest.approx(1.0)  # 0 + 0.5 + C+/N+ = 0.5 + 0.5


def test_cusum_detects_a_downward_shift_on_the_lower_sum():
    values = [0.0] * 5 + [-2.0] * 5
    chart = cusum_chart(values, baseline=KNOWN)
    alarm = chart.first_alarm()
    # C- grows by 1.5 per point: 1.5, 3, 4.5, 6 > 5 at the 4th shifted point (i = 8).
    assert (alarm.index, alarm.direction) == (8, "down")
    assert chart.points[8].statistic_lower == pytest.approx(6.0)
    assert alarm.estimated_mean == pytest.approx(-2.0)


# -- Western Electric rules ---------------------------------------------------------------------

@pytest.mark.parametrize(("values", "index", "rule"), [
    ([0.0, 2.5, 0.5, 2.5], 3, "rule2"),                  # 2 of 3 beyond 2 sigma
    ([0.0, 1.5, 1.5, 0.2, 1.5, 1.5], 5, "rule3"),        # 4 of 5 beyond 1 sigma
    ([-0.5] + [0.5] * 8, 8, "rule4"),                    # 8 in a row above the centre
    ([0.0, -2.5, -0.5, -2.5], 3, "rule2"),               # same below the centre
])
def test_run_rules_fire_where_the_pattern_completes(values, index, rule):
    chart = imr_chart(values, baseline=KNOWN, run_rules=True).individuals
    assert chart.alarm_indices() == [index]
    assert rule in chart.points[index].rules
    assert imr_chart(values, baseline=KNOWN).individuals.alarm_indices() == []  # off by default


def test_run_rules_do_not_mix_sides():
    chart = imr_chart([2.5, -2.5, -0.5, 2.5], baseline=KNOWN, run_rules=True).individuals
    assert chart.alarm_indices() == []


# -- in-control data: false alarms near the nominal rate (seeded) --------------------------------

def test_in_control_false_alarm_rates_are_near_nominal():
    rng = np.random.default_rng(20261127)
    x = rng.standard_normal(6000)
    # 3-sigma individuals: p = 0.0027 per point (16 expected); generous bound.
    assert len(imr_chart(x, baseline=KNOWN).individuals.alarm_indices()) < 35
    # Western Electric rules 1-4 together: in-control ARL about 92 (Champ & Woodall 1987).
    we = imr_chart(x, baseline=KNOWN, run_rules=True).individuals
    assert len(we.alarm_indices()) / x.size < 0.025
    # EWMA lambda 0.2, L 3: ARL about 560 (Lucas & Saccucci 1990); alarms come in short runs.
    assert len(ewma_chart(x, baseline=KNOWN).alarm_indices()) / x.size < 0.01
    # CUSUM k 0.5, h 5 with restart: ARL 465 (Montgomery table 9.3): 13 expected.
    assert len(cusum_chart(x, baseline=KNOWN, reset_after_alarm=True).alarms) < 30


def test_estimated_limits_from_a_long_baseline_keep_the_rate_low():
    rng = np.random.default_rng(7)
    x = 50.0 + 2.0 * rng.standard_normal(3000)
    chart = imr_chart(x, baseline=200).individuals
    assert chart.baseline.sigma == pytest.approx(2.0, rel=0.1)
    assert len(chart.alarm_indices()) / x.size < 0.01


def test_cusum_out_of_control_run_length_matches_montgomery_table_9_3():
    # k = 0.5, h = 5: a 1-sigma shift is detected after 10.4 points on average.
    rng = np.random.default_rng(3)
    lengths = []
    for _ in range(600):
        chart = cusum_chart(1.0 + rng.standard_normal(40), baseline=KNOWN)
        lengths.append(chart.first_alarm(after_baseline=False).index + 1)
    assert np.mean(lengths) == pytest.approx(10.4, abs=0.6)


# -- baseline, provisional flag and errors -----------------------------------------------------

def test_limits_from_fewer_than_eight_points_are_provisional():
    values = [1.0, 2.0, 1.5, 1.2, 1.8, 1.1, 1.6, 1.4, 1.3]
    assert imr_chart(values, baseline=7).individuals.provisional
    assert not imr_chart(values, baseline=8).individuals.provisional
    assert ewma_chart(values, baseline=7).provisional
    assert not cusum_chart(values, baseline=Baseline.known(1.5, 0.3)).provisional


def test_estimate_baseline_uses_moving_ranges():
    b = estimate_baseline([1.0, 3.0, 2.0])
    assert (b.centre, b.mr_bar, b.sigma, b.n_points) == (2.0, 1.5, 1.5 / D2, 3)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: imr_chart([1.0, float("nan"), 2.0]), r"values must be finite, got nan at "
                                                   r"position 1; leave out periods"),
    (lambda: imr_chart([1.0, 2.0, 3.0], baseline=1), r"baseline must be a Baseline or a "
                                                     r"number of leading points in \[2, 3\]"),
    (lambda: imr_chart([2.0, 2.0, 2.0, 5.0], baseline=3), r"all equal \(2\): no spread.*"
                                                          r"Baseline.known"),
    (lambda: ewma_chart([1.0, 2.0], lam=0.0), r"lam \(EWMA weight λ\) must be in \(0, 1\]"),
    (lambda: cusum_chart([1.0, 2.0], h_sigma=-1), r"h_sigma .* must be a finite number > 0"),
    (lambda: imr_chart([1.0, 2.0], labels=["a"]), r"labels has 1 entries for 2 values"),
    (lambda: Baseline.known(0.0, 0.0), r"sigma must be a finite number > 0, got 0.0"),
])
def test_errors_name_the_parameter_and_the_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_results_serialise_to_strict_json():
    result = imr_chart(pd.Series([1.0, 2.0, 1.5, 9.0], index=["m1", "m2", "m3", "m4"]),
                       baseline=3)
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert '"label": "m4"' in text
    assert result.moving_range.to_dict()["points"][0]["statistic"] is None
    json.dumps(cusum_chart([1.0, 2.0, 1.5], baseline=2).to_dict(), allow_nan=False)


# -- engine helpers -----------------------------------------------------------------------------

def _verdicts(values: dict[int, float]) -> pd.DataFrame:
    rows = []
    for run_id, value in values.items():
        rows.append({"run_id": run_id, "case_id": None, "check_id": "hu_body", "metric": "me_hu",
                     "label": "bone", "statistic": "mean", "value": value})
        rows.append({"run_id": run_id, "case_id": "P001", "check_id": "hu_body",
                     "metric": "me_hu", "label": "bone", "statistic": "value", "value": 0.0})
        rows.append({"run_id": run_id, "case_id": None, "check_id": "hu_body",
                     "metric": "mae_hu", "label": "", "statistic": "mean", "value": 60.0})
    return pd.DataFrame(rows)


def test_cohort_series_picks_one_aggregate_per_run(caplog):
    frame = _verdicts({3: 1.0, 1: 2.0, 2: float("nan")})
    with caplog.at_level(logging.WARNING, logger="qa.trend"):
        series = cohort_series(frame, check_id="hu_body", metric="me_hu", label="bone")
    assert series.to_dict() == {1: 2.0, 3: 1.0}
    assert series.name == "hu_body.me_hu[bone] mean"
    assert "runs [2] have no finite value" in caplog.text
    with pytest.raises(ValueError, match=r"runs \[1\] hold more than one cohort verdict"):
        cohort_series(pd.concat([frame, frame[frame["run_id"] == 1]]), check_id="hu_body",
                      metric="me_hu",
                      label="bone")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['statistic'\]"):
        cohort_series(frame.drop(columns="statistic"), check_id="hu_body", metric="me_hu")


def test_alarm_verdicts_grade_the_newest_period():
    series = pd.Series([10.0, 12.0, 11.0, 13.0, 11.5, 40.0], index=[1, 2, 3, 4, 5, 6])
    chart = imr_chart(series, baseline=5)
    verdicts = alarm_verdicts(chart, check_id="hu_body", metric="me_hu", label="bone")
    assert [(v.statistic, v.level) for v in verdicts] == [("mean:individuals", Level.TOLERANCE),
                                                          ("mean:moving_range", Level.TOLERANCE)]
    first = verdicts[0]
    assert first.case_id is None and first.value == 40.0
    assert first.tolerance_max == pytest.approx(chart.individuals.points[5].upper_limit)
    assert "at 6" in first.message and "provisional limits" in first.message
    assert alarm_verdicts(chart, check_id="hu_body", metric="me_hu", index=2) == []
    assert alarm_verdicts(cusum_chart(series, baseline=5), check_id="x", metric="y",
                          level="ACTION")[0].level == Level.ACTION
