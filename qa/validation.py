"""Data validation of the case table and of image metadata with great_expectations (GX 1.x).

The expectations run in an ephemeral, in-process GX context on a pandas DataFrame; nothing is
written to disk and GX analytics are switched off (``GX_ANALYTICS_ENABLED=false``) before GX is
imported. GX is imported lazily inside the functions (it takes seconds to import).

Each function returns a :class:`ValidationReport`: success, GX statistics, one result per
expectation with the offending values and the case ids of their rows, and the GX
``describe_dict()`` output under ``raw``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from qa.jsonsafe import json_safe

if TYPE_CHECKING:  # pragma: no cover
    from qa.dataset import CaseTable
    from qa.protocol import Protocol

__all__ = ["ValidationReport", "validate_case_table", "validate_image_metadata",
           "IMAGE_METADATA_COLUMNS"]

logger = logging.getLogger(__name__)

IMAGE_METADATA_COLUMNS = (
    "case_id", "role", "kind", "shape_z", "shape_y", "shape_x", "spacing_z_mm", "spacing_y_mm",
    "spacing_x_mm", "min_value", "max_value", "non_finite_voxels", "grid_matches_reference",
)
"""Columns :func:`validate_image_metadata` expects, one row per (case_id, role)."""

_MAX_SHOWN = 20
_names = itertools.count()


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of one expectation suite.

    Attributes
    ----------
    scope : str
        ``"case_table"`` or ``"image_metadata"``.
    success : bool
        True when every expectation passed.
    statistics : dict
        ``evaluated_expectations``, ``successful_expectations``,
        ``unsuccessful_expectations``, ``success_percent``.
    results : list of dict
        Per expectation: ``expectation_type``, ``column``, ``description``, ``success``,
        ``unexpected_count``, ``unexpected`` (up to 20 ``{case_id, value, ...}``),
        ``unexpected_case_ids`` (all, sorted) and ``error`` (GX exception text or None).
    raw : dict
        GX's ``describe_dict()`` of the validation result, made strict-JSON safe.
    """

    scope: str
    success: bool
    statistics: dict[str, Any]
    results: list[dict[str, Any]]
    raw: dict[str, Any] = field(default_factory=dict)

    def failed_case_ids(self) -> set[str]:
        """Case ids of every row that failed at least one expectation."""
        return {cid for r in self.results for cid in r["unexpected_case_ids"]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN and infinities become None)."""
        return _jsonable({"scope": self.scope, "success": self.success,
                          "statistics": self.statistics, "results": self.results,
                          "raw": self.raw})

    def to_json(self, indent: int | None = None) -> str:
        """Strict JSON text (no NaN) of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def validate_case_table(case_table: CaseTable, protocol: Protocol) -> ValidationReport:
    """Validate the case table's content against the protocol.

    Expectations: ``case_id`` present, not blank, unique; each required role column present and
    not blank; for each role column, a derived boolean ``<role>__exists`` (the path, relative
    to the table's folder, exists; blank = not evaluated) is True; each categorical attribute
    is in its declared ``values``; each numeric attribute parses as a finite number (derived
    ``<attr>__is_number``) and its value (derived ``<attr>__value``) lies in ``[min, max]``;
    required attributes are not blank.

    All rows are validated, including those :func:`qa.dataset.load_cases` left out. Each
    unexpected entry carries the CSV ``row`` (1-based, header = row 1).
    """
    frame = case_table.frame.reset_index(drop=True).copy()
    for column in frame.columns:
        frame[column] = frame[column].astype(object).where(frame[column] != "", None)
    folder = case_table.path.parent
    steps: list[tuple[str, dict[str, Any], str]] = [
        ("ExpectColumnToExist", {"column": "case_id"}, "the case_id column exists"),
        ("ExpectColumnValuesToNotBeNull", {"column": "case_id"}, "every row has a case_id"),
        ("ExpectColumnValuesToBeUnique", {"column": "case_id"}, "case ids are unique"),
    ]
    required = protocol.required_roles()
    for role in protocol.case_table_roles():
        if role in required:
            steps.append(("ExpectColumnToExist", {"column": role},
                          f"the column of required role {role!r} exists"))
        if role not in frame.columns:
            continue
        if role in required:
            steps.append(("ExpectColumnValuesToNotBeNull", {"column": role},
                          f"every case has a path for required role {role!r}"))
        frame[f"{role}__exists"] = [None if p is None else (folder / p).exists()
                                    for p in frame[role]]
        steps.append(("ExpectColumnValuesToBeInSet",
                      {"column": f"{role}__exists", "value_set": [True]},
                      f"the files of role {role!r} exist"))
    for name, spec in protocol.attributes.items():
        if spec.required:
            steps.append(("ExpectColumnToExist", {"column": name},
                          f"the column of required attribute {name!r} exists"))
        if name not in frame.columns:
            continue
        if spec.required:
            steps.append(("ExpectColumnValuesToNotBeNull", {"column": name},
                          f"every case has a value for attribute {name!r}"))
        if not spec.numeric:
            steps.append(("ExpectColumnValuesToBeInSet",
                          {"column": name, "value_set": list(spec.values)},
                          f"{name} is one of {', '.join(spec.values)}"))
            continue
        numbers = pd.to_numeric(frame[name], errors="coerce").astype(float)
        numbers = numbers.where(np.isfinite(numbers.to_numpy()), np.nan)
        frame[f"{name}__is_number"] = [None if raw is None else bool(np.isfinite(num))
                                       for raw, num in zip(frame[name], numbers, strict=True)]
        frame[f"{name}__value"] = numbers
        steps.append(("ExpectColumnValuesToBeInSet",
                      {"column": f"{name}__is_number", "value_set": [True]},
                      f"{name} is a finite number"))
        bounds = {k: v for k, v in (("min_value", spec.min), ("max_value", spec.max))
                  if v is not None}
        steps.append(("ExpectColumnValuesToBeBetween", {"column": f"{name}__value", **bounds},
                      f"{name} lies in [{_num(spec.min, '-inf')}, {_num(spec.max, 'inf')}]"
                      f"{' ' + spec.unit if spec.unit else ''}"))
    return _run("case_table", frame, steps, with_row=True)


