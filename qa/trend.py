"""Control charts for periodic QA: I-MR, EWMA and two-sided tabular CUSUM, with limits from a
baseline period and optional Western Electric run rules.

Every chart takes one value per period (e.g. the monthly cohort mean bone ME of a synthetic-CT
model, one run per month; :func:`cohort_series` picks such a series out of stored cohort
verdicts) and returns a frozen :class:`ChartResult`: one :class:`ChartPoint` per period (value,
plotted statistic, centre, limits, alarm and the rules that fired) and one :class:`ChartAlarm`
per alarm, all serialisable with ``to_dict()``.

Baseline
--------
The centre ``mu0`` and the process standard deviation ``sigma`` come from a *baseline
period*: the first ``baseline`` points of the series (an int), or a :class:`Baseline` given
explicitly (e.g. from the commissioning runs, or known parameters). From ``n`` baseline points,
``mu0`` is their mean and ``sigma = MR̄ / d2`` with ``MR̄`` the mean of their ``n - 1`` moving
ranges and ``d2 = 1.128`` (the bias constant for ranges of 2 observations; Montgomery,
*Introduction to Statistical Quality Control*, 6th ed., Wiley 2009, section 6.4 and appendix
VI). The moving-range estimate is used rather than the sample standard deviation because a
slow drift inside the baseline inflates the latter much more. Limits from fewer than
:data:`PROVISIONAL_BELOW` (8) baseline points are flagged ``provisional`` (8-12 points are
recommended before limits are trusted); a :class:`Baseline` given with ``provisional=False``
is trusted as given.

Charts
------
* :func:`imr_chart` — individuals ``x̄ ± 3 MR̄ / 1.128`` (the textbook ``x̄ ± 2.66·MR̄``; computed
  unrounded as ``mu0 ± 3 sigma``), moving range
  ``MR_i = |x_i − x_{i−1}|`` with centre ``MR̄`` and upper limit ``3.267·MR̄`` (``D4`` for n = 2),
  lower limit 0; Western Electric rules 1-4 on the individuals as an option.
* :func:`ewma_chart` — ``z_i = λ x_i + (1 − λ) z_{i−1}``, ``z_0 = mu0``, time-varying limits
  ``mu0 ± L sigma sqrt(λ / (2 − λ) [1 − (1 − λ)^{2i}])`` (i = 1 for the first point);
  defaults λ = 0.2, L = 3 (Montgomery section 9.2; Lucas & Saccucci, Technometrics 1990,
  doi 10.1080/00401706.1990.10484583).
* :func:`cusum_chart` — ``C⁺_i = max(0, x_i − mu0 − kσ + C⁺_{i−1})``, ``C⁻`` mirrored,
  ``C_0 = 0``; alarm when either sum exceeds ``hσ``; defaults k = 0.5, h = 5 (h = 4 reacts
  sooner with more false alarms: in-control ARL 168 instead of 465; Montgomery table 9.3).
  Reset convention: by default the sums keep accumulating after an alarm, as in Montgomery's
  table 9.2 (so an uncorrected shift alarms at every later period); ``reset_after_alarm=True``
  restarts a sum from 0 after it alarmed (each alarm is then a fresh detection). Each alarm
  dates the shift (``N⁺`` consecutive periods with ``C⁺ > 0``: the shift started at index
  ``i − N⁺ + 1``) and estimates the new mean ``mu0 + kσ + C⁺_i / N⁺`` (``mu0 − kσ − C⁻_i / N⁻``).

Comparisons with limits are strict: a point exactly on a limit does not alarm. Values must
be finite: a period without a value (a failed run) is left out by the caller, with its label.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from qa import _charts
from qa._trend_records import (
    D2,
    IMR_LIMIT_FACTOR,
    MR_UCL_FACTOR,
    PROVISIONAL_BELOW,
    RULE_TEXT,
    Baseline,
    ChartAlarm,
    ChartPoint,
    ChartResult,
    IMRResult,
    make_alarm,
)
from qa.verdicts import Level, Verdict

__all__ = [
    "PROVISIONAL_BELOW", "D2", "IMR_LIMIT_FACTOR", "MR_UCL_FACTOR", "Baseline", "ChartPoint",
    "ChartAlarm", "ChartResult", "IMRResult", "estimate_baseline", "imr_chart", "ewma_chart",
    "cusum_chart", "cohort_series", "alarm_verdicts",
]

logger = logging.getLogger(__name__)


def estimate_baseline(values: Sequence[float] | pd.Series | np.ndarray) -> Baseline:
    """Estimate ``mu0`` (mean) and ``sigma = MR̄ / 1.128`` from baseline values.

    Parameters
    ----------
    values : sequence of float, length >= 2
        The baseline period, in time order (the moving ranges depend on the order).

    Returns
    -------
    Baseline
        ``provisional`` when fewer than 8 values.

    Raises
    ------
    ValueError
        Fewer than 2 values, a non-finite value, or all moving ranges 0 (no spread to set
        limits from: give ``Baseline.known(centre, sigma)`` instead).

    Examples
    --------
    >>> b = estimate_baseline([10.0, 12.0, 11.0, 13.0])
    >>> round(b.centre, 3), round(b.mr_bar, 3), round(b.sigma, 4), b.provisional
    (11.5, 1.667, 1.4775, True)
    """
    x = _as_array(values, "baseline values")
    if x.size < 2:
        raise ValueError(f"the baseline needs at least 2 values to estimate sigma from moving "
                         f"ranges, got {x.size}; extend the baseline period or give "
                         "Baseline.known(centre, sigma).")
    mr_bar = float(np.mean(np.abs(np.diff(x))))
    if mr_bar == 0.0:
        raise ValueError(f"the {x.size} baseline values are all equal ({x[0]:g}): no spread to "
                         "set control limits from; give Baseline.known(centre, sigma).")
    return Baseline(float(np.mean(x)), mr_bar / D2, mr_bar, int(x.size),
                    x.size < PROVISIONAL_BELOW)


def imr_chart(values: Sequence[float] | pd.Series | np.ndarray, *,
              baseline: int | Baseline | None = None, run_rules: bool = False,
              labels: Sequence[Any] | None = None) -> IMRResult:
    """Individuals and moving-range (I-MR) chart.

    Parameters
    ----------
    values : sequence of float or pandas.Series
        One finite value per period, in time order (a Series' index gives the labels).
    baseline : int or Baseline, optional
        The first ``baseline`` points set the limits, or a given :class:`Baseline`; default
        all points (a retrospective, phase-I chart).
    run_rules : bool
        Also apply Western Electric rules 2-4 to the individuals (rule 1, a point beyond
        the 3-sigma limits, always applies). Rules (Western Electric *Statistical Quality
        Control Handbook*, 1956; Montgomery section 5.3.6), all on one side of the centre:
        (1) one point beyond 3σ; (2) two of three consecutive points beyond 2σ; (3) four of
        five consecutive points beyond 1σ; (4) eight consecutive points above (or below) the
        centre. A point is flagged when it completes the pattern and is itself beyond the
        rule's zone (rules 2-3) or on that side (rule 4); windows may span the baseline.
        The four together raise a false alarm about once in 92 in-control points, against
        once in 370 for rule 1 alone.
    labels : sequence, optional
        Period labels (e.g. ``"2026-08"`` or run ids); default the Series index or 0..n-1.

    Returns
    -------
    IMRResult
        ``individuals`` (limits ``mu0 ± 3σ``, i.e. ``x̄ ± 2.66 MR̄`` with ``3 / 1.128`` unrounded) and
        ``moving_range`` (centre ``MR̄``, limits 0 and ``3.267 MR̄``; point 0 has no moving
        range: NaN, never an alarm).

    Examples
    --------
    >>> r = imr_chart([10.0, 12.0, 11.0, 13.0, 30.0], baseline=4)
    >>> round(r.individuals.points[0].upper_limit, 3), r.individuals.alarm_indices()
    (15.933, [4])
    """
    x, names = _series(values, labels)
    base, n_base = _baseline(x, baseline)
    half = 3.0 * base.sigma
    lo, hi = base.centre - half, base.centre + half
    wanted = (1, 2, 3, 4) if run_rules else (1,)
    flags = _charts.western_electric(x, base.centre, base.sigma, wanted)
    points, alarms = [], []
    for i, value in enumerate(x):
        rules = tuple(f"rule{rule}" for rule, _ in flags[i])
        for rule, side in flags[i]:
            alarms.append(make_alarm(i, names[i], "individuals", f"rule{rule}", side, value,
                                 hi if side == "up" else lo, RULE_TEXT[rule]))
        points.append(ChartPoint(i, names[i], float(value), float(value), base.centre, lo, hi,
                                 i < n_base, bool(rules), rules))
    individuals = ChartResult("individuals", base, {"run_rules": run_rules,
                                                    "limit_sigma": 3.0},
                              tuple(points), tuple(alarms))
    mr = _charts.moving_ranges(x)
    mr_hi = MR_UCL_FACTOR * base.mr_bar
    mr_points, mr_alarms = [], []
    for i, value in enumerate(x):
        alarm = bool(mr[i] > mr_hi)
        if alarm:
            mr_alarms.append(make_alarm(i, names[i], "moving_range", "limit", "up", mr[i], mr_hi,
                                    "moving range above its upper control limit"))
        mr_points.append(ChartPoint(i, names[i], float(value), float(mr[i]), base.mr_bar, 0.0,
                                    mr_hi, i < n_base, alarm, ("limit",) if alarm else ()))
    moving = ChartResult("moving_range", base, {"ucl_factor": MR_UCL_FACTOR},
                         tuple(mr_points), tuple(mr_alarms))
    _log(individuals)
    _log(moving)
    return IMRResult(individuals, moving)


def ewma_chart(values: Sequence[float] | pd.Series | np.ndarray, *,
               baseline: int | Baseline | None = None, lam: float = 0.2, L: float = 3.0,
               labels: Sequence[Any] | None = None) -> ChartResult:
    """Exponentially weighted moving average chart (formulas in the module notes).

    Parameters
    ----------
    values, baseline, labels
        As for :func:`imr_chart`.
    lam : float
        Smoothing weight λ in (0, 1]; 0.05-0.2 detects small shifts (λ = 1 is the
        individuals chart).
    L : float
        Limit width in multiples of the EWMA's standard deviation (> 0), typically 2.6-3.

    Returns
    -------
    ChartResult
        ``chart="ewma"``; ``statistic`` is ``z_i``, limits vary with ``i`` toward the
        asymptote ``mu0 ± L σ sqrt(λ / (2 − λ))``.

    Examples
    --------
    Montgomery example 9.2 (λ = 0.1, L = 2.7, μ0 = 10, σ = 1) starts at
    ``z_1 = 9.945`` with limits 9.73 / 10.27:

    >>> r = ewma_chart([9.45, 7.99], baseline=Baseline.known(10, 1), lam=0.1, L=2.7)
    >>> p = r.points[0]
    >>> round(p.statistic, 4), round(p.lower_limit, 2), round(p.upper_limit, 2)
    (9.945, 9.73, 10.27)
    """
    if not (0.0 < lam <= 1.0) or not math.isfinite(lam):
        raise ValueError(f"lam (EWMA weight λ) must be in (0, 1], got {lam!r}.")
    if not (L > 0.0) or not math.isfinite(L):
        raise ValueError(f"L (EWMA limit width in sigmas) must be a finite number > 0, "
                         f"got {L!r}.")
    x, names = _series(values, labels)
    base, n_base = _baseline(x, baseline)
    z = _charts.ewma_statistic(x, base.centre, lam)
    half = _charts.ewma_half_width(x.size, base.sigma, lam, L)
    points, alarms = [], []
    for i, value in enumerate(x):
        lo, hi = base.centre - half[i], base.centre + half[i]
        side = "up" if z[i] > hi else "down" if z[i] < lo else None
        if side:
            alarms.append(make_alarm(i, names[i], "ewma", "limit", side, z[i],
                                 hi if side == "up" else lo,
                                 f"EWMA {'above its upper' if side == 'up' else 'below its lower'}"
                                 " control limit"))
        points.append(ChartPoint(i, names[i], float(value), float(z[i]), base.centre,
                                 float(lo), float(hi), i < n_base, side is not None,
                                 ("limit",) if side else ()))
    result = ChartResult("ewma", base, {"lambda": lam, "L": L}, tuple(points), tuple(alarms))
    _log(result)
    return result


def cusum_chart(values: Sequence[float] | pd.Series | np.ndarray, *,
                baseline: int | Baseline | None = None, k_sigma: float = 0.5,
                h_sigma: float = 5.0, reset_after_alarm: bool = False,
                labels: Sequence[Any] | None = None) -> ChartResult:
    """Two-sided tabular CUSUM (formulas and reset convention in the module notes).

    Parameters
    ----------
    values, baseline, labels
        As for :func:`imr_chart`.
    k_sigma : float
        Reference value ``k`` in sigmas (>= 0); 0.5 is tuned to a 1σ shift.
    h_sigma : float
        Decision interval ``h`` in sigmas (> 0); 4 or 5.
    reset_after_alarm : bool
        Restart a sum from 0 after it alarmed (default False: keep accumulating).

    Returns
    -------
    ChartResult
        ``chart="cusum"``; ``statistic`` is ``C⁺``, ``statistic_lower`` is ``C⁻`` (both
        ``>= 0``, in the unit of the values), ``upper_limit`` is ``hσ``, ``centre`` 0.

    Examples
    --------
    Montgomery example 9.1 (μ0 = 10, σ = 1, k = 0.5, h = 5) signals at period 29 (index 28),
    dates the shift after period 22 and estimates the new mean at 11.25; see the tests.
    """
    if not (k_sigma >= 0.0) or not math.isfinite(k_sigma):
        raise ValueError(f"k_sigma (CUSUM reference value in sigmas) must be a finite number "
                         f">= 0, got {k_sigma!r}.")
    if not (h_sigma > 0.0) or not math.isfinite(h_sigma):
        raise ValueError(f"h_sigma (CUSUM decision interval in sigmas) must be a finite number "
                         f"> 0, got {h_sigma!r}.")
    x, names = _series(values, labels)
    base, n_base = _baseline(x, baseline)
    k, h = k_sigma * base.sigma, h_sigma * base.sigma
    c_plus, c_minus, n_plus, n_minus = _charts.tabular_cusum(x, base.centre, k, h,
                                                             reset_after_alarm)
    points, alarms = [], []
    for i, value in enumerate(x):
        rules = []
        if c_plus[i] > h:
            rules.append("limit")
            alarms.append(make_alarm(i, names[i], "cusum", "limit", "up", c_plus[i], h,
                                 "upper CUSUM above its decision interval",
                                 shift_start=i - int(n_plus[i]) + 1,
                                 shift_label=names[i - int(n_plus[i]) + 1],
                                 mean=base.centre + k + c_plus[i] / n_plus[i]))
        if c_minus[i] > h:
            rules.append("limit")
            alarms.append(make_alarm(i, names[i], "cusum", "limit", "down", c_minus[i], h,
                                 "lower CUSUM above its decision interval",
                                 shift_start=i - int(n_minus[i]) + 1,
                                 shift_label=names[i - int(n_minus[i]) + 1],
                                 mean=base.centre - k - c_minus[i] / n_minus[i]))
        points.append(ChartPoint(i, names[i], float(value), float(c_plus[i]), 0.0, None, h,
                                 i < n_base, bool(rules), tuple(rules),
                                 statistic_lower=float(c_minus[i])))
    result = ChartResult("cusum", base, {"k_sigma": k_sigma, "h_sigma": h_sigma,
                                         "reset_after_alarm": reset_after_alarm},
                         tuple(points), tuple(alarms))
    _log(result)
    return result


def cohort_series(verdicts: pd.DataFrame, *, check_id: str, metric: str, label: str = "",
                  statistic: str = "mean") -> pd.Series:
    """One cohort aggregate per run, from stored cohort verdicts of several runs.

    Parameters
    ----------
    verdicts : pandas.DataFrame
        Rows of :data:`qa.store.VERDICT_COLUMNS` (``run_id``, ``case_id``, ``check_id``,
        ``metric``, ``label``, ``statistic``, ``value`` ...), e.g. the concatenated
        ``store.verdicts(run_id)`` of a protocol's runs. Cohort rows have ``case_id`` null.
    check_id, metric, label, statistic
        Which aggregate (``label=""`` for the overall metric).

    Returns
    -------
    pandas.Series
        Float values indexed by ``run_id`` (ascending), named ``"<check_id>.<metric>[label]
        <statistic>"``. Runs whose value is not finite are dropped with a warning in the log
        (the chart needs finite values; the run's own verdict already shows the failure).

    Raises
    ------
    ValueError
        A needed column is missing, or a run holds more than one row for the aggregate.
    """
    needed = ("run_id", "case_id", "check_id", "metric", "label", "statistic", "value")
    missing = [c for c in needed if c not in verdicts.columns]
    if missing:
        raise ValueError(f"verdicts frame lacks column(s) {missing}; pass store.verdicts(run) "
                         "frames (qa.store.VERDICT_COLUMNS).")
    rows = verdicts[verdicts["case_id"].isna() & (verdicts["check_id"] == check_id)
                    & (verdicts["metric"] == metric)
                    & (verdicts["label"].fillna("") == label)
                    & (verdicts["statistic"] == statistic)]
    key = f"{check_id}.{metric}{f'[{label}]' if label else ''} {statistic}"
    if rows["run_id"].duplicated().any():
        runs = sorted({int(r) for r in rows.loc[rows["run_id"].duplicated(), "run_id"]})
        raise ValueError(f"{key}: runs {runs} hold more than one cohort verdict; pass each "
                         "run's verdicts once.")
    series = pd.Series(rows["value"].astype(float).to_numpy(), index=rows["run_id"].to_numpy(),
                       name=key).sort_index()
    bad = [int(r) for r in series.index[~np.isfinite(series.to_numpy())]]
    if bad:
        logger.warning("%s: runs %s have no finite value and are left out of the chart", key,
                       bad)
    series.index.name = "run_id"
    return series[np.isfinite(series.to_numpy())]


def alarm_verdicts(chart: ChartResult | IMRResult, *, check_id: str, metric: str,
                   label: str = "", aggregate: str = "mean", index: int | None = None,
                   level: Level | str = "TOLERANCE") -> list[Verdict]:
    """Cohort verdicts for the alarms of one period (by default the last one: the new run).

    Parameters
    ----------
    chart : ChartResult or IMRResult
    check_id, metric, label, aggregate
        The charted cohort aggregate (as given to :func:`cohort_series`).
    index : int, optional
        The period whose alarms become verdicts; default the last point.
    level : Level or str
        Grade of a chart alarm; default ``TOLERANCE`` (a statistical signal to review, not
        a measured failure). The chart's control limits are written as the tolerance bounds
        (for the CUSUM: ``hσ`` as the maximum of the sum).

    Returns
    -------
    list of qa.verdicts.Verdict
        One per alarm at ``index`` (``case_id=None``, ``statistic="<aggregate>:<chart>"``,
        ``value`` the plotted statistic); empty when that period did not alarm. The message
        says when the limits are provisional.
    """
    level = Level(level)
    charts = (chart.individuals, chart.moving_range) if isinstance(chart, IMRResult) else (chart,)
    out = []
    for result in charts:
        at = len(result.points) - 1 if index is None else index
        point = result.points[at]
        for alarm in result.alarms:
            if alarm.index != at:
                continue
            low = point.lower_limit if alarm.chart != "cusum" else None
            message = alarm.message + (" [provisional limits: fewer than "
                                       f"{PROVISIONAL_BELOW} baseline points]"
                                       if result.provisional else "")
            out.append(Verdict(None, check_id, metric, label, f"{aggregate}:{alarm.chart}",
                               alarm.statistic, level, low, point.upper_limit, None, None,
                               message))
    return out


# -- helpers ---------------------------------------------------------------------------------
def _series(values: Any, labels: Sequence[Any] | None) -> tuple[np.ndarray, list[str]]:
    x = _as_array(values, "values")
    if x.size == 0:
        raise ValueError("values is empty: a chart needs at least one period.")
    if labels is None:
        labels = list(values.index) if isinstance(values, pd.Series) else range(x.size)
    names = [str(v) for v in labels]
    if len(names) != x.size:
        raise ValueError(f"labels has {len(names)} entries for {x.size} values; give one "
                         "label per value.")
    return x, names


def _as_array(values: Any, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"{what} must be finite, got {x[bad[0]]} at position {int(bad[0])}; "
                         "leave out periods without a value (and say so in the report).")
    return x


def _baseline(x: np.ndarray, baseline: int | Baseline | None) -> tuple[Baseline, int]:
    if isinstance(baseline, Baseline):
        return baseline, 0
    n = x.size if baseline is None else baseline
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= x.size:
        raise ValueError(f"baseline must be a Baseline or a number of leading points in "
                         f"[2, {x.size}] (the series length), got {baseline!r}.")
    return estimate_baseline(x[:n]), int(n)


def _log(result: ChartResult) -> None:
    logger.debug("%s chart: %d points, %d alarms%s", result.chart, len(result.points),
                 len(result.alarms), " (provisional limits)" if result.provisional else "")
