"""Input checks, binning and grouping of the subgroup bias analysis (private).

Public names live in :mod:`checks.bias`; this module turns a case table into one group label
per case, and says clearly what is wrong with the input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Bins", "DEFAULT_BINS", "MISSING_LABEL", "INTERSECTION_SEPARATOR", "normalise_bins",
           "check_columns", "clean_values", "group_labels"]

#: Label of the group of cases whose attribute is blank (never dropped silently).
MISSING_LABEL = "missing"
#: Joins the labels of an intersectional group (``"F × obese"``).
INTERSECTION_SEPARATOR = " × "


@dataclass(frozen=True)
class Bins:
    """Half-open bins ``[edges[i], edges[i+1])`` of a continuous attribute, with labels."""

    edges: tuple[float, ...]
    labels: tuple[str, ...]


#: WHO adult BMI classes (kg/m²): underweight < 18.5 <= normal < 25 <= overweight < 30 <=
#: obese (WHO Technical Report Series 894, 2000). Age bands (years) are a department
#: default, not a standard: child < 18, then 18-49, 50-64, 65-74, >= 75.
DEFAULT_BINS: Mapping[str, Bins] = MappingProxyType({
    "bmi": Bins((0.0, 18.5, 25.0, 30.0, math.inf),
                ("underweight <18.5", "normal 18.5-25", "overweight 25-30", "obese >=30")),
    "age": Bins((0.0, 18.0, 50.0, 65.0, 75.0, math.inf),
                ("<18", "18-49", "50-64", "65-74", ">=75")),
})


def normalise_bins(attribute: str, spec: Any) -> Bins:
    """Validate ``{"edges": [...], "labels": [...]}`` (or a :class:`Bins`) for ``attribute``."""
    if isinstance(spec, Bins):
        edges, labels = spec.edges, spec.labels
    elif isinstance(spec, Mapping) and set(spec) <= {"edges", "labels"} and "edges" in spec:
        edges, labels = spec["edges"], spec.get("labels")
    else:
        raise ValueError(f"bins[{attribute!r}] must be {{edges: [...], labels: [...]}}, "
                         f"got {spec!r}.")
    try:
        edges = tuple(float(e) for e in edges)
    except (TypeError, ValueError):
        raise ValueError(f"bins[{attribute!r}].edges must be numbers, got {edges!r}.") from None
    if len(edges) < 2 or any(math.isnan(e) for e in edges) \
            or any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True)):
        raise ValueError(f"bins[{attribute!r}].edges must be at least two strictly increasing "
                         f"numbers, got {list(edges)}.")
    if labels is None:
        labels = tuple(f"[{_num(a)}, {_num(b)})" for a, b in zip(edges[:-1], edges[1:],
                                                                 strict=True))
    labels = tuple(str(label) for label in labels)
    if len(labels) != len(edges) - 1 or len(set(labels)) != len(labels):
        raise ValueError(f"bins[{attribute!r}].labels must be {len(edges) - 1} distinct labels "
                         f"(one per bin), got {list(labels)}.")
    return Bins(edges, labels)


def check_columns(data: Any, value: str, attributes: Sequence[str]) -> pd.DataFrame:
    """The table as a DataFrame, after checking the value and attribute columns exist."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame (one row per case), got "
                        f"{type(data).__name__}.")
    if value not in data.columns:
        raise ValueError(f"value column {value!r} is not in data; columns: "
                         f"{', '.join(map(str, data.columns))}.")
    if len(data) == 0:
        raise ValueError(f"metric {value!r} has no measurements (data has no rows): run the "
                         "check that produces it on the cases first.")
    missing = [a for a in attributes if a not in data.columns]
    if missing:
        raise ValueError(
            f"attribute(s) {', '.join(map(repr, missing))} missing from the case table "
            f"(columns: {', '.join(map(str, data.columns))}); add the column to the case "
            "table and declare it under the protocol's attributes.")
    return data