def validate_image_metadata(frame: pd.DataFrame, protocol: Protocol) -> ValidationReport:
    """Validate image metadata gathered by the runner, one row per (case_id, role).

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns :data:`IMAGE_METADATA_COLUMNS`; spacings in mm, ``min_value``/``max_value`` in
        the image's unit (HU for CT), ``grid_matches_reference`` True/False, or None where no
        reference grid applies.
    protocol : qa.protocol.Protocol

    Expectations: each spacing within ``validation.spacing_mm`` (inclusive; when given);
    for the rows of CT roles (:meth:`Protocol.ct_roles`) ``min_value >= hu_range[0]`` and
    ``max_value <= hu_range[1]`` (when ``validation.hu_range`` is given);
    ``non_finite_voxels == 0``; ``grid_matches_reference`` True where not null.

    Raises
    ------
    ValueError
        When columns are missing (the frame is built by the engine, not the user).
    """
    missing = [c for c in IMAGE_METADATA_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"image metadata frame lacks column(s) {missing}; expected "
                         f"{list(IMAGE_METADATA_COLUMNS)}")
    frame = frame.reset_index(drop=True).copy()
    grid = frame["grid_matches_reference"]
    frame["grid_matches_reference"] = [None if v is None or v is pd.NA or
                                       (isinstance(v, float) and math.isnan(v)) else bool(v)
                                       for v in grid]
    steps: list[tuple[str, dict[str, Any], str]] = []
    spacing = protocol.validation.spacing_mm
    if spacing is not None:
        bounds = {k: v for k, v in (("min_value", spacing.min), ("max_value", spacing.max))
                  if v is not None}
        for axis in "zyx":
            steps.append(("ExpectColumnValuesToBeBetween",
                          {"column": f"spacing_{axis}_mm", **bounds},
                          f"{axis} spacing in [{_num(spacing.min, '-inf')}, "
                          f"{_num(spacing.max, 'inf')}] mm"))
    hu_range = protocol.validation.hu_range
    ct_roles = sorted(protocol.ct_roles())
    if hu_range is not None and ct_roles:
        steps.append(("ExpectColumnValuesToBeBetween",
                      {"column": "min_value", "min_value": hu_range[0], "_rows": ct_roles},
                      f"CT roles ({', '.join(ct_roles)}): minimum >= {hu_range[0]:g} HU"))
        steps.append(("ExpectColumnValuesToBeBetween",
                      {"column": "max_value", "max_value": hu_range[1], "_rows": ct_roles},
                      f"CT roles ({', '.join(ct_roles)}): maximum <= {hu_range[1]:g} HU"))
    steps.append(("ExpectColumnValuesToBeBetween",
                  {"column": "non_finite_voxels", "min_value": 0, "max_value": 0},
                  "no NaN or infinite voxels"))
    steps.append(("ExpectColumnValuesToBeInSet",
                  {"column": "grid_matches_reference", "value_set": [True]},
                  "the grid matches the reference grid (where one applies)"))
    return _run("image_metadata", frame, steps, with_row=False)


