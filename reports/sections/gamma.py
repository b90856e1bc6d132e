"""Report section of the ``gamma`` check: pass rates per criterion and case, the summed
gamma histogram of each criterion, and the stored gamma-map slice of the worst cases drawn
over their CT.

Everything comes from stored rows: the ``pass_rate_percent`` / ``mean_gamma`` measurements
and the check's ``settings``, ``gamma_histograms`` and ``gamma_map_slice`` details (the
slice, and the CT grey levels at the same pixels when the protocol bound the ``ct`` slot).
Sums and sorting for display are the only arithmetic done here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from reports.plots import detail_payloads, figure_data_uri, new_figure, text

TEMPLATE = "sections/gamma.html.j2"
#: Worst cases (lowest pass rate of the first criterion) whose gamma map is drawn.
WORST_MAPS = 2


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
                     if key in settings] + _search_setting(payloads.get("settings", {}), fmt),
        "histogram": _histogram_plot(payloads.get("gamma_histograms", {}), criteria, fmt),
        "map": None,
    }
    first = criteria[0]
    rated = [(table.get((c, "pass_rate_percent", first), math.nan), c) for c in cases]
    rated = sorted((v, c) for v, c in rated if v == v)
    maps = payloads.get("gamma_map_slice", {})
    section["maps"] = []
    for value, case_id in rated[:WORST_MAPS]:
        stored = maps.get(case_id)
        if not stored or not stored.get("gamma"):
            continue
        rule = text(stored.get("slice_rule")) or "most_failing"
        section["maps"].append({
            "uri": _map_plot(stored, fmt), "case_id": case_id,
            "criterion": text(stored.get("criterion")), "z_index": stored.get("z_index"),
            "z_mm": fmt.number(stored.get("z_mm"), "position_mm", "mm"),
            "rule": fmt.t(f"gamma.slice_rule.{rule}"), "with_ct": bool(stored.get("ct_grey")),
            "rate": fmt.number(value, "pass_rate_percent", "%")})
    section["map"] = section["maps"][0] if section["maps"] else None
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
    """Gamma over the CT (grey) in patient millimetres; gamma = 1 contoured and marked on
    the colour bar; not-evaluated pixels transparent."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    values = np.array([[math.nan if v is None else v for v in row] for row in stored["gamma"]],
                      dtype=float)
    dy, dx = stored.get("pixel_mm", [1.0, 1.0])
    extent = (0.0, values.shape[1] * dx, values.shape[0] * dy, 0.0)
    fig = new_figure(4.8, 3.8)
    ax = fig.add_subplot()
    grey = stored.get("ct_grey")
    if grey:
        ax.imshow(np.asarray(grey, dtype=float), cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest", extent=extent)
    # passing points in greens/blues, failing ones in yellow-red: the break is at gamma = 1
    vmax = max(2.0, float(np.nanmax(values)) if np.isfinite(values).any() else 2.0)
    bounds = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, vmax]
    cmap = ListedColormap(["#2c7bb6", "#4aa3c9", "#7fc6a4", "#b8e08c",
                           "#fee08b", "#fdae61", "#f46d43", "#d73027"])
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap,
                      norm=BoundaryNorm(bounds, cmap.N), interpolation="nearest",
                      extent=extent, alpha=0.6 if grey else 1.0)
    if np.nanmax(values, initial=0.0) > 1.0 and np.nanmin(values, initial=2.0) <= 1.0:
        ys = (np.arange(values.shape[0]) + 0.5) * dy
        xs = (np.arange(values.shape[1]) + 0.5) * dx
        ax.contour(xs, ys, np.nan_to_num(values, nan=0.0), levels=[1.0], colors="black",
                   linewidths=0.8)
    ax.set_xlabel(fmt.t("gamma.map_x"))
    ax.set_ylabel(fmt.t("gamma.map_y"))
    if stored.get("orientation_lps"):
        for x, y, key, ha, va in ((0.01, 0.5, "right", "left", "center"),
                                  (0.99, 0.5, "left", "right", "center"),
                                  (0.5, 0.99, "anterior", "center", "top"),
                                  (0.5, 0.01, "posterior", "center", "bottom")):
            ax.text(x, y, fmt.t(f"gamma.orientation.{key}"), transform=ax.transAxes,
                    ha=ha, va=va, fontsize=8, fontweight="bold", color="white",
                    bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
    bar = fig.colorbar(image, ax=ax, label=fmt.t("gamma.map_colorbar"))
    bar.ax.axhline(1.0, color="black", linewidth=2.0)
    return figure_data_uri(fig)


def _search_setting(settings: dict[str, Any], fmt: Any) -> list[tuple[str, str]]:
    """The search that produced the values, over every case of the run (a run whose workers
    differ, some with a GPU, lists each); none for runs stored before it was recorded."""
    used = dict.fromkeys((text(s.get("backend")), text(s.get("device")))
                         for s in settings.values() if s and s.get("backend"))
    return [("search", "; ".join(fmt.t(f"gamma.search.{backend}", device=device)
                                 for backend, device in used))] if used else []
