"""Display data of the report's appendix: decision rule, tolerance and action levels as
applied, methods and formulas of the checks in the run, conventions.

The levels table lists the distinct levels carried by the stored verdicts (what was applied,
not what a protocol file says today). Method texts are catalog entries
``appendix.method.<check>`` (one per check family, with the formula and its source); a check
without one (an engine-internal id such as ``trend``) has no entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from reports._decision import MAX_ERRORED_CASE_PERCENT, SEVERE_RISK_SEVERITY
from reports.plots import missing, text

__all__ = ["appendix_context", "RULE_KEYS", "CONVENTION_KEYS"]

#: Catalog keys of the decision rule (``appendix.rule.<key>``): each paragraph and its items.
RULE_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("blocking_intro", ("no_verdicts", "cohort_action", "cases_action", "validation",
                        "run_errors", "errored_cases", "severe_risk")),
    ("conditions_intro", ("cohort_tolerance", "cases_review", "errored_few", "risks")),
    ("approved", ()),
    ("committee", ()),
)
#: Catalog keys of the conventions list (``appendix.convention.<key>``).
CONVENTION_KEYS = ("levels", "bounds", "rounding", "geometry", "times", "pseudonyms",
                   "read_only", "deterministic")


def appendix_context(verdicts: pd.DataFrame, check_names: Mapping[str, str],
                     units: Mapping[tuple[str, str, str | None], str], periodic: bool,
                     with_risk: bool, fmt: Any) -> dict[str, Any]:
    """Rule, levels, methods and conventions of one run's report."""
    values = {"limit": fmt.number(MAX_ERRORED_CASE_PERCENT, "", "%"),
              "severity_limit": SEVERE_RISK_SEVERITY}
    families = list(dict.fromkeys(check_names.values()))
    if periodic:
        families.append("periodic")
    if with_risk:
        families.append("risk")
    return {
        "rule": [{"text": fmt.t(f"appendix.rule.{intro}", **values),
                  "points": [fmt.t(f"appendix.rule.{key}", **values) for key in items]}
                 for intro, items in RULE_KEYS],
        "levels": _levels(verdicts, check_names, units, fmt),
        "methods": [{"name": name, "text": fmt.t(f"appendix.method.{name}", default="")}
                    for name in families if fmt.t(f"appendix.method.{name}", default="")],
        "conventions": [fmt.t(f"appendix.convention.{key}") for key in CONVENTION_KEYS],
    }


def _levels(verdicts: pd.DataFrame, check_names: Mapping[str, str],
            units: Mapping[tuple[str, str, str | None], str], fmt: Any) -> list[dict[str, str]]:
    """Distinct (check, metric, label, statistic, tolerance, action) of the stored verdicts."""
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for row in _records(verdicts):
        check_id, metric, label = text(row.check_id), text(row.metric), text(row.label)
        statistic = text(row.statistic)
        unit = "%" if statistic == "pass_rate" else units.get(
            (check_id, metric, label), units.get((check_id, metric, None), ""))
        scope = fmt.t("appendix.per_case") if not missing(row.case_id) else fmt.t(
            f"statistic.{statistic}", default=statistic)
        tolerance = fmt.bounds(row.tolerance_min, row.tolerance_max, metric, unit)
        action = fmt.bounds(row.action_min, row.action_max, metric, unit)
        name = check_names.get(check_id, check_id)
        key = (check_id, metric, label, scope, tolerance, action)
        rows.setdefault(key, {
            "check": name if name == check_id else f"{name} ({check_id})", "metric": metric,
            "label": label, "scope": scope, "tolerance": tolerance, "action": action,
            "_order": (check_id, metric, label, 0 if not missing(row.case_id) else 1)})
    # per check, metric and label: the per-case levels, then the cohort statistics
    ordered = sorted(rows.values(), key=lambda r: r["_order"])
    for row in ordered:
        del row["_order"]
    return ordered


def _records(verdicts: pd.DataFrame) -> Iterable[Any]:
    return verdicts.itertuples(index=False) if len(verdicts) else ()