@contextmanager
def _gx_quiet() -> Iterator[None]:
    """Silence GX's own deprecation warnings (its imports and legacy code), nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                module=r"great_expectations(\..*)?$")
        yield


def _run(scope: str, frame: pd.DataFrame, steps: list[tuple[str, dict[str, Any], str]],
         with_row: bool) -> ValidationReport:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with _gx_quiet():
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.expectations.row_conditions import Column

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        name = f"alara_{scope}_{next(_names)}"
        batch = (context.data_sources.add_pandas(name).add_dataframe_asset(name)
                 .add_batch_definition_whole_dataframe(name))
        suite = context.suites.add(gx.ExpectationSuite(name=name))
        for kind, kwargs, _ in steps:
            kwargs = dict(kwargs)
            rows = kwargs.pop("_rows", None)
            if rows is not None:
                kwargs["row_condition"] = Column("role").is_in(rows)
            suite.add_expectation(getattr(gx.expectations, kind)(**kwargs))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite))
        result = definition.run(batch_parameters={"dataframe": frame},
                                result_format={"result_format": "COMPLETE"})
        raw = _jsonable(result.describe_dict())
    results = [_summarise(r, description, frame, with_row)
               for r, (_, _, description) in zip(result.results, steps, strict=True)]
    statistics = {k: _jsonable(v) for k, v in dict(result.statistics).items()}
    report = ValidationReport(scope, bool(result.success), statistics, results, raw)
    logger.info("%s validation: %s of %s expectations passed", scope,
                statistics.get("successful_expectations"),
                statistics.get("evaluated_expectations"))
    return report


def _summarise(result: Any, description: str, frame: pd.DataFrame,
               with_row: bool) -> dict[str, Any]:
    config = result.expectation_config
    details = dict(result.result or {})
    indices = [int(i) for i in details.get("unexpected_index_list") or []]
    values = details.get("unexpected_list") or []
    if len(values) != len(indices):
        values = [frame.at[i, config.kwargs["column"]] for i in indices]
    unexpected = []
    for index, value in zip(indices, values, strict=True):
        entry: dict[str, Any] = {"case_id": _case_id(frame, index), "value": _jsonable(value)}
        if with_row:
            entry["row"] = index + 2
        elif "role" in frame.columns:
            entry["role"] = frame.at[index, "role"]
        unexpected.append(entry)
    info = result.exception_info or {}
    error = info.get("exception_message") if info.get("raised_exception") else None
    count = details.get("unexpected_count")
    return {
        "expectation_type": config.type,
        "column": config.kwargs.get("column"),
        "description": description,
        "success": bool(result.success),
        "unexpected_count": int(count) if count is not None else len(indices),
        "unexpected": unexpected[:_MAX_SHOWN],
        "unexpected_case_ids": sorted({e["case_id"] for e in unexpected if e["case_id"]}),
        "error": error,
    }


def _case_id(frame: pd.DataFrame, index: int) -> str | None:
    if "case_id" not in frame.columns or index not in frame.index:
        return None
    value = frame.at[index, "case_id"]
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(
        value)


def _num(x: float | None, absent: str) -> str:
    return absent if x is None else f"{x:g}"


def _jsonable(value: Any) -> Any:
    """Strict-JSON types (NaN/inf -> None, numpy -> Python, unknown objects -> text)."""
    return json_safe(value, fallback=str)
