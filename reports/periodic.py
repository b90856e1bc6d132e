"""The "Periodic QA" section of the run report, read from what a periodic run stored.

Shows the model-fingerprint verdict (``baseline / model_fingerprint``), the baseline the run
was compared with and the per-case differences (cohort detail ``baseline / comparison``),
the control charts of the ``trend:`` aggregates (cohort details of check id ``trend``, drawn
with :func:`reports.trend_plots.plot_control_chart`) and the input-drift findings (verdicts
``drift / input_drift``). Nothing is recomputed: only stored numbers are sorted and drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from reports.plots import figure_data_uri, finite_or_none, missing, new_figure, text
from reports.trend_plots import plot_control_chart

__all__ = ["periodic_section", "MAX_COMPARISON_ROWS"]

#: Most rows of the baseline comparison table (largest ``|difference|`` first).
MAX_COMPARISON_ROWS = 50
_CHART_ORDER = ("individuals", "moving_range", "ewma", "cusum")


def periodic_section(store: Any, run_id: int, fmt: Any) -> dict[str, Any] | None:
    """Display data of the Periodic QA section, or None when the run is not periodic or
    stored nothing periodic (no baseline, trend or drift rows).

    Returns a dict with ``fingerprint`` (level + message, or None), ``constancy`` (idem),
    ``baseline`` (baseline id, run id, set at / by, reason; or None), ``comparison`` (rows
    of case, check, metric, label, baseline, current, difference as display strings, at most
    :data:`MAX_COMPARISON_ROWS`), ``n_comparison`` (rows stored), ``charts`` (aggregate name,
    PNG data URI, alarm count) and ``pending`` (aggregates not charted yet, with a text), and
    ``drift`` (feature, level, message).
    """
    run = store.run(run_id)
    if text(run.get("protocol_kind")) != "periodic":
        return None
    verdicts = store.verdicts(run_id)
    fingerprint = _verdict(verdicts, "baseline", "model_fingerprint", fmt)
    constancy = _verdict(verdicts, "baseline", "constancy_cases_missing", fmt)
    comparison = _payload(store.details(run_id, check_id="baseline", name="comparison"))
    trend = store.details(run_id, check_id="trend")
    drift = _drift(verdicts, fmt)
    if fingerprint is None and comparison is None and not len(trend) and not drift:
        return None
    units = _units(store.measurements(run_id))
    charts, pending = _charts(trend, units, fmt)
    rows = list((comparison or {}).get("rows") or [])
    return {
        "fingerprint": fingerprint,
        "constancy": constancy,
        "baseline": _baseline(comparison, fmt),
        "comparison": _comparison_rows(rows, fmt),
        "n_comparison": len(rows),
        "max_comparison": MAX_COMPARISON_ROWS,
        "missing_cases": ", ".join(text(c) for c in (comparison or {}).get("missing_cases")
                                   or []),
        "charts": charts,
        "pending": pending,
        "drift": drift,
    }


def _verdict(verdicts: pd.DataFrame, check_id: str, metric: str,
             fmt: Any) -> dict[str, Any] | None:
    if not len(verdicts):
        return None
    rows = verdicts[(verdicts["check_id"].map(text) == check_id)
                    & (verdicts["metric"].map(text) == metric)
                    & verdicts["case_id"].map(missing)]
    if not len(rows):
        return None
    row = rows.iloc[-1]
    return {"level": fmt.level(text(row["level"])), "message": text(row["message"])}


def _drift(verdicts: pd.DataFrame, fmt: Any) -> list[dict[str, Any]]:
    if not len(verdicts):
        return []
    rows = verdicts[(verdicts["check_id"].map(text) == "drift")
                    & (verdicts["metric"].map(text) == "input_drift")]
    return [{"feature": text(r.label), "level": fmt.level(text(r.level)),
             "message": text(r.message)} for r in rows.itertuples(index=False)]


def _payload(details: pd.DataFrame) -> dict[str, Any] | None:
    if not len(details):
        return None
    payload = details["payload"].iloc[-1]
    return payload if isinstance(payload, Mapping) else None


def _baseline(comparison: Mapping[str, Any] | None, fmt: Any) -> dict[str, str] | None:
    if comparison is None or not isinstance(comparison.get("baseline"), Mapping):
        return None
    base = comparison["baseline"]
    return {
        "baseline_id": text(base.get("baseline_id")),
        "run_id": text(base.get("run_id")),
        "set_at": fmt.time(_time(base.get("set_at"))),
        "operator": text(base.get("operator")),
        "reason": text(base.get("reason")),
        "protocol": text(comparison.get("compared_with_protocol")),
    }


def _time(value: Any) -> Any:
    """A stored time (JSON text in the detail payload) as a datetime when it parses."""
    if isinstance(value, str):
        try:
            return pd.Timestamp(value).to_pydatetime()
        except ValueError:
            return value
    return value


def _comparison_rows(rows: list[Any], fmt: Any) -> list[dict[str, str]]:
    def size(row: Mapping[str, Any]) -> float:
        value = finite_or_none(row.get("difference"))
        if value is not None:
            return abs(value)
        measured = (finite_or_none(row.get(k)) is not None for k in ("baseline", "current"))
        return float("inf") if any(measured) else -1.0  # lost in one run: first; in both: last

    ordered = sorted((r for r in rows if isinstance(r, Mapping)), key=size, reverse=True)
    out = []
    for row in ordered[:MAX_COMPARISON_ROWS]:
        metric, unit = text(row.get("metric")), text(row.get("unit"))
        out.append({
            "case_id": text(row.get("case_id")),
            "check": text(row.get("check_id")),
            "metric": fmt.t(f"metric.{metric}", default=metric),
            "label": text(row.get("label")),
            "baseline": fmt.quantity(row.get("baseline"), metric, unit),
            "current": fmt.quantity(row.get("current"), metric, unit),
            "difference": fmt.quantity(row.get("difference"), metric, unit),
        })
    return out


def _units(measurements: pd.DataFrame) -> dict[tuple[str, str], str]:
    units: dict[tuple[str, str], str] = {}
    for row in measurements[["check_id", "metric", "unit"]].itertuples(index=False):
        units.setdefault((text(row.check_id), text(row.metric)), text(row.unit))
    return units


def _charts(trend: pd.DataFrame, units: Mapping[tuple[str, str], str],
            fmt: Any) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    charts, pending = [], []
    for name, payload in zip(trend["name"].map(text), trend["payload"], strict=True):
        payload = payload if isinstance(payload, Mapping) else {}
        status = text(payload.get("status"))
        if status != "charted":
            runs = payload.get("runs") or []
            if status == "collecting":
                note = fmt.t("periodic.collecting", n=len(runs),
                             needed=text(payload.get("needed")))
            else:
                note = status
            pending.append({"name": name, "note": note})
            continue
        parts = _chart_parts(payload.get("charts") or {})
        if not parts:
            pending.append({"name": name, "note": status})
            continue
        check_id, _, rest = name.partition(".")
        metric = rest.split(" ")[0].split("[")[0]
        unit = fmt.unit(units.get((check_id, metric), ""))
        ylabel = f"{rest} ({unit})" if unit else rest  # the full name is in the caption
        fig = new_figure(6.5, 2.2 * len(parts))
        axes = fig.subplots(len(parts), 1, squeeze=False)[:, 0]
        for ax, part in zip(axes, parts, strict=True):
            plot_control_chart(ax, part, ylabel=ylabel,
                               provisional_note=fmt.t("periodic.provisional"),
                               title=fmt.t(f"periodic.chart_{part['chart']}",
                                           part["chart"].replace("_", " ")))
        n_alarms = sum(1 for part in parts if part["points"][-1].get("alarm"))  # at this run
        charts.append({"name": name, "uri": figure_data_uri(fig),
                       "n_runs": len(payload.get("runs") or []), "n_alarms": n_alarms})
    return charts, pending


def _chart_parts(charts: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The stored charts as a flat list (an I-MR is stored as individuals + moving range)."""
    parts = []
    for value in charts.values():
        if not isinstance(value, Mapping):
            continue
        if "points" in value:
            parts.append(value)
        else:
            parts.extend(v for v in value.values() if isinstance(v, Mapping) and "points" in v)
    order = {name: i for i, name in enumerate(_CHART_ORDER)}
    return sorted((p for p in parts if p.get("points")),
                  key=lambda p: order.get(text(p.get("chart")), len(order)))