def clean_values(data: pd.DataFrame, value: str, case_column: str | None,
                 nan_policy: str) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Drop (``omit``) or refuse (``raise``) rows whose metric value is not a finite number.

    Returns the kept rows and the ids (or row positions) of the dropped ones.
    """
    numbers = pd.to_numeric(data[value], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(numbers)
    names = (data[case_column].astype(str).to_numpy() if case_column in data.columns
             else np.array([f"row {i}" for i in range(len(data))]))
    dropped = tuple(names[bad])
    if bad.any():
        shown = ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else "")
        if nan_policy == "raise":
            raise ValueError(
                f"metric {value!r} is NaN or not a finite number for {int(bad.sum())} of "
                f"{len(data)} case(s): {shown}. Those cases could not be measured; fix them, "
                "or pass nan_policy='omit' to analyse the others (they are then listed as "
                "excluded).")
        if nan_policy != "omit":
            raise ValueError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}.")
        if bad.all():
            raise ValueError(f"metric {value!r} has no finite measurement: all {len(data)} "
                             f"case(s) are NaN ({shown}).")
    kept = data.loc[~bad].copy()
    kept[value] = numbers[~bad]
    return kept, dropped


def group_labels(data: pd.DataFrame, by: Sequence[str],
                 bins: Mapping[str, Bins]) -> tuple[pd.Series, list[str]]:
    """One group label per row (intersections joined with ``" × "``) and the labels in
    display order (bin order, then sorted categories, ``missing`` last)."""
    parts: list[pd.Series] = []
    orders: list[list[str]] = []
    for attribute in by:
        labels, order = _attribute_labels(data[attribute], attribute, bins.get(attribute))
        parts.append(labels)
        orders.append(order)
    if len(parts) == 1:
        joined = parts[0]
    else:
        joined = parts[0].str.cat(parts[1:], sep=INTERSECTION_SEPARATOR)
    rank: dict[str, tuple[int, ...]] = {}
    for label in joined.unique():
        pieces = label.split(INTERSECTION_SEPARATOR) if len(parts) > 1 else [label]
        rank[label] = tuple(order.index(p) for order, p in zip(orders, pieces, strict=True))
    return joined, sorted(rank, key=rank.__getitem__)


def _attribute_labels(column: pd.Series, attribute: str,
                      bins: Bins | None) -> tuple[pd.Series, list[str]]:
    blank = column.isna() | column.astype(str).str.strip().isin(["", "nan", "None"])
    numeric = pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(
        column.dtype)
    if bins is None and numeric:
        raise ValueError(
            f"attribute {attribute!r} is numeric: declare bins for it (bins: {{{attribute}: "
            "{edges: [...], labels: [...]}}}) or analyse it as a trend (trend: "
            f"[{attribute}]).")
    if bins is None:
        labels = column.astype(str).str.strip().where(~blank, MISSING_LABEL)
        present = sorted(set(labels) - {MISSING_LABEL})
        return labels, present + [MISSING_LABEL]
    numbers = pd.to_numeric(column.where(~blank), errors="coerce")
    not_number = numbers.isna() & ~blank
    if not_number.any():
        raise ValueError(f"attribute {attribute!r} has bins but value(s) that are not numbers: "
                         f"{sorted(set(column[not_number].astype(str)))[:5]}; fix the case "
                         "table.")
    edges = np.asarray(bins.edges)
    outside = ~blank & ((numbers < edges[0]) | (numbers >= edges[-1]))
    if outside.any():
        raise ValueError(
            f"attribute {attribute!r}: value(s) {sorted(set(numbers[outside].tolist()))[:5]} "
            f"outside the bins [{_num(edges[0])}, {_num(edges[-1])}); widen the bin edges.")
    index = np.searchsorted(edges, numbers.fillna(edges[0]).to_numpy(), side="right") - 1
    labels = pd.Series(np.asarray(bins.labels, dtype=object)[np.clip(index, 0, None)],
                       index=column.index, dtype=object).where(~blank, MISSING_LABEL)
    return labels.astype(str), list(bins.labels) + [MISSING_LABEL]


def _num(x: float) -> str:
    return "inf" if math.isinf(x) and x > 0 else ("-inf" if math.isinf(x) else f"{x:g}")
