"""Report section of the ``dvh`` check: DVH difference table (median and worst case per
structure and metric), and the DVH curves of the worst case under both doses.

Everything comes from stored rows: the ``*_diff_gy`` / ``*_diff_percent_rx`` measurements
and the check's ``dvh_curves`` details. The worst case is the one with the largest
absolute Dmean difference (percent of Rx) over its structures.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from reports.plots import detail_payloads, figure_data_uri, new_figure, text

TEMPLATE = "sections/dvh.html.j2"
SHOWN = ("d98", "d95", "d50", "d2", "dmean", "d0_03cc")


def build(store: Any, run_id: int, check_id: str, measurements: pd.DataFrame,
          fmt: Any) -> dict[str, Any]:
    """Display data of one ``dvh`` check of the run, read from the store."""
    mine = measurements[measurements["check_id"].map(text) == check_id]
    stored = detail_payloads(store.details(run_id, check_id=check_id, name="dvh_curves"))
    curves = {case: payload or {} for case, payload in stored.get("dvh_curves", {}).items()}
    return section_data(mine, curves, fmt)


def section_data(mine: pd.DataFrame, curves: dict[str, dict[str, Any]],
                 fmt: Any) -> dict[str, Any]:
    """Section dict from this check's measurement rows and per-case DVH curves."""
    table = {(text(r.case_id), text(r.metric), text(r.label)): float(r.value)
             for r in mine.itertuples(index=False)}
    structures = list(dict.fromkeys(lab for (_c, m, lab) in table
                                    if m == "dmean_diff_percent_rx"))
    if not structures:
        return {"empty": True}
    cases = list(dict.fromkeys(c for (c, _m, _l) in table))
    rows = []
    for name in structures:
        cells = []
        for key in SHOWN:
            values = [table.get((c, f"{key}_diff_percent_rx", name), math.nan) for c in cases]
            finite = [v for v in values if v == v]
            worst = max(finite, key=abs) if finite else math.nan
            cells.append((fmt.number(float(np.median(finite)) if finite else None,
                                     f"{key}_diff_percent_rx", "%"),
                          fmt.number(worst, f"{key}_diff_percent_rx", "%")))
        dmean = [table.get((c, "dmean_diff_percent_rx", name)) for c in cases]
        rows.append({"name": name, "cells": cells,
                     "n": sum(v is not None and math.isfinite(v) for v in dmean),
                     # stored as NaN: the check could not evaluate it (input error)
                     "not_evaluated": sum(v is not None and math.isnan(v) for v in dmean)})
    # worst case: largest finite |Dmean difference| (a structure not evaluated, NaN, has none)
    dmean = {c: [abs(table.get((c, "dmean_diff_percent_rx", s), math.nan)) for s in structures]
             for c in cases}
    scores = [(max((v for v in dmean[c] if math.isfinite(v)), default=0.0), c) for c in cases]
    worst_case = max(scores)[1]
    mae = [(c, fmt.number(table.get((c, "dose_mae_percent_rx", "")), "dose_mae_percent_rx",
                          "%")) for c in cases]
    section: dict[str, Any] = {"empty": False, "metrics": list(SHOWN), "rows": rows,
                               "worst_case": worst_case, "curves": None, "mae": mae}
    stored = curves.get(worst_case) or {}
    if stored:
        fig = new_figure(6.5, 3.2)
        ax = fig.add_subplot()
        for i, (name, curve) in enumerate(stored.items()):
            colour = f"C{i % 10}"
            ax.plot(curve["dose_gy"], curve["reference_percent"], color=colour, label=name)
            ax.plot(curve["dose_gy"], curve["evaluated_percent"], color=colour,
                    linestyle="--")
        ax.set_xlabel(fmt.t("dvh.dose_axis"))
        ax.set_ylabel(fmt.t("dvh.volume_axis"))
        ax.legend(fontsize="small")
        section["curves"] = figure_data_uri(fig)
    return section
