"""Report section of the ``ct_number`` check: inserts against nominal, water, uniformity.

Rows summarise the stored per-case details over the run's series (mean, minimum and maximum
of the stored per-series insert means); no metric is recomputed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from reports.plots import text

TEMPLATE = "sections/ct_number.html.j2"


def build(store: Any, run_id: int, check_id: str, measurements: pd.DataFrame,
          fmt: Any) -> dict[str, Any]:
    """Display data of one ``ct_number`` check of the run, read from the store."""
    details = store.details(run_id, check_id=check_id)
    inserts = [row.payload for row in details.itertuples(index=False)
               if text(row.name) == "inserts"]
    water = [row.payload for row in details.itertuples(index=False)
             if text(row.name) == "water_hu"]
    return section_data(inserts, water, fmt)


def section_data(inserts_per_case: list[list[dict[str, Any]]], water_per_case: list[Any],
                 fmt: Any) -> dict[str, Any]:
    """Section dict from each case's stored ``inserts`` list and ``water_hu`` value."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for case_inserts in inserts_per_case:
        for item in case_inserts or []:
            by_name.setdefault(text(item["name"]), []).append(item)
    rows = []
    for name, items in by_name.items():
        measured = np.asarray([np.nan if i["measured_hu"] is None else i["measured_hu"]
                               for i in items], float)
        residual = [i.get("density_residual_g_cm3") for i in items]
        residual = np.asarray([np.nan if r is None else r for r in residual], float)
        first = items[0]
        rows.append({
            "name": name, "n": len(items),
            "nominal": fmt.number(first["nominal_hu"], "", "HU"),
            "tolerance": fmt.number(first["tolerance_hu"], "", "HU"),
            "mean": fmt.number(np.nanmean(measured), "", "HU"),
            "range": f"{fmt.number(np.nanmin(measured), '', 'HU')} – "
                     f"{fmt.number(np.nanmax(measured), '', 'HU')}",
            "error": fmt.number(np.nanmean(measured) - first["nominal_hu"], "", "HU"),
            "worst_error": fmt.number(_worst(measured - first["nominal_hu"]), "", "HU"),
            "within": int(np.sum(np.abs(measured - first["nominal_hu"])
                                 <= first["tolerance_hu"])),
            "density": fmt.number(first.get("density_g_cm3"), "", "g/cm3"),
            "density_residual": fmt.number(np.nanmean(residual), "", "g/cm3")
            if np.isfinite(residual).any() else "n/a",
        })
    water = np.asarray([np.nan if w is None else w for w in water_per_case], float)
    return {"empty": not rows and not water.size, "rows": rows,
            "water_mean": fmt.quantity(np.nanmean(water), "", "HU") if water.size else "n/a",
            "water_range": (f"{fmt.number(np.nanmin(water), '', 'HU')} – "
                            f"{fmt.quantity(np.nanmax(water), '', 'HU')}")
            if water.size else "n/a",
            "n_series": len(water)}


def _worst(errors: np.ndarray) -> float:
    finite = errors[np.isfinite(errors)]
    return float(finite[np.argmax(np.abs(finite))]) if finite.size else float("nan")
