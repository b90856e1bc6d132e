"""Report section of the ``segmentation`` check: per-structure distributions, worst cases
first, and a CT slice with both contours for the worst case of each structure.

Everything comes from stored rows: the measurements (Dice, HD95, surface Dice, APL ...) and
the check's ``overlays`` details (a windowed CT patch and contour polylines, stored only
when the protocol binds the check's ``image`` slot). Sorting and medians for display are the
only arithmetic done here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from reports.plots import detail_payloads, figure_data_uri, new_figure, text

TEMPLATE = "sections/segmentation.html.j2"
#: Metrics shown per structure: (metric, unit, higher is better).
SHOWN = (("dice", "1", True), ("hd95_mm", "mm", False), ("surface_dice", "1", True),
         ("apl_mm", "mm", False))
WORST_ROWS = 5


def build(store: Any, run_id: int, check_id: str, measurements: pd.DataFrame,
          fmt: Any) -> dict[str, Any]:
    """Display data of one ``segmentation`` check of the run, read from the store."""
    mine = measurements[measurements["check_id"].map(text) == check_id]
    stored = detail_payloads(store.details(run_id, check_id=check_id, name="overlays"))
    overlays = {case: payload or {} for case, payload in stored.get("overlays", {}).items()}
    return section_data(mine, overlays, fmt)


def section_data(mine: pd.DataFrame, overlays: dict[str, dict[str, Any]],
                 fmt: Any) -> dict[str, Any]:
    """Section dict from this check's measurement rows and per-case overlay payloads."""
    table = {(text(r.case_id), text(r.metric), text(r.label)): float(r.value)
             for r in mine.itertuples(index=False)}
    structures = list(dict.fromkeys(label for (_c, m, label) in table if m == "dice"))
    if not structures:
        return {"empty": True}
    cases = list(dict.fromkeys(c for (c, _m, _l) in table))
    rows = []
    for name in structures:
        # cases with a Dice row: scored, or not compared (NaN); a case without one has no
        # reference structure (not applicable: a prostate for a female patient)
        mine = [c for c in cases if (c, "dice", name) in table]
        values = {m: [table.get((c, m, name), math.nan) for c in mine] for m, _u, _h in SHOWN}
        order = sorted(range(len(mine)), key=lambda i: _badness(values["dice"][i]))
        # the slice shown: the worst case that has one (a case not compared has none)
        with_overlay = [mine[i] for i in order if (overlays.get(mine[i]) or {}).get(name)]
        worst_case = with_overlay[0] if with_overlay else mine[order[0]]
        missing = sum(table.get((c, "missing_evaluated", name), 0.0) == 1.0 for c in mine)
        # a structure the check could not compare (input error) has NaN rows, flags included;
        # a compared one has its empty_reference flag 0 or 1
        not_compared = sum(math.isnan(table.get((c, "empty_reference", name), math.nan))
                           for c in mine)
        rows.append({
            "name": name,
            "n": int(np.isfinite(values["dice"]).sum()),
            "missing": int(missing),
            "not_compared": int(not_compared),
            "medians": [fmt.number(_median(values[m]), m, u) for m, u, _h in SHOWN],
            "worst": [{"case_id": mine[i],
                       "values": [fmt.number(values[m][i], m, u) for m, u, _h in SHOWN]}
                      for i in order[:WORST_ROWS]],
            "worst_case": worst_case,
            "overlay": _overlay_uri((overlays.get(worst_case) or {}).get(name), fmt),
        })
    return {"empty": False, "structures": rows,
            "metrics": [m for m, _u, _h in SHOWN],
            "units": [fmt.unit(u) for _m, u, _h in SHOWN],
            "distribution": _distribution_plot(table, structures, cases, fmt)}


def _badness(dice: float) -> float:
    """Sort key: undefined Dice first (never hidden), then lowest Dice."""
    return -1.0 if not math.isfinite(dice) else dice


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


def _distribution_plot(table, structures, cases, fmt) -> str:
    fig = new_figure(7.5, 2.4)
    axes = fig.subplots(1, len(SHOWN))
    for ax, (metric, unit, _higher) in zip(axes, SHOWN, strict=True):
        for k, name in enumerate(structures):
            vals = np.array([table.get((c, metric, name), math.nan) for c in cases])
            vals = vals[np.isfinite(vals)]
            jitter = (np.arange(vals.size) % 7 - 3) * 0.05
            ax.plot(np.full(vals.size, k) + jitter, vals, "o", ms=3, alpha=0.7)
            if vals.size:
                ax.plot([k - 0.3, k + 0.3], [np.median(vals)] * 2, "k-", lw=1)
        ax.set_xticks(range(len(structures)), structures, rotation=45, ha="right",
                      fontsize=7)
        symbol = fmt.unit(unit)
        ax.set_title(fmt.t(f"segmentation.metric.{metric}") + (f" ({symbol})" if symbol
                                                                 else ""), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(True, axis="y", linewidth=0.3)
    return figure_data_uri(fig)


def _overlay_uri(payload: dict[str, Any] | None, fmt: Any) -> str | None:
    if not payload or not payload.get("grey"):
        return None
    grey = np.asarray(payload["grey"], float)
    dy, dx = payload.get("pixel_mm", [1.0, 1.0])
    fig = new_figure(2.6, 2.6)
    ax = fig.subplots()
    ax.imshow(grey, cmap="gray", vmin=0, vmax=255, aspect=dy / dx, interpolation="nearest")
    for key, colour, style in (("reference", "tab:green", "-"), ("predicted", "tab:red", "--")):
        for i, line in enumerate(payload.get(key) or []):
            pts = np.asarray(line, float)
            if pts.ndim == 2 and len(pts) > 1:
                ax.plot(pts[:, 1], pts[:, 0], style, color=colour, lw=1.2,
                        label=fmt.t(f"segmentation.{key}") if i == 0 else None)
    ax.set_axis_off()
    ax.legend(loc="lower right", fontsize=6, framealpha=0.7)
    ax.set_title(fmt.t("segmentation.slice", index=payload.get("slice_index", "?")),
                 fontsize=7)
    return figure_data_uri(fig)
