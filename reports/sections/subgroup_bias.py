"""Report section of the ``subgroup_bias`` cohort check: forest plot, tests, findings.

Everything comes from the check's stored cohort details and the run's cohort verdicts; no
statistic is recomputed here. Sentences are built from the structured findings with the
section catalogs ``reports/locales/<language>/subgroup_bias.yaml``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from reports.plots import figure_data_uri, finite_or_none, missing, new_figure, text

TEMPLATE = "sections/subgroup_bias.html.j2"

_CORRECTION = {"holm": "Holm", "bh": "Benjamini-Hochberg"}


def build(store: Any, run_id: int, check_id: str, measurements: pd.DataFrame,
          fmt: Any) -> dict[str, Any]:
    """Display data of one ``subgroup_bias`` check of the run, read from the store."""
    details = store.details(run_id, check_id=check_id)
    payload = {text(row.name): row.payload for row in details.itertuples(index=False)
               if missing(row.case_id)}
    verdicts = store.verdicts(run_id)
    verdicts = verdicts[(verdicts["check_id"].map(text) == check_id)
                        & verdicts["case_id"].isna()]
    return section_data(payload, verdicts, fmt)


def section_data(payload: dict[str, Any], verdicts: pd.DataFrame, fmt: Any) -> dict[str, Any]:
    """The section dict from the stored details (``payload``: name -> JSON value) and this
    check's cohort verdicts (columns metric, label, tolerance_max ... as in the store)."""
    if not payload.get("analyses") and not payload.get("trends"):
        return {"empty": True, "analyses": [], "tests": [], "findings": [], "notes": []}
    metric = text(payload.get("metric"))
    unit = text(payload.get("unit"))
    value_metric = metric.rsplit(".", 1)[-1].split("[", 1)[0]
    correction = _CORRECTION.get(text(payload.get("correction")), text(payload.get("correction")))
    analyses = []
    for analysis in payload.get("analyses", []):
        limits = _limits(verdicts, "gap_worst_to_overall", analysis["factor"])
        analyses.append({
            "factor": analysis["factor"],
            "plot": _forest_uri(analysis, limits, unit, fmt),
            "overall": fmt.quantity(analysis["overall"]["mean"], value_metric, unit),
            "overall_ci": _ci(analysis["overall"], "ci_low", "ci_high", value_metric, unit,
                              fmt),
            "rows": [_group_row(g, value_metric, unit, fmt) for g in analysis["groups"]],
            "warnings": [text(w) for w in analysis.get("warnings", [])],
        })
    tests = [_test_row(t, fmt) for a in payload.get("analyses", []) + payload.get("trends", [])
             for t in a["tests"]]
    findings = [_sentence(f, metric, unit, value_metric, correction, payload, fmt)
                for f in payload.get("findings", [])]
    excluded = payload.get("excluded_cases") or []
    return {
        "empty": False, "metric": metric, "unit": fmt.unit(unit), "correction": correction,
        "alpha": fmt.number(payload.get("alpha"), "", "1"),
        "min_group_size": payload.get("min_group_size"),
        "failure_mode": text(payload.get("failure_mode")),
        "failure_level": text(payload.get("failure_level")),
        "analyses": analyses, "tests": tests, "findings": findings,
        "notes": [text(n) for n in payload.get("notes", [])],
        "excluded": ", ".join(map(text, excluded)),
        "method": _method(payload, fmt),
    }


# -- helpers ---------------------------------------------------------------------------------

def _limits(verdicts: pd.DataFrame, metric: str, label: str) -> dict[str, float | None]:
    rows = verdicts[(verdicts["metric"].map(text) == metric)
                    & (verdicts["label"].map(text) == label)]
    if rows.empty:
        return {}
    row = rows.iloc[-1]
    return {k: finite_or_none(row.get(k)) for k in ("tolerance_max", "action_max")}


def _forest_uri(analysis: dict[str, Any], limits: dict[str, float | None], unit: str,
                fmt: Any) -> str | None:
    groups = analysis["groups"]
    if not groups:
        return None
    fig = new_figure(6.5, 0.45 * len(groups) + 1.2)
    plot_forest(fig.add_subplot(), groups, analysis["overall"]["mean"], analysis["better"],
                limits, xlabel=f"{analysis['value']} ({fmt.unit(unit) or '1'})"
                if unit else "", labels={k: fmt.t(f"bias.plot_{k}") for k in
                                         ("overall", "tolerance", "action", "insufficient")})
    return figure_data_uri(fig)


def plot_forest(ax: Axes, groups: list[dict[str, Any]], overall: float, better: str,
                limits: dict[str, float | None], *, xlabel: str,
                labels: dict[str, str]) -> None:
    """Group means with their CIs (insufficient groups hollow), the overall value and the
    tolerance / action limits of the worst-to-overall gap drawn on the worse side."""
    y = np.arange(len(groups))[::-1]
    for yi, group in zip(y, groups, strict=True):
        mean = finite_or_none(group["mean"])
        low, high = finite_or_none(group["ci_low"]), finite_or_none(group["ci_high"])
        if mean is None:
            continue
        filled = bool(group["sufficient"])
        if low is not None and high is not None:
            ax.plot([low, high], [yi, yi], color="black" if filled else "grey", linewidth=1.2)
        ax.plot([mean], [yi], marker="o", linestyle="none", markersize=6,
                markerfacecolor="black" if filled else "white",
                markeredgecolor="black" if filled else "grey")
    ax.axvline(overall, color="tab:blue", linewidth=1.0, label=labels["overall"])
    sign = -1.0 if better == "higher" else 1.0
    for key, colour in (("tolerance_max", "tab:orange"), ("action_max", "tab:red")):
        if limits.get(key) is not None:
            edge = overall + sign * limits[key]
            ax.axvline(edge, color=colour, linestyle="--", linewidth=1.0,
                       label=labels[key.split("_")[0]])
            if better != "zero" and key == "tolerance_max":
                ax.axvspan(min(overall, edge), max(overall, edge), color="tab:blue",
                           alpha=0.08)
    ax.set_yticks(y, [_plain(f"{g['group']} (n = {g['n']})") for g in groups])
    ax.set_xlabel(_plain(xlabel))
    ax.grid(True, axis="x", linewidth=0.3)
    if any(not g["sufficient"] for g in groups):
        ax.plot([], [], marker="o", linestyle="none", markerfacecolor="white",
                markeredgecolor="grey", label=labels["insufficient"])
    ax.legend(loc="best", fontsize="small", frameon=False)


