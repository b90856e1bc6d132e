"""Specification of the report's number formatting (reports._format.Formatter.number)."""

from __future__ import annotations

import math

import pytest

from reports._format import Formatter


@pytest.mark.parametrize(("value", "metric", "unit", "en", "fr"), [
    (-0.04, "dmean_diff_percent_rx", "%", "0.0", "0,0"),      # rounds to zero: no sign
    (-0.0, "mae_hu", "HU", "0.0", "0,0"),
    (-1e-12, "dice", "1", "0.000", "0,000"),
    (-0.06, "dmean_diff_percent_rx", "%", "-0.1", "-0,1"),    # a real negative keeps it
    (-1e-7, "custom", "?", "-1e-07", "-1e-07"),               # significant digits kept
    (-1234.5, "mae_hu", "HU", "-1,234.5", "-1\u202f234,5"),
    (math.nan, "dice", "1", "n/a", "n/a"),
])
def test_numbers_round_to_their_metric_and_a_zero_has_no_sign(value, metric, unit, en, fr):
    assert Formatter("en").number(value, metric, unit) == en
    assert Formatter("fr").number(value, metric, unit) == fr
