"""Report section of the ``gamma`` check: pass rates per criterion and case, the summed
gamma histogram of each criterion, and the stored gamma-map slice of the worst case.

Everything comes from stored rows: the ``pass_rate_percent`` / ``mean_gamma`` measurements
and the check's ``settings``, ``gamma_histograms`` and ``gamma_map_slice`` details. Sums
and sorting for display are the only arithmetic done here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from reports.plots import detail_payloads, figure_data_uri, new_figure, text

TEMPLATE = "sections/gamma.html.j2"


def build(store: Any, run_id: int, check_id: str, measurements: pd.DataFrame,
          fmt: Any) -> dict[str, Any]:
    """Display data of one ``gamma`` check of the run, read from the store."""
    mine = measurements[measurements["check_id"].map(text) == check_id]
    return section_data(mine, detail_payloads(store.details(run_id, check_id=check_id)), fmt)


def section_data(mine: pd.DataFrame, payloads: dict[str, dict[str, Any]],
                 fmt: Any) -> dict[str, Any]:
    """Section dict from this check's measurement rows and per-case detail payloads."""
    table = {(text(r.case_id), text(r.metric), text(r.label)): float(r.value)
             for r in mine.itertuples(index=False)}
    criteria = list(dict.fromkeys(lab for (_c, m, lab) in table if m == "pass_rate_percent"))
    if not criteria:
        return {"empty": True}
    cases = list(dict.fromkeys(c for (c, _m, _l) in table))
    rows = [{"case_id": c,
             "rates": [fmt.number(table.get((c, "pass_rate_percent", k)), "pass_rate_percent",
                                  "%") for k in criteria],
             "n_evaluated": fmt.number(table.get((c, "n_evaluated", "")), "n_voxels", ""),
             "n_outside_grid": fmt.number(table.get((c, "n_outside_grid", "")), "n_voxels",
                                          "")}
            for c in cases]
    settings = next(iter(payloads.get("settings", {}).values()), None) or {}
    section: dict[str, Any] = {
        "empty": False, "criteria": criteria, "rows": rows,
        "settings": [(key, text(settings.get(key))) for key in
                     ("local", "lower_cutoff_percent", "cutoff_on_union", "max_gamma", "pass")
                     if key in settings],
        "histogram": _histogram_plot(payloads.get("gamma_histograms", {}), criteria, fmt),
        "map": None,
    }
    first = criteria[0]
    rated = [(table.get((c, "pass_rate_percent", first), math.nan), c) for c in cases]
    rated = [(v, c) for v, c in rated if v == v]
    maps = payloads.get("gamma_map_slice", {})
    if rated:
        worst_value, worst_case = min(rated)
        stored = maps.get(worst_case)
        if stored and stored.get("gamma"):
            section["map"] = {"uri": _map_plot(stored, fmt), "case_id": worst_case,
                              "criterion": text(stored.get("criterion")),
                              "z_index": stored.get("z_index"),
                              "rate": fmt.number(worst_value, "pass_rate_percent", "%")}
    return section


def _histogram_plot(histograms: dict[str, Any], criteria: list[str], fmt: Any) -> str | None:
    summed: dict[str, tuple[list[float], np.ndarray]] = {}
    for per_case in histograms.values():
        for crit, hist in (per_case or {}).items():
            edges, counts = hist.get("edges"), np.asarray(hist.get("counts"), dtype=float)
            if crit not in summed:
                summed[crit] = (edges, counts)
            elif summed[crit][0] == edges:
                summed[crit] = (edges, summed[crit][1] + counts)
    if not summed:
        return None
    fig = new_figure(6.5, 2.8)
    ax = fig.add_subplot()
    for crit in criteria:
        if crit in summed:
            edges, counts = summed[crit]
            total = counts.sum()
            ax.stairs(100.0 * counts / total if total else counts, edges, label=crit)
    ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel(fmt.t("gamma.histogram_x"))
    ax.set_ylabel(fmt.t("gamma.histogram_y"))
    ax.legend()
    return figure_data_uri(fig)


def _map_plot(stored: dict[str, Any], fmt: Any) -> str:
    values = np.array([[math.nan if v is None else v for v in row] for row in stored["gamma"]],
                      dtype=float)
    dy, dx = stored.get("pixel_mm", [1.0, 1.0])
    fig = new_figure(4.5, 3.6)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="RdYlGn_r", vmin=0.0, vmax=2.0, interpolation="nearest",
                      extent=(0, values.shape[1] * dx, values.shape[0] * dy, 0))
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    fig.colorbar(image, ax=ax, label=fmt.t("gamma.map_colorbar"))
    return figure_data_uri(fig)
