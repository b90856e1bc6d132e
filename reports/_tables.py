"""The tables of the HTML run report, as display strings built from stored rows.

Provenance, data validation, verdicts (cohort and per case), the per-case table and the error
table; :func:`reports.html.render_run_report` puts them in the page. Read only: each function
formats what the store holds (:class:`reports._format.Formatter`), nothing is recomputed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from reports._format import LEVELS, Formatter, level_rank
from reports.plots import finite_or_none, missing, text

__all__ = ["MAIN_METRICS", "provenance", "validation_rows", "verdict_rows", "case_table",
           "error_rows"]

#: Per check name, the overall (label ``""``) metrics shown in the per-case table.
MAIN_METRICS: dict[str, tuple[str, ...]] = {
    "hu_accuracy": ("mae_hu", "me_hu", "rmse_hu", "psnr_db", "ssim"),
}
_MAX_FALLBACK_METRICS = 5


def provenance(run: Mapping[str, Any], cases: pd.DataFrame, fmt: Formatter) -> dict[str, Any]:
    started, finished = run.get("started_at"), run.get("finished_at")
    duration = None
    if isinstance(started, datetime) and isinstance(finished, datetime):
        if (started.tzinfo is None) == (finished.tzinfo is None):
            duration = fmt.number((finished - started).total_seconds(), "", "s")
    statuses = cases["status"].map(text).value_counts() if len(cases) else pd.Series(dtype=int)
    details = run.get("model_details") or {}
    return {
        "model_name": text(run.get("model_name")),
        "model_version": text(run.get("model_version")),
        "model_adapter": text(run.get("model_adapter")),
        "model_sha256": text(run.get("model_sha256")),
        "model_details": [(text(k), _json_text(v)) for k, v in details.items()],
        "protocol_hash": text(run.get("protocol_hash")),
        "dataset_hash": text(run.get("dataset_hash")),
        "case_table_path": text(run.get("case_table_path")),
        "software_version": text(run.get("software_version")),
        "operator": text(run.get("operator")),
        "hostname": text(run.get("hostname")),
        "started_at": fmt.time(started),
        "finished_at": fmt.time(finished),
        "duration": duration,
        "n_cases": len(cases),
        "case_statuses": ", ".join(f"{s}: {n}" for s, n in statuses.items()),
    }


def validation_rows(frame: pd.DataFrame, fmt: Formatter) -> list[dict[str, Any]]:
    """Each validation scope with its failed expectations.

    Reads the per-expectation records of ``qa.validation`` (``unexpected`` entries with
    ``value``, ``unexpected_case_ids``) and the flat form (``unexpected_values``,
    ``case_ids``).
    """
    scopes = []
    for row in frame.itertuples(index=False):
        stats = row.statistics if isinstance(row.statistics, Mapping) else {}
        result = row.result if isinstance(row.result, Mapping) else {}
        failed = []
        for item in result.get("results") or []:
            if item.get("success", True):
                continue
            values = item.get("unexpected_values")
            if values is None:
                values = [e.get("value") if isinstance(e, Mapping) else e
                          for e in item.get("unexpected") or []]
            case_ids = item.get("case_ids") or item.get("unexpected_case_ids") or []
            failed.append({
                "expectation": text(item.get("expectation_type")),
                "description": text(item.get("description")),
                "error": text(item.get("error")),
                "column": text(item.get("column")),
                "unexpected_count": text(item.get("unexpected_count")),
                "unexpected_values": ", ".join(_json_text(v) for v in list(values)[:20])
                + (" …" if len(values) > 20 else ""),
                "case_ids": ", ".join(text(c) for c in case_ids),
            })
        scopes.append({
            "scope": text(row.scope),
            "success": bool(row.success),
            "statistics": [(text(k), _statistic_text(text(k), v, fmt)) for k, v in stats.items()],
            "failed": failed,
        })
    return scopes


def _statistic_text(key: str, value: Any, fmt: Formatter) -> str:
    """A validation statistic: counts as integers, ``*_percent`` with 1 decimal and ``%``."""
    if isinstance(value, bool) or finite_or_none(value) is None:
        return _json_text(value)
    if key.endswith("percent"):
        return fmt.quantity(value, key, "%")
    return fmt.number(value, key, "count" if float(value).is_integer() else "?")


def verdict_rows(verdicts: pd.DataFrame, check_names: Mapping[str, str],
                  units: Mapping[tuple[str, str, str | None], str], fmt: Formatter, *,
                  cohort: bool) -> list[dict[str, Any]]:
    rows = []
    for row in verdicts.itertuples(index=False):
        is_cohort = missing(row.case_id)
        if is_cohort != cohort or (not cohort and text(row.level) == "OK"):
            continue
        check_id, metric, label = text(row.check_id), text(row.metric), text(row.label)
        statistic = text(row.statistic)
        unit = units.get((check_id, metric, label), units.get((check_id, metric, None), ""))
        if statistic == "pass_rate":
            unit = "%"
        rows.append({
            "case_id": "" if is_cohort else text(row.case_id),
            "check": _check_title(check_id, check_names),
            "metric": metric,
            "label": label,
            "statistic": fmt.t(f"statistic.{statistic}", default=statistic),
            "value": fmt.quantity(row.value, metric, unit),
            "tolerance": fmt.bounds(row.tolerance_min, row.tolerance_max, metric, unit),
            "action": fmt.bounds(row.action_min, row.action_max, metric, unit),
            "level": fmt.level(text(row.level)),
            "message": text(row.message),
        })
    return rows


def _check_title(check_id: str, check_names: Mapping[str, str]) -> str:
    name = check_names.get(check_id, check_id)
    return name if name == check_id else f"{name} ({check_id})"


def case_table(cases: pd.DataFrame, measurements: pd.DataFrame, verdicts: pd.DataFrame,
                errored: list[str], fmt: Formatter) -> dict[str, Any]:
    reserved = {"case_id", "position", "status", "run_id"}
    attributes = [c for c in cases.columns if c not in reserved]
    overall = measurements[measurements["label"].map(text) == ""]
    columns: list[tuple[str, str, str]] = []  # (check_id, metric, unit)
    for check_id, group in overall.groupby("check_id", sort=False):
        name = text(group["check"].iloc[0])
        present = list(dict.fromkeys(group["metric"].map(text)))
        wanted = MAIN_METRICS.get(name) or tuple(present[:_MAX_FALLBACK_METRICS])
        for metric in (m for m in wanted if m in present):
            unit = text(group.loc[group["metric"].map(text) == metric, "unit"].iloc[0])
            columns.append((text(check_id), metric, unit))
    values = {
        (text(r.case_id), text(r.check_id), text(r.metric)): r.value
        for r in overall.itertuples(index=False)
    }
    case_levels: dict[str, str] = {}
    for row in verdicts.itertuples(index=False):
        if not missing(row.case_id):
            case_id, level = text(row.case_id), text(row.level)
            if level_rank(level) >= level_rank(case_levels.get(case_id, LEVELS[0])):
                case_levels[case_id] = level
    ordered = cases.sort_values("position") if "position" in cases.columns else cases
    rows = []
    for record in ordered.to_dict("records"):
        case_id = text(record["case_id"])
        worst = fmt.error_level() if case_id in errored else (
            fmt.level(case_levels[case_id]) if case_id in case_levels else None)
        rows.append({
            "case_id": case_id,
            "status": text(record.get("status")),
            "attributes": [fmt.attribute(record.get(a)) for a in attributes],
            "metrics": [fmt.number(values.get((case_id, c, m)), m, u) for c, m, u in columns],
            "worst": worst,
        })
    headers = [
        {"title": fmt.t(f"metric.{m}", default=m), "unit": fmt.unit(u), "check": c}
        for c, m, u in columns
    ]
    return {"attributes": attributes, "metric_headers": headers, "rows": rows}


def error_rows(errors: pd.DataFrame, fmt: Formatter) -> list[dict[str, str]]:
    return [
        {
            "case_id": text(r.case_id),
            "check": text(r.check_id),
            "role": text(r.role),
            "path": text(r.path),
            "field": text(r.field),
            "message": text(r.message),
            "created_at": fmt.time(r.created_at),
        }
        for r in errors.itertuples(index=False)
    ]


def _json_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)
