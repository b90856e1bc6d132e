"""Specification of the DVH report section's choice of worst case."""

from __future__ import annotations

import math

import pandas as pd

from reports._format import Formatter
from reports.sections.dvh import section_data


def _rows(values):
    return pd.DataFrame([{"case_id": case, "check_id": "dvh", "metric": metric,
                          "label": label, "value": value, "unit": "%"}
                         for (case, metric, label), value in values.items()])


def test_the_worst_case_is_the_largest_finite_dmean_difference_never_a_structure_not_evaluated():
    rows = _rows({("A", "dmean_diff_percent_rx", "ptv"): 1.5,
                  ("A", "dmean_diff_percent_rx", "rectum"): -0.5,
                  ("B", "dmean_diff_percent_rx", "ptv"): 0.2,
                  ("B", "dmean_diff_percent_rx", "rectum"): math.nan,  # not evaluated
                  ("C", "dmean_diff_percent_rx", "ptv"): -2.5,
                  ("C", "dmean_diff_percent_rx", "rectum"): 0.1})
    for order in (rows, rows.iloc[::-1], rows.iloc[[3, 2, 0, 1, 4, 5]]):  # B's NaN first too
        section = section_data(order, {}, Formatter("en"))
        assert section["worst_case"] == "C"
    rectum = next(r for r in section["rows"] if r["name"] == "rectum")
    assert rectum["cells"][4] == ("-0.2", "-0.5")  # Dmean: median and worst of the finite
    assert (rectum["n"], rectum["not_evaluated"]) == (2, 1)
    ptv = next(r for r in section["rows"] if r["name"] == "ptv")
    assert (ptv["n"], ptv["not_evaluated"]) == (3, 0)
