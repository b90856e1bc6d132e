"""Control-chart figure for the periodic report, drawn from a stored chart record.

The input is the JSON form of a :class:`qa.trend.ChartResult` (``ChartResult.to_dict()``, as
stored with the periodic run): nothing is recomputed here. Draws onto an ``Axes`` you give
(see :func:`reports.plots.new_figure` and :func:`reports.plots.figure_data_uri`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.axes import Axes

__all__ = ["plot_control_chart"]

_BASELINE_SHADE = "#e8eef7"


def plot_control_chart(ax: Axes, chart: Mapping[str, Any], *, ylabel: str,
                       provisional_note: str = "provisional limits",
                       title: str | None = None) -> None:
    """Plot one control chart: statistic per period, centre, limits, alarms marked.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    chart : mapping
        ``ChartResult.to_dict()``: ``chart``, ``provisional`` and ``points`` with ``label``,
        ``statistic``, ``centre``, ``lower_limit``, ``upper_limit``, ``in_baseline``,
        ``alarm`` (and ``statistic_lower`` for the CUSUM, drawn below zero as ``−C⁻``).
    ylabel : str
        Axis label with the unit (the caller translates it).
    provisional_note : str
        Title suffix shown when the limits are provisional (translated by the caller).

    Notes
    -----
    The baseline periods are shaded; alarms are red circles; a limit that is None (the CUSUM
    has no lower limit: ``−h`` is drawn for ``C⁻``) is not drawn. Missing statistics (the
    first moving range) leave a gap.
    """
    points = list(chart["points"])
    x = list(range(len(points)))
    y = [_num(p["statistic"]) for p in points]
    ax.plot(x, y, marker="o", markersize=3, linewidth=1.0, color="#1f4e79")
    if chart["chart"] == "cusum":
        lower = [None if p.get("statistic_lower") is None else -p["statistic_lower"]
                 for p in points]
        ax.plot(x, [_num(v) for v in lower], marker="o", markersize=3, linewidth=1.0,
                color="#7f6000")
        ax.plot(x, [-_num(p["upper_limit"]) for p in points], linestyle="--", color="#c00000",
                linewidth=0.8)
    ax.plot(x, [_num(p["centre"]) for p in points], color="#555555", linewidth=0.8)
    for key in ("upper_limit", "lower_limit"):
        ax.plot(x, [_num(p.get(key)) for p in points], linestyle="--", color="#c00000",
                linewidth=0.8)
    n_base = sum(1 for p in points if p["in_baseline"])
    if n_base:
        ax.axvspan(-0.5, n_base - 0.5, color=_BASELINE_SHADE, zorder=0)
    alarms = [(i, y[i]) for i, p in enumerate(points) if p["alarm"]]
    if chart["chart"] == "cusum":
        alarms = [(i, y[i] if points[i]["statistic"] > (points[i]["upper_limit"] or 0)
                   else -points[i]["statistic_lower"]) for i, _ in alarms]
    if alarms:
        ax.scatter([a[0] for a in alarms], [a[1] for a in alarms], s=60, facecolors="none",
                   edgecolors="#c00000", linewidths=1.5, zorder=3)
    ax.set_xticks(x)
    ax.set_xticklabels([str(p["label"]) for p in points], rotation=45, ha="right",
                       fontsize=7)
    ax.set_ylabel(ylabel)
    title = title or chart["chart"].replace("_", " ")
    ax.set_title(f"{title} ({provisional_note})" if chart.get("provisional") else title,
                 fontsize=9)


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)
