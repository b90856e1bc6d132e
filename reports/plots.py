"""Figures of the reports and the data they show, drawn from numbers read from the store.

Nothing here computes a metric from images: the functions sum stored histogram counts and
draw or average stored per-case values. Plot functions draw onto an ``Axes`` you give;
figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global state)
and embedded in HTML as base64 PNG ``data:`` URIs.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from reports.html import Formatter

__all__ = [
    "SummedHistogram",
    "sum_histograms",
    "plot_error_histogram",
    "plot_tissue_mae",
    "new_figure",
    "figure_data_uri",
    "hu_section",
    "missing",
    "text",
    "finite_or_none",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SummedHistogram:
    """Error histogram (sCT − CT, HU) summed over cases that share the same bin edges.

    Attributes
    ----------
    edges_hu : tuple of float
        Bin edges in HU, length ``len(counts_voxels) + 1``.
    counts_voxels : tuple of int
        Voxels per bin, summed over ``case_ids``.
    underflow_voxels, overflow_voxels : int
        Voxels below the first edge / above the last edge, summed.
    case_ids : tuple of str
        Cases whose histograms were summed.
    excluded_case_ids : tuple of str
        Cases whose histograms had other bin edges (or an unreadable payload) and were left
        out, because counts over different bins cannot be added.
    """

    edges_hu: tuple[float, ...]
    counts_voxels: tuple[int, ...]
    underflow_voxels: int
    overflow_voxels: int
    case_ids: tuple[str, ...]
    excluded_case_ids: tuple[str, ...]


def sum_histograms(payloads: Mapping[str, Mapping[str, Any]]) -> SummedHistogram | None:
    """Add the per-case ``error_histogram`` details of the HU check.

    Parameters
    ----------
    payloads : mapping of str to mapping
        Case id → stored payload ``{"edges_hu": [...], "counts": [...], "underflow": int,
        "overflow": int}``.

    Returns
    -------
    SummedHistogram or None
        The sum over the largest group of cases sharing identical edges (ties: the group seen
        first); ``None`` when no payload is usable.

    Notes
    -----
    The HU check uses fixed edges so that histograms of all cases can be added bin by bin.
    A payload whose counts do not match its edges is excluded and logged, never guessed.
    """
    groups: dict[tuple[float, ...], list[str]] = {}
    parsed: dict[str, tuple[list[int], int, int]] = {}
    for case_id, payload in payloads.items():
        try:
            edges = tuple(float(e) for e in payload["edges_hu"])
            counts = [int(c) for c in payload["counts"]]
            extra = (int(payload.get("underflow") or 0), int(payload.get("overflow") or 0))
            usable = len(edges) >= 2 and len(counts) == len(edges) - 1
        except (KeyError, TypeError, ValueError, AttributeError):
            usable = False
        if not usable:
            logger.warning("case %r: error_histogram payload is malformed; left out", case_id)
            continue
        parsed[case_id] = (counts, *extra)
        groups.setdefault(edges, []).append(case_id)
    if not groups:
        return None
    edges = max(groups, key=lambda key: len(groups[key]))
    chosen = groups[edges]
    counts_sum = [0] * (len(edges) - 1)
    under = over = 0
    for case_id in chosen:
        counts, case_under, case_over = parsed[case_id]
        counts_sum = [a + b for a, b in zip(counts_sum, counts, strict=True)]
        under += case_under
        over += case_over
    excluded = [c for c in payloads if c not in set(chosen)]
    if excluded:
        logger.warning("error histograms left out of the sum (other bin edges or malformed): "
                       "%s", excluded)
    return SummedHistogram(
        edges_hu=edges,
        counts_voxels=tuple(counts_sum),
        underflow_voxels=under,
        overflow_voxels=over,
        case_ids=tuple(chosen),
        excluded_case_ids=tuple(excluded),
    )


def plot_error_histogram(ax: Axes, histogram: SummedHistogram, *, xlabel: str,
                         ylabel: str) -> None:
    """Draw a summed error histogram as steps (voxels per bin against sCT − CT in HU).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    histogram : SummedHistogram
        From :func:`sum_histograms`.
    xlabel, ylabel : str
        Axis labels (translated by the caller).
    """
    ax.stairs(histogram.counts_voxels, histogram.edges_hu, fill=True, color="#4c72b0",
              alpha=0.8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlim(histogram.edges_hu[0], histogram.edges_hu[-1])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(_plain(xlabel))
    ax.set_ylabel(_plain(ylabel))
    ax.grid(True, axis="y", linewidth=0.3)


def plot_tissue_mae(ax: Axes, mae_by_tissue_hu: Mapping[str, Sequence[float]], *, xlabel: str,
                    ylabel: str) -> None:
    """Strip plot with box of per-case MAE (HU) for each tissue class.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    mae_by_tissue_hu : mapping of str to sequence of float
        Tissue class → per-case MAE in HU as stored; non-finite values are not drawn.
    xlabel, ylabel : str
        Axis labels (translated by the caller).

    Notes
    -----
    Points are spread horizontally by a fixed, deterministic offset pattern (no random
    jitter) so the same store always gives the same picture.
    """
    names = list(mae_by_tissue_hu)
    for index, name in enumerate(names):
        values = [float(v) for v in mae_by_tissue_hu[name] if math.isfinite(float(v))]
        if not values:
            continue
        if len(values) >= 3:
            ax.boxplot([values], positions=[index], widths=0.5, showfliers=False,
                       medianprops={"color": "black"})
        offsets = [((k % 5) - 2) * 0.06 for k in range(len(values))]
        ax.plot([index + o for o in offsets], values, "o", color="#dd8452", markersize=4,
                alpha=0.9)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([_plain(n) for n in names], rotation=20, ha="right")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xlabel(_plain(xlabel))
    ax.set_ylabel(_plain(ylabel))
    ax.grid(True, axis="y", linewidth=0.3)


def new_figure(width_in: float = 6.0, height_in: float = 3.0) -> Figure:
    """A small figure outside pyplot (sizes in inches), laid out to fit its labels."""
    return Figure(figsize=(width_in, height_in), layout="constrained")


def figure_data_uri(fig: Figure, *, dpi: int = 100) -> str:
    """Render a figure to PNG and return it as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def detail_payloads(details: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Stored detail rows (``store.details(...)``) as ``{name: {case_id: payload}}``."""
    payloads: dict[str, dict[str, Any]] = {}
    for row in details.itertuples(index=False):
        payloads.setdefault(text(row.name), {})[text(row.case_id)] = row.payload
    return payloads


def hu_section(details: pd.DataFrame, measurements: pd.DataFrame, check_id: str,
               fmt: Formatter) -> dict[str, Any]:
    """Display data and figures of one ``hu_accuracy`` check, from stored rows only.

    Parameters
    ----------
    details : pandas.DataFrame
        The check's detail rows (``case_id``, ``name``, ``payload``) as read from the store.
    measurements : pandas.DataFrame
        The run's measurements (``case_id``, ``check_id``, ``metric``, ``label``, ``value``).
    check_id : str
        Which check of the run.
    fmt : reports.html.Formatter
        Labels and number formatting.

    Returns
    -------
    dict
        ``histogram`` (data URI and counts, or None), ``thresholds`` (one table per distinct
        stored set, with the cases that used it), ``ranges`` (clip and data range),
        ``warnings`` (case, text), ``tissue_rows`` (per tissue class: mean over cases of the
        stored per-case MAE and ME in HU, number of cases with a finite MAE, voxels summed
        over cases) and ``tissue_plot`` (data URI or None).
    """
    payloads = detail_payloads(details)
    section: dict[str, Any] = {"check_id": check_id, "histogram": None}
    summed = sum_histograms(payloads.get("error_histogram", {}))
    if summed is not None:
        fig = new_figure(6.5, 2.8)
        plot_error_histogram(fig.add_subplot(), summed, xlabel=fmt.t("hu.error_axis"),
                                   ylabel=fmt.t("hu.voxels_axis"))
        section["histogram"] = {
            "uri": figure_data_uri(fig),
            "n_cases": len(summed.case_ids),
            "excluded": ", ".join(summed.excluded_case_ids),
            "underflow": fmt.number(summed.underflow_voxels, "n_voxels", ""),
            "overflow": fmt.number(summed.overflow_voxels, "n_voxels", ""),
            "first_edge": fmt.quantity(summed.edges_hu[0], "", "HU"),
            "last_edge": fmt.quantity(summed.edges_hu[-1], "", "HU"),
        }
    thresholds = _variants(payloads.get("tissue_thresholds_hu", {}))
    section["thresholds"] = [
        {"case_ids": ", ".join(ids), "rows": [
            (text(name), fmt.number(_pair(limits)[0], "", "HU"),
             fmt.number(_pair(limits)[1], "", "HU"))
            for name, limits in (value or {}).items()]}
        for value, ids in thresholds
    ]
    section["ranges"] = [
        (fmt.t(f"hu.{name}"), _hu_text(value, fmt) if name.endswith("_hu")
         else fmt.number(value, "n_voxels", ""), ", ".join(ids) if len(variants) > 1 else "")
        for name in ("clip_range_hu", "data_range_hu", "ssim_crop_voxels")
        for variants in [_variants(payloads.get(name, {}))]
        for value, ids in variants
    ]
    section["warnings"] = [
        (case_id, text(w)) for case_id, value in payloads.get("warnings", {}).items()
        for w in (value if isinstance(value, list) else [value] if value else [])
    ]
    tissue = measurements[(measurements["check_id"].map(text) == check_id)
                          & (measurements["label"].map(text) != "")]
    order = list(dict.fromkeys([n for value, _ in thresholds for n in (value or {})]
                               + list(tissue["label"].map(text))))
    mae: dict[str, list[float]] = {}
    rows = []
    for label in order:
        part = tissue[tissue["label"].map(text) == label]
        values = {m: pd.to_numeric(part.loc[part["metric"] == m, "value"], errors="coerce")
                  for m in ("mae_hu", "me_hu", "n_voxels")}
        if part.empty:
            continue
        mae[label] = [float(v) for v in values["mae_hu"]]
        finite = values["mae_hu"].dropna()
        rows.append({
            "label": label,
            "mean_mae": fmt.number(finite.mean() if len(finite) else None, "mae_hu", "HU"),
            "mean_me": fmt.number(values["me_hu"].mean(), "me_hu", "HU"),
            "n_cases": str(len(finite)),
            "n_voxels": fmt.number(values["n_voxels"].sum(min_count=1), "n_voxels", ""),
        })
    section["tissue_rows"] = rows
    section["tissue_plot"] = None
    if any(v == v for values in mae.values() for v in values):
        fig = new_figure(6.5, 2.8)
        plot_tissue_mae(fig.add_subplot(), mae, xlabel=fmt.t("hu.tissue_axis"),
                              ylabel=fmt.t("hu.mae_axis"))
        section["tissue_plot"] = figure_data_uri(fig)
    return section


def _variants(by_case: Mapping[str, Any]) -> list[tuple[Any, list[str]]]:
    """Distinct payloads with the cases that stored each, in order of first appearance."""
    seen: dict[str, tuple[Any, list[str]]] = {}
    for case_id, value in by_case.items():
        key = json.dumps(value, sort_keys=True, default=str)
        seen.setdefault(key, (value, []))[1].append(case_id)
    return list(seen.values())


def _pair(limits: Any) -> tuple[Any, Any]:
    if isinstance(limits, (list, tuple)) and len(limits) == 2:
        return limits[0], limits[1]
    return None, None


def _hu_text(value: Any, fmt: Formatter) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_hu_text(v, fmt)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt.number(v, "", "HU") for v in value) + f"] {fmt.unit('HU')}"
    if finite_or_none(value) is not None:
        return fmt.quantity(value, "", "HU")
    return fmt.t("hu.none") if missing(value) else str(value)


def missing(value: Any) -> bool:
    """True for None, NaN, NaT and pandas NA."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def text(value: Any) -> str:
    """A stored value as display text; missing values are ``""``."""
    return "" if missing(value) else str(value)


def finite_or_none(value: Any) -> float | None:
    """A finite float, or None for missing, non-numeric or non-finite values."""
    if missing(value) or isinstance(value, (bool, str)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plain(text: str) -> str:
    """Escape ``$`` so matplotlib never parses user text (tissue names) as mathtext."""
    return str(text).replace("$", r"\$")
