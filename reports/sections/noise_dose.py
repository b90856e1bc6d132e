"""Report section of the ``noise_dose`` cohort check: log-log noise-dose and d′-dose plots
with the stored fits, the dose-reduction table (iso-d′ with its interval, iso-noise beside it)
and the texture-shift warnings.

Everything comes from the check's stored cohort details; the fit lines are drawn from the
stored coefficients (a·CTDIvol^k), no metric is recomputed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from reports.plots import figure_data_uri, missing, new_figure, text

TEMPLATE = "sections/noise_dose.html.j2"


def build(store: Any, run_id: int, check_id: str, measurements: pd.DataFrame,
          fmt: Any) -> dict[str, Any]:
    """Display data of one ``noise_dose`` check of the run, read from the store."""
    details = store.details(run_id, check_id=check_id)
    payload = {text(row.name): row.payload for row in details.itertuples(index=False)
               if missing(row.case_id)}
    return section_data(payload, fmt)


def section_data(payload: dict[str, Any], fmt: Any) -> dict[str, Any]:
    """The section dict from the stored cohort details (name -> JSON value)."""
    fits = payload.get("fits") or {}
    points = payload.get("points") or {}
    if not fits:
        return {"empty": True}
    ref = text(payload.get("reference_reconstruction"))
    fit_rows = []
    for recon, fit in fits.items():
        noise, dprime = fit["noise"], fit["dprime"]
        fit_rows.append({
            "reconstruction": recon,
            "noise_b": fmt.number(_neg(noise["exponent"]), "", "1"),
            "noise_b_ci": _ci([_neg(noise["exponent_ci"][1]), _neg(noise["exponent_ci"][0])],
                              fmt, "1"),
            "noise_a": fmt.quantity(noise["a"], "noise_a_hu", "HU"),
            "noise_r2": fmt.number(noise["r_squared"], "", "1"),
            "dprime_b": fmt.number(dprime["exponent"], "", "1"),
            "dprime_b_ci": _ci(dprime["exponent_ci"], fmt, "1"),
            "dprime_r2": fmt.number(dprime["r_squared"], "", "1"),
            "n_levels": noise["n_levels"], "n_points": noise["n_points"],
        })
    reductions, warnings = [], []
    for recon, red in (payload.get("dose_reductions") or {}).items():
        if "iso_dprime" not in red:
            warnings.append(fmt.t("noise_dose.not_computed", reconstruction=recon, which=", ".join(
                f"{text(what)} ({text(name)})" for what, name in red.get("not_computed", []))))
            continue
        iso_d, iso_n = red["iso_dprime"], red["iso_noise"]
        if red.get("texture_shift"):
            warnings.append(fmt.t(
                "noise_dose.warning_sentence", reconstruction=recon,
                iso_noise=fmt.quantity(iso_n["reduction_percent"], "", "%"),
                iso_dprime=fmt.quantity(iso_d["reduction_percent"], "", "%"),
                ci=_ci(iso_d["ci_percent"], fmt, "%")))
        reductions.append({
            "reconstruction": recon,
            "iso_dprime": fmt.quantity(iso_d["reduction_percent"], "", "%"),
            "iso_dprime_ci": _ci(iso_d["ci_percent"], fmt, "%"),
            "iso_dprime_dose": fmt.quantity(iso_d["evaluated_dose_mgy"], "", "mGy"),
            "iso_noise": fmt.quantity(iso_n["reduction_percent"], "", "%"),
            "iso_noise_ci": _ci(iso_n["ci_percent"], fmt, "%"),
            "iso_noise_dose": fmt.quantity(iso_n["evaluated_dose_mgy"], "", "mGy"),
        })
    return {
        "empty": False, "reference": ref,
        "reference_dose": fmt.quantity(payload.get("reference_dose_mgy"), "", "mGy"),
        "task": text(payload.get("task")), "observer": text(payload.get("observer")).upper(),
        "confidence": f"{100 * float(payload.get('confidence') or 0.95):g}",
        "n_bootstrap": payload.get("n_bootstrap"), "seed": payload.get("seed"),
        "noise_plot": _plot(points, fits, "noise_hu", "noise", fmt.t("noise_dose.axis_noise"),
                            fmt),
        "dprime_plot": _plot(points, fits, "d_prime", "dprime",
                             fmt.t("noise_dose.axis_dprime"), fmt),
        "fits": fit_rows, "reductions": reductions,
        "warnings": warnings,
    }


def _neg(value: Any) -> float | None:
    return None if value is None else -float(value)


def _ci(pair: Any, fmt: Any, unit: str) -> str:
    if not pair or pair[0] is None or pair[1] is None:
        return "n/a"
    return f"{fmt.number(pair[0], '', unit)} – {fmt.quantity(pair[1], '', unit)}"


def _plot(points: dict[str, Any], fits: dict[str, Any], column: str, fit_key: str,
          ylabel: str, fmt: Any) -> str | None:
    """Log-log scatter of the per-case values with the stored power-law fit per recon."""
    fig = new_figure(5.5, 3.2)
    ax = fig.add_subplot()
    drawn = False
    for index, (recon, data) in enumerate(points.items()):
        dose = np.asarray([np.nan if v is None else v for v in data.get("ctdivol_mgy", [])],
                          float)
        value = np.asarray([np.nan if v is None else v for v in data.get(column, [])], float)
        ok = np.isfinite(dose) & np.isfinite(value) & (dose > 0) & (value > 0)
        if not ok.any():
            continue
        colour = f"C{index}"
        ax.scatter(dose[ok], value[ok], s=14, color=colour, label=recon)
        fit = fits.get(recon, {}).get(fit_key)
        if fit and fit.get("a") is not None:
            grid = np.geomspace(dose[ok].min(), dose[ok].max(), 50)
            ax.plot(grid, fit["a"] * grid ** fit["exponent"], color=colour, lw=1)
        drawn = True
    if not drawn:
        return None
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(fmt.t("noise_dose.axis_ctdivol"))
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    return figure_data_uri(fig)
