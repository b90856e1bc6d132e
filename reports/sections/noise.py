"""Report section of the ``noise`` check: NPS curves and TTF curves per reconstruction.

Curves are the stored per-case details (radial NPS, TTF resampled at 64 points); cases are
grouped by their ``reconstruction`` attribute when the case table has one. Averaging curves
across series for display is the only arithmetic done here; every reported metric stays the
stored one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from reports.plots import figure_data_uri, new_figure, text

TEMPLATE = "sections/noise.html.j2"
_STYLES = ("-", "--", ":", "-.")


def build(store: Any, run_id: int, check_id: str, measurements: pd.DataFrame,
          fmt: Any) -> dict[str, Any]:
    """Display data of one ``noise`` check of the run, read from the store."""
    details = store.details(run_id, check_id=check_id)
    cases = store.cases(run_id)
    recon_of: dict[str, str] = {}
    if "reconstruction" in cases.columns:
        recon_of = {text(c): text(r) for c, r in zip(cases["case_id"], cases["reconstruction"],
                                                     strict=True)}
    mine = measurements[measurements["check_id"].map(text) == check_id]
    dose = {text(row.case_id): float(row.value) for row in mine.itertuples(index=False)
            if text(row.metric) == "ctdivol_mgy" and not text(row.label)}
    curves: dict[str, dict[str, Any]] = {}
    for row in details.itertuples(index=False):
        curves.setdefault(text(row.case_id), {})[text(row.name)] = row.payload
    return section_data(curves, recon_of, dose, fmt)


def section_data(curves: dict[str, dict[str, Any]], recon_of: dict[str, str],
                 dose: dict[str, float], fmt: Any) -> dict[str, Any]:
    """Section dict from per-case details (case -> name -> payload), reconstructions, doses."""
    groups: dict[str, list[str]] = {}
    for case_id, payload in curves.items():
        if payload.get("nps"):
            groups.setdefault(recon_of.get(case_id) or "—", []).append(case_id)
    if not groups:
        return {"empty": True}
    top_dose = max(dose.values()) if dose else None
    return {
        "empty": False,
        "top_dose": fmt.quantity(top_dose, "", "mGy") if top_dose else "n/a",
        "nps_plot": _nps_plot(curves, groups, dose, top_dose, fmt),
        "ttf_plot": _ttf_plot(curves, groups, fmt),
        "groups": [{"reconstruction": g, "n": len(c)} for g, c in sorted(groups.items())],
    }


def _mean_curve(payloads: list[dict[str, Any]], x_key: str, y_key: str
                ) -> tuple[np.ndarray, np.ndarray] | None:
    pairs = [(np.asarray(p[x_key], float), np.asarray([np.nan if v is None else v
                                                       for v in p[y_key]], float))
             for p in payloads if p is not None and len(p.get(x_key, ())) > 1]
    if not pairs:
        return None
    x = pairs[0][0]
    ys = np.stack([np.interp(x, px, py) for px, py in pairs])
    finite = np.isfinite(ys)
    counts = finite.sum(axis=0)
    sums = np.where(finite, ys, 0.0).sum(axis=0)
    return x, np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _nps_plot(curves, groups, dose, top_dose, fmt) -> str | None:
    fig = new_figure(7.0, 3.0)
    left, right = fig.subplots(1, 2)
    for index, (recon, case_ids) in enumerate(sorted(groups.items())):
        colour = f"C{index}"
        at_top = [curves[c]["nps"] for c in case_ids
                  if top_dose is not None and dose.get(c) == top_dose]
        mean = _mean_curve(at_top, "frequency_per_mm", "nps_hu2_mm2")
        if mean is not None:
            left.plot(*mean, color=colour, label=recon)
        normalised = []
        for c in case_ids:
            p = curves[c]["nps"]
            f = np.asarray(p["frequency_per_mm"], float)
            v = np.asarray([np.nan if x is None else x for x in p["nps_hu2_mm2"]], float)
            total = np.nansum(v) * (f[1] - f[0]) if f.size > 1 else np.nan
            if total and np.isfinite(total):
                normalised.append({"frequency_per_mm": f, "nnps": v / total})
        mean = _mean_curve(normalised, "frequency_per_mm", "nnps")
        if mean is not None:
            right.plot(*mean, color=colour, label=recon)
    left.set_title(fmt.t("noise.nps_at_dose", dose=fmt.quantity(top_dose, "", "mGy")),
                   fontsize=9)
    right.set_title(fmt.t("noise.nps_shape"), fontsize=9)
    for ax, ylabel in ((left, fmt.t("noise.axis_nps")), (right, fmt.t("noise.axis_nnps"))):
        ax.set_xlabel(fmt.t("noise.axis_frequency"))
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(True, lw=0.3, alpha=0.5)
    return figure_data_uri(fig)


def _ttf_plot(curves, groups, fmt) -> str | None:
    inserts = sorted({name for payload in curves.values()
                      for name in (payload.get("ttf") or {})})
    if not inserts:
        return None
    fig = new_figure(5.5, 3.2)
    ax = fig.add_subplot()
    for index, (recon, case_ids) in enumerate(sorted(groups.items())):
        for k, insert in enumerate(inserts):
            payloads = [(curves[c].get("ttf") or {}).get(insert) for c in case_ids]
            mean = _mean_curve([p for p in payloads if p], "frequency_per_mm", "ttf")
            if mean is not None:
                ax.plot(*mean, color=f"C{index}", ls=_STYLES[k % len(_STYLES)],
                        label=f"{recon} — {insert}")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_xlabel(fmt.t("noise.axis_frequency"))
    ax.set_ylabel("TTF")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, lw=0.3, alpha=0.5)
    return figure_data_uri(fig)
