"""Result records of :mod:`qa.trend` (frozen, JSON-serialisable) and their constants.

Public names are re-exported by :mod:`qa.trend`; see its docstring for the formulas.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["PROVISIONAL_BELOW", "D2", "IMR_LIMIT_FACTOR", "MR_UCL_FACTOR", "Baseline",
           "ChartPoint", "ChartAlarm", "ChartResult", "IMRResult", "RULE_TEXT", "make_alarm"]

PROVISIONAL_BELOW = 8
"""Limits from fewer baseline points than this are flagged ``provisional``."""
D2 = 1.128
"""``d2`` for moving ranges of two observations (Montgomery appendix VI)."""
IMR_LIMIT_FACTOR = 2.66
"""``3 / d2`` rounded as printed in textbooks; the charts use ``3 / D2`` unrounded."""
MR_UCL_FACTOR = 3.267
"""``D4`` for n = 2: the moving-range upper limit is ``3.267 MR̄``."""


@dataclass(frozen=True)
class Baseline:
    """Centre and spread every chart is drawn against (unit of the charted value).

    Attributes
    ----------
    centre : float
        ``mu0``, the in-control mean.
    sigma : float
        In-control standard deviation (> 0).
    mr_bar : float
        Mean moving range ``MR̄`` (``d2 · sigma`` when ``sigma`` was given).
    n_points : int
        Baseline points the estimate came from (0 when given).
    provisional : bool
        True when estimated from fewer than :data:`PROVISIONAL_BELOW` points.
    """

    centre: float
    sigma: float
    mr_bar: float
    n_points: int
    provisional: bool

    @classmethod
    def known(cls, centre: float, sigma: float, *, provisional: bool = False) -> Baseline:
        """A baseline from known (or otherwise established) ``centre`` and ``sigma``."""
        _check_sigma(sigma, "sigma")
        return cls(float(centre), float(sigma), D2 * float(sigma), 0, provisional)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return asdict(self)


@dataclass(frozen=True)
class ChartPoint:
    """One period on one chart.

    ``statistic`` is what is plotted: the value (individuals), the moving range, ``z_i``
    (EWMA) or ``C⁺_i`` (CUSUM, whose ``statistic_lower`` is ``C⁻_i >= 0`` and whose limit
    ``upper_limit = hσ`` applies to both sums; its ``lower_limit`` is None). ``rules`` names
    what fired at this point: ``"limit"``, or ``"rule1"`` ... ``"rule4"`` (Western Electric,
    individuals chart).
    """

    index: int
    label: str
    value: float
    statistic: float
    centre: float
    lower_limit: float | None
    upper_limit: float | None
    in_baseline: bool
    alarm: bool
    rules: tuple[str, ...] = ()
    statistic_lower: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None, ``rules`` as a list)."""
        return {k: (list(v) if isinstance(v, tuple) else _finite_or_none(v))
                for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ChartAlarm:
    """One alarm: where, which chart and rule, which direction, and a sentence for the report.

    ``shift_start_index`` / ``estimated_mean`` are set by the CUSUM only (None otherwise).
    """

    index: int
    label: str
    chart: str
    rule: str
    direction: str
    statistic: float
    limit: float | None
    message: str
    shift_start_index: int | None = None
    estimated_mean: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ChartResult:
    """One chart over a series: parameters, baseline, points and alarms.

    ``chart`` is ``"individuals"``, ``"moving_range"``, ``"ewma"`` or ``"cusum"``;
    ``parameters`` holds its settings (``lambda``, ``L``, ``k_sigma``, ``h_sigma``, ...).
    """

    chart: str
    baseline: Baseline
    parameters: dict[str, Any]
    points: tuple[ChartPoint, ...]
    alarms: tuple[ChartAlarm, ...]

    @property
    def provisional(self) -> bool:
        """True when the limits come from fewer than 8 baseline points."""
        return self.baseline.provisional

    def alarm_indices(self) -> list[int]:
        """Indices of the points that alarmed (sorted, each once)."""
        return sorted({a.index for a in self.alarms})

    def first_alarm(self, *, after_baseline: bool = True) -> ChartAlarm | None:
        """The earliest alarm, by default the first one after the baseline period."""
        for alarm in self.alarms:
            if not (after_baseline and self.points[alarm.index].in_baseline):
                return alarm
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the whole chart."""
        return {"chart": self.chart, "provisional": self.provisional,
                "baseline": {k: _finite_or_none(v) for k, v in self.baseline.to_dict().items()},
                "parameters": dict(self.parameters),
                "points": [p.to_dict() for p in self.points],
                "alarms": [a.to_dict() for a in self.alarms]}


@dataclass(frozen=True)
class IMRResult:
    """The two charts of an I-MR chart."""

    individuals: ChartResult
    moving_range: ChartResult

    @property
    def alarms(self) -> tuple[ChartAlarm, ...]:
        """Alarms of both charts, by index then chart."""
        return tuple(sorted(self.individuals.alarms + self.moving_range.alarms,
                            key=lambda a: (a.index, a.chart)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of both charts."""
        return {"individuals": self.individuals.to_dict(),
                "moving_range": self.moving_range.to_dict()}


RULE_TEXT = {
    1: "point beyond a 3-sigma control limit (Western Electric rule 1)",
    2: "2 of 3 consecutive points beyond 2 sigma on one side (Western Electric rule 2)",
    3: "4 of 5 consecutive points beyond 1 sigma on one side (Western Electric rule 3)",
    4: "8 consecutive points on one side of the centre line (Western Electric rule 4)",
}


def make_alarm(i: int, label: str, chart: str, rule: str, side: str, statistic: float,
           limit: float | None, text: str, *, shift_start: int | None = None,
           mean: float | None = None, shift_label: str | None = None) -> ChartAlarm:
    """An alarm with its report sentence (``shift_*``/``mean`` for the CUSUM only)."""
    where = f"at {label}" if label != str(i) else f"at point {i}"
    bound = "" if limit is None else f" vs limit {limit:.4g}"
    message = f"{chart} chart {where}: {text} ({statistic:.4g}{bound})"
    if shift_start is not None and mean is not None:
        message += (f"; the shift started at {shift_label or f'point {shift_start}'}, "
                    f"new mean about {mean:.4g}")
    return ChartAlarm(i, label, chart, rule, side, float(statistic),
                      None if limit is None else float(limit), message, shift_start,
                      None if mean is None else float(mean))


def _check_sigma(sigma: float, name: str) -> None:
    if not (float(sigma) > 0.0) or not math.isfinite(float(sigma)):
        raise ValueError(f"{name} must be a finite number > 0, got {sigma!r}.")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
