"""Grading measurements against the protocol's two levels: OK, TOLERANCE, ACTION.

Conventions (as in QATrack+ and AAPM practice): the *tolerance* level is a warning (look at
it), the *action* level stops clinical use until investigated. A level is a :class:`Bound`
with an inclusive ``min``, an inclusive ``max`` or both; the tolerance band must lie inside the
action band. A value is graded

* ``ACTION`` when it is outside the action bound, or not a finite number (a metric that could
  not be computed is not a pass);
* ``TOLERANCE`` when it is inside the action bound but outside the tolerance bound;
* ``OK`` otherwise.

Bounds are inclusive: with ``max: 90`` a value of exactly 90 passes that level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks.base import Measurement

if TYPE_CHECKING:  # pragma: no cover
    from qa.protocol import CheckSpec, CohortSpec

__all__ = [
    "Bound", "Levels", "Level", "Verdict", "grade", "grade_measurements", "grade_cohort",
    "worst_level", "COHORT_STATISTICS", "WILDCARD_LABEL",
]

COHORT_STATISTICS = ("mean", "median", "p95", "min", "max", "pass_rate")
"""Cohort statistics a protocol may grade (see :func:`grade_cohort`)."""

_Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Bound:
    """One level: inclusive ``min`` and/or ``max`` (same unit as the metric).

    ``None`` means unbounded on that side; at least one side must be given and
    ``min <= max``.
    """

    min: _Finite | None = None
    max: _Finite | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("a level needs min, max or both (e.g. {max: 90})")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"min {_fmt(self.min)} > max {_fmt(self.max)}; within a level min must be <= max"
            )
        return self

    def contains(self, value: float) -> bool:
        """True when ``min <= value <= max`` (inclusive); False for non-finite values."""
        if not math.isfinite(value):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self, unit: str = "") -> str:
        """Human text, e.g. ``"<= 90 HU"``, ``">= 95 %"``, ``"[-5, 5] HU"``."""
        if self.min is not None and self.max is not None:
            return _with_unit(f"[{_fmt(self.min)}, {_fmt(self.max)}]", unit)
        if self.max is not None:
            return "<= " + _with_unit(_fmt(self.max), unit)
        return ">= " + _with_unit(_fmt(self.min), unit)


def nesting_problem(tolerance: Bound, action: Bound) -> str | None:
    """Why ``tolerance`` does not lie inside ``action``, or None when it does.

    Rule: ``action.min <= tolerance.min`` and ``tolerance.max <= action.max``, an absent side
    counting as unbounded (so an action ``min`` needs a tolerance ``min``).
    """
    if action.min is not None and (tolerance.min is None or tolerance.min < action.min):
        got = "absent" if tolerance.min is None else _fmt(tolerance.min)
        return (f"tolerance.min ({got}) must be >= action.min ({_fmt(action.min)}): the "
                "tolerance band must lie inside the action band "
                "(action.min <= tolerance.min and tolerance.max <= action.max)")
    if action.max is not None and (tolerance.max is None or tolerance.max > action.max):
        got = "absent" if tolerance.max is None else _fmt(tolerance.max)
        return (f"tolerance.max ({got}) must be <= action.max ({_fmt(action.max)}): the "
                "tolerance band must lie inside the action band "
                "(action.min <= tolerance.min and tolerance.max <= action.max)")
    return None


def checked_action(action: Bound, info: ValidationInfo) -> Bound:
    """Body of an ``action`` field validator: ``action`` when the ``tolerance`` already
    validated lies inside it, else ValueError with :func:`nesting_problem`'s reason."""
    tolerance = info.data.get("tolerance")
    problem = nesting_problem(tolerance, action) if tolerance is not None else None
    if problem:
        raise ValueError(problem)
    return action


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Levels:
    """The two levels of one graded metric: ``tolerance`` inside ``action``."""

    tolerance: Bound
    action: Bound

    @field_validator("action")
    @classmethod
    def _nested(cls, action: Bound, info: ValidationInfo) -> Bound:
        return checked_action(action, info)


