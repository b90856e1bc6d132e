"""The control-chart figure draws what the stored chart record says, nothing recomputed."""

from __future__ import annotations

import json

import numpy as np
from matplotlib.figure import Figure

from qa.trend import Baseline, cusum_chart, imr_chart
from reports.trend_plots import plot_control_chart


def _stored(chart) -> dict:
    return json.loads(json.dumps(chart.to_dict(), allow_nan=False))  # as read back from JSON


def test_individuals_chart_draws_values_limits_and_alarms():
    chart = imr_chart([1.0, 2.0, 1.5, 1.2, 9.0], baseline=4).individuals
    ax = Figure().subplots()
    plot_control_chart(ax, _stored(chart), ylabel="bone ME (HU)")
    series = ax.lines[0].get_ydata()
    assert np.allclose(series, [1.0, 2.0, 1.5, 1.2, 9.0])
    upper = ax.lines[2].get_ydata()
    assert np.allclose(upper, chart.points[0].upper_limit)
    circled = ax.collections[-1].get_offsets()
    assert circled.tolist() == [[4.0, 9.0]]
    assert ax.get_title() == "individuals (provisional limits)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3", "4"]


def test_cusum_draws_the_lower_sum_below_zero_and_circles_it():
    chart = cusum_chart([0.0] * 5 + [-2.0] * 5, baseline=Baseline.known(0.0, 1.0))
    ax = Figure().subplots()
    plot_control_chart(ax, _stored(chart), ylabel="sum (HU)")
    lower = ax.lines[1].get_ydata()
    assert lower[8] == -6.0
    assert ax.collections[-1].get_offsets().tolist()[0] == [8.0, -6.0]
    assert ax.get_title() == "cusum"


def test_moving_range_gap_at_the_first_point():
    chart = imr_chart([1.0, 2.0, 1.5], baseline=3).moving_range
    ax = Figure().subplots()
    plot_control_chart(ax, _stored(chart), ylabel="MR (HU)")
    assert np.isnan(ax.lines[0].get_ydata()[0])