def _plain(label: str) -> str:
    """Escape ``$`` so matplotlib never reads a group label as mathtext."""
    return str(label).replace("$", r"\$")


def _ci(row: dict[str, Any], low: str, high: str, metric: str, unit: str, fmt: Any) -> str:
    return fmt.bounds(row.get(low), row.get(high), metric, unit)


def _group_row(group: dict[str, Any], metric: str, unit: str, fmt: Any) -> dict[str, Any]:
    rate = group.get("failure_rate")
    return {
        "group": text(group["group"]), "n": group["n"], "sufficient": group["sufficient"],
        "mean": fmt.number(group["mean"], metric, unit),
        "ci": _ci(group, "ci_low", "ci_high", metric, unit, fmt),
        "median": fmt.number(group["median"], metric, unit),
        "diff": fmt.number(group["diff_to_overall"], metric, unit),
        "diff_ci": _ci(group, "diff_ci_low", "diff_ci_high", metric, unit, fmt),
        "ratio": fmt.number(group["ratio_to_overall"], "", "1"),
        "ratio_ci": _ci(group, "ratio_ci_low", "ratio_ci_high", "", "1", fmt),
        "failures": "n/a" if rate is None else
        f"{group['failures']}/{group['n']} ({fmt.number(100 * rate, '', '%')} %)",
        "failure_ci": "n/a" if rate is None else fmt.bounds(
            100 * group["failure_ci_low"], 100 * group["failure_ci_high"], "", "%"),
    }


def _test_row(test: dict[str, Any], fmt: Any) -> dict[str, str]:
    return {
        "factor": text(test["factor"]), "outcome": fmt.t(f"bias.outcome_{test['outcome']}"),
        "test": fmt.t(f"bias.test_{test['test']}"), "comparison": text(test["comparison"]),
        "statistic": f"{test['statistic_name']} = {_p(test['statistic'], fmt)}",
        "p_value": _p(test["p_value"], fmt), "p_adjusted": _p(test["p_adjusted"], fmt),
        "effect": "" if not test.get("effect_size_name") else
        f"{fmt.t('bias.effect_' + test['effect_size_name'])} = "
        f"{fmt.number(test['effect_size'], '', '1')}",
        "n": str(test["n"]),
    }


def _p(value: Any, fmt: Any) -> str:
    number = finite_or_none(value)
    if number is None:
        return "n/a"
    if number != 0 and abs(number) < 0.001:
        return fmt.t("bias.p_below", limit=fmt.number(0.001, "", "1"))
    return fmt.number(number, "", "1")


def _p_phrase(value: Any, fmt: Any) -> str:
    """``= 0.040`` or ``< 0.001`` (to follow "p")."""
    shown = _p(value, fmt)
    return shown if shown.startswith("<") else f"= {shown}"


def _sentence(finding: dict[str, Any], metric: str, unit: str, value_metric: str,
              correction: str, payload: dict[str, Any], fmt: Any) -> str:
    if finding["kind"] == "trend":
        status = fmt.t("bias.status_significant" if finding["significant"]
                       else "bias.status_not_significant", correction=correction,
                       p=_p_phrase(finding["p_adjusted"], fmt))
        return fmt.t("bias.finding_trend", metric=metric, factor=finding["factor"],
                     rho=fmt.number(finding["rho"], "", "1"),
                     ci=fmt.bounds(finding["ci_low"], finding["ci_high"], "", "1"),
                     n=finding["n"], n_missing=finding["n_missing"], status=status)
    diff = finite_or_none(finding["diff"]) or 0.0
    test = fmt.t(f"bias.test_{finding['test']}") if finding["test"] else ""
    status = fmt.t(f"bias.status_{finding['status']}", correction=correction,
                   p=_p_phrase(finding["p_adjusted"], fmt), test=test,
                   min=payload.get("min_group_size"))
    return fmt.t("bias.finding_group", metric=metric,
                 diff=fmt.quantity(abs(diff), value_metric, unit),
                 direction=fmt.t("bias.higher" if diff >= 0 else "bias.lower"),
                 ci=fmt.bounds(finding["ci_low"], finding["ci_high"], value_metric, unit),
                 factor=finding["factor"], group=finding["group"], n=finding["n"],
                 status=status)


def _method(payload: dict[str, Any], fmt: Any) -> str:
    settings = next((a["settings"] for a in payload.get("analyses", [])), {})
    return fmt.t("bias.method", n_bootstrap=settings.get("n_bootstrap", "n/a"),
                 seed=settings.get("seed", "n/a"),
                 level=fmt.number(100 * settings.get("confidence_level", math.nan), "", "%"),
                 min=payload.get("min_group_size"),
                 correction=_CORRECTION.get(text(payload.get("correction")), ""))