class Level(str, Enum):
    """Ordered verdict level: ``OK < TOLERANCE < ACTION``; the value is the upper-case name."""

    OK = "OK"
    TOLERANCE = "TOLERANCE"
    ACTION = "ACTION"

    @property
    def rank(self) -> int:
        """0 for OK, 1 for TOLERANCE, 2 for ACTION."""
        return _RANK[self.value]

    def __str__(self) -> str:
        return self.value

    def __lt__(self, other: object) -> bool:
        return self.rank < Level(other).rank if isinstance(other, (Level, str)) else NotImplemented

    def __le__(self, other: object) -> bool:
        return self.rank <= Level(other).rank if isinstance(other, (Level, str)) else NotImplemented

    def __gt__(self, other: object) -> bool:
        return self.rank > Level(other).rank if isinstance(other, (Level, str)) else NotImplemented

    def __ge__(self, other: object) -> bool:
        return self.rank >= Level(other).rank if isinstance(other, (Level, str)) else NotImplemented


_RANK = {"OK": 0, "TOLERANCE": 1, "ACTION": 2}


@dataclass(frozen=True)
class Verdict:
    """The grade of one per-case value or one cohort statistic.

    ``case_id`` is None for a cohort verdict; ``statistic`` is ``"value"`` for a per-case
    verdict, else one of :data:`COHORT_STATISTICS`. ``label`` is ``""`` for the overall metric.
    The four bounds repeat the protocol's levels (None = unbounded) so a stored verdict is
    self-explanatory; ``message`` is a human sentence for the report.
    """

    case_id: str | None
    check_id: str
    metric: str
    label: str
    statistic: str
    value: float
    level: Level
    tolerance_min: float | None
    tolerance_max: float | None
    action_min: float | None
    action_max: float | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (``level`` as its string value; NaN kept as float NaN)."""
        return {name: (str(getattr(self, name)) if name == "level" else getattr(self, name))
                for name in self.__dataclass_fields__}


def grade(value: float, levels: Levels) -> Level:
    """Grade one value against two levels (bounds inclusive; non-finite -> ACTION).

    Examples
    --------
    >>> levels = Levels(Bound(max=70), Bound(max=90))
    >>> [str(grade(v, levels)) for v in (70, 70.5, 90, 90.5, float("nan"))]
    ['OK', 'TOLERANCE', 'TOLERANCE', 'ACTION', 'ACTION']
    """
    value = float(value)
    if not levels.action.contains(value):
        return Level.ACTION
    if not levels.tolerance.contains(value):
        return Level.TOLERANCE
    return Level.OK


def worst_level(levels: Iterable[Level | Verdict]) -> Level:
    """The highest level among levels or verdicts; ``Level.OK`` for an empty iterable.

    An empty input means nothing was graded: callers that must distinguish "all passed" from
    "nothing graded" check for emptiness themselves.
    """
    worst = Level.OK
    for item in levels:
        level = item.level if isinstance(item, Verdict) else Level(item)
        worst = max(worst, level)
    return worst


def grade_measurements(check_spec: CheckSpec, case_id: str | None,
                       measurements: Iterable[Measurement], *,
                       not_applicable: Iterable[str] = ()) -> list[Verdict]:
    """Grade one case's measurements of one check against the check's ``tolerances``.

    Parameters
    ----------
    check_spec : qa.protocol.CheckSpec
        The check as declared in the protocol; its ``tolerances`` map ``metric``,
        ``metric[label]`` or ``metric[*]`` to :class:`Levels`.
    case_id : str
    measurements : iterable of checks.base.Measurement
        What the check returned for this case.
    not_applicable : iterable of str
        Labels the check declared not applicable to this case (e.g. a prostate in neither
        structure set of a female patient): never graded.

    Returns
    -------
    list of Verdict
        In protocol order of the keys (labels in the check's order within a key).

    Notes
    -----
    Which key grades which value (:data:`WILDCARD_LABEL` is ``*``):

    * ``metric[label]`` grades that label's value; it overrides the two defaults below.
    * ``metric[*]`` grades every labelled value of ``metric`` that has no key of its own.
    * bare ``metric`` grades the unlabelled (overall) value. When the check measured no
      unlabelled value of ``metric`` for the case but labelled ones (the per-structure
      metrics of ``segmentation``), and the protocol has no ``metric[*]``, it grades every
      labelled value that has no key of its own: "this metric, every structure".

    A key that grades nothing for the case is graded ACTION with value NaN (not measured is
    not a pass), unless the check declared a label not applicable: then no verdict for it
    (for ``metric[*]`` and a bare key, when nothing of ``metric`` was measured and some label
    was declared not applicable).
    """
    measurements = list(measurements)
    skipped = {label for label in not_applicable if label}  # never the overall value
    keyed = {split_metric_key(key) for key in check_spec.tolerances}
    verdicts = []
    for key, levels in check_spec.tolerances.items():
        metric, label = split_metric_key(key)
        if label and label in skipped:
            continue
        of_metric = [m for m in measurements if m.metric == metric]
        labelled = any(m.label for m in of_metric)
        if label == WILDCARD_LABEL:
            found = _defaulted(of_metric, metric, keyed, skipped)
        else:
            found = [m for m in of_metric if m.label == label]
            if (not found and not label and labelled
                    and (metric, WILDCARD_LABEL) not in keyed):
                found = _defaulted(of_metric, metric, keyed, skipped)
                if not found:
                    continue  # every label has a key of its own or is not applicable
        if not found:
            if label == WILDCARD_LABEL and labelled:
                continue  # every label has a key of its own or is not applicable
            if ((not label or label == WILDCARD_LABEL) and skipped
                    and all(m.label in skipped for m in of_metric)):
                continue  # nothing measured: the case's labels are not applicable
            verdicts.append(_verdict(case_id, check_spec.id, metric, label, "value", math.nan,
                                     levels, "", key, reason=f"{key} was not measured for this "
                                     "case, so it cannot pass"))
            continue
        for m in found:
            shown = f"{metric}[{m.label}]" if m.label else key
            verdicts.append(_verdict(case_id, check_spec.id, metric, m.label, "value", m.value,
                                     levels, m.unit, shown))
    return verdicts


WILDCARD_LABEL = "*"
"""Label of a tolerance key that applies to every label of its metric (``dice[*]``)."""


def _defaulted(of_metric: list[Measurement], metric: str, keyed: set[tuple[str, str]],
               skipped: set[str]) -> list[Measurement]:
    """The labelled values of one metric that no ``metric[label]`` key grades."""
    return [m for m in of_metric if m.label and m.label != WILDCARD_LABEL
            and (metric, m.label) not in keyed and m.label not in skipped]


def grade_cohort(check_spec: CheckSpec, per_case: pd.DataFrame,
                 per_case_verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Grade the cohort aggregates declared under ``cohort:`` for one check.

    Parameters
    ----------
    check_spec : qa.protocol.CheckSpec
    per_case : pandas.DataFrame
        Columns ``case_id``, ``metric``, ``label``, ``value`` (one row per case and
        metric/label); optional ``check_id`` (rows of other checks are ignored) and ``unit``.
    per_case_verdicts : sequence of Verdict
        The per-case verdicts of the run (used by ``pass_rate``).

    Returns
    -------
    list of Verdict
        One cohort verdict (``case_id=None``) per ``cohort`` entry, in protocol order.

    Notes
    -----
    Statistics over the per-case values of the metric/label: ``mean``, ``median``, ``min``,
    ``max`` and ``p95`` (``numpy.percentile(values, 95)`` with the default *linear* method,
    i.e. interpolation between order statistics, Hyndman & Fan definition 7). If any case's
    value is not finite, or there are no cases, the statistic is undefined (NaN) and graded
    ACTION: dropping failed cases would flatter the cohort. Cases absent from ``per_case``
    (the check raised an error for them) are not counted here; the engine records those errors
    separately.

    ``pass_rate`` is the percentage of *graded* cases whose per-case verdict for the same
    metric/label is OK; the denominator is the number of distinct cases with such a per-case
    verdict (it needs a per-case tolerance for that key) and is stated in the message.
    """
    frame = per_case
    if "check_id" in frame.columns:
        frame = frame[frame["check_id"] == check_spec.id]
    verdicts = []
    for spec in check_spec.cohort:
        metric, label = split_metric_key(spec.metric)
        levels = Levels(spec.tolerance, spec.action)
        if spec.statistic == "pass_rate":
            value, detail, reason = _pass_rate(check_spec.id, metric, label, per_case_verdicts)
            unit = "%"
        else:
            value, detail, reason = _statistic(frame, check_spec, metric, label, spec)
            unit = _unit(frame, check_spec, metric)
        verdicts.append(_verdict(None, check_spec.id, metric, label, spec.statistic, value,
                                 levels, unit, detail, reason=reason))
    return verdicts


def split_metric_key(key: str) -> tuple[str, str]:
    """``"mae_hu[bone]"`` -> ``("mae_hu", "bone")``; ``"mae_hu"`` -> ``("mae_hu", "")``."""
    if key.endswith("]") and "[" in key:
        metric, _, label = key[:-1].partition("[")
        return metric, label
    return key, ""


def _statistic(frame: pd.DataFrame, check_spec: CheckSpec, metric: str, label: str,
               spec: CohortSpec) -> tuple[float, str, str | None]:
    labels = frame["label"].fillna("").astype(str)
    rows = frame[(frame["metric"] == metric) & (labels == label)]
    key = spec.metric
    duplicated = rows["case_id"][rows["case_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"check {check_spec.id!r}: per-case table has several {key} values for "
                         f"case(s) {duplicated}; give one row per case and metric/label")
    values = rows["value"].to_numpy(dtype=float)
    n = values.size
    what = f"{spec.statistic} of {key} over {n} case{'s' if n != 1 else ''}"
    if n == 0:
        return math.nan, what, f"{what}: no cases, so it cannot pass"
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        return math.nan, what, (f"{what}: {bad} of {n} cases have no finite value, so the "
                                "statistic is undefined and cannot pass")
    functions = {"mean": np.mean, "median": np.median, "min": np.min, "max": np.max,
                 "p95": lambda v: np.percentile(v, 95)}
    return float(functions[spec.statistic](values)), what, None


def _pass_rate(check_id: str, metric: str, label: str,
               verdicts: Sequence[Verdict]) -> tuple[float, str, str | None]:
    worst: dict[str, Level] = {}
    for v in verdicts:
        if (v.case_id is not None and v.statistic == "value" and v.check_id == check_id
                and v.metric == metric and v.label == label):
            worst[v.case_id] = max(worst.get(v.case_id, Level.OK), v.level)
    key = f"{metric}[{label}]" if label else metric
    n = len(worst)
    if n == 0:
        what = f"pass_rate of {key}"
        return math.nan, what, f"{what}: no graded cases (0 of 0), so it cannot pass"
    ok = sum(level == Level.OK for level in worst.values())
    return 100.0 * ok / n, f"pass_rate of {key} ({ok} of {n} graded cases OK)", None


def _unit(frame: pd.DataFrame, check_spec: CheckSpec, metric: str) -> str:
    if "unit" in frame.columns:
        units = frame.loc[frame["metric"] == metric, "unit"].dropna().unique()
        if len(units) == 1:
            return str(units[0])
    try:
        from checks.registry import get_check

        return get_check(check_spec.check).metrics[metric].unit
    except (KeyError, ImportError, AttributeError):
        return ""


def _verdict(case_id: str | None, check_id: str, metric: str, label: str, statistic: str,
             value: float, levels: Levels, unit: str, what: str,
             reason: str | None = None) -> Verdict:
    value = float(value)
    level = grade(value, levels)
    if not math.isfinite(value):
        message = reason or f"{what} = {value}: not a finite number, so it cannot pass"
        message += f" ({level})"
    else:
        shown = f"{what} = {_with_unit(_fmt(value), unit)}"
        if level is Level.ACTION:
            message = f"{shown} {_breach(value, levels.action, 'action', unit)} (ACTION)"
        elif level is Level.TOLERANCE:
            message = (f"{shown} {_breach(value, levels.tolerance, 'tolerance', unit)}, within "
                       f"action {levels.action.describe(unit)} (TOLERANCE)")
        else:
            message = f"{shown} within tolerance {levels.tolerance.describe(unit)} (OK)"
    return Verdict(case_id, check_id, metric, label, statistic, value, level,
                   levels.tolerance.min, levels.tolerance.max, levels.action.min,
                   levels.action.max, message)


def _breach(value: float, bound: Bound, name: str, unit: str) -> str:
    if bound.max is not None and value > bound.max:
        return f"> {name} max {_with_unit(_fmt(bound.max), unit)}"
    return f"< {name} min {_with_unit(_fmt(bound.min), unit)}"


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:.5g}"


def _with_unit(text: str, unit: str) -> str:
    return f"{text} {unit}" if unit and unit != "1" else text
