"""Display data of the report's first page (proposed decision, remaining risk), of the
recommendations and of the sign-off block, from :func:`reports._decision.decide`.

Every text comes from the message catalogs (``decision.*``, ``recommendation.*``,
``signoff.*``); the values put into them are stored strings and numbers, escaped by the
template.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from qa.risk import localized
from reports._decision import MAX_ERRORED_CASE_PERCENT, SEVERE_RISK_SEVERITY, Decision, Reason
from reports.plots import finite_or_none, text

__all__ = ["decision_context", "recommendations", "signoff_context", "audit_rows",
           "is_periodic"]

#: Most reasons listed on the first page (blocking first); the rest are counted.
MAX_REASONS_SHOWN = 15
_OUTCOME_CSS = {"approved": "ok", "approved_with_conditions": "tolerance",
                "not_approved": "action"}
_RISK_PRIORITIES = ("high", "medium", "low", "not_assessed")


def is_periodic(run: Mapping[str, Any]) -> bool:
    """A periodic run reports *continued use* instead of *clinical use*."""
    return text(run.get("protocol_kind")) == "periodic"


def decision_context(decision: Decision, run: Mapping[str, Any], risk: Any | None,
                     fmt: Any) -> dict[str, Any]:
    """The decision box: question, outcome, reasons (blocking first) and remaining risk."""
    kind = "periodic" if is_periodic(run) else "commissioning"
    counts: Mapping[str, int] = getattr(risk, "counts", None) or {}
    return {
        "outcome": decision.outcome,
        "css": _OUTCOME_CSS[decision.outcome],
        "question": fmt.t(f"decision.{kind}.question"),
        "label": fmt.t(f"decision.{kind}.{decision.outcome}"),
        "reasons": [_reason(r, fmt) for r in decision.reasons[:MAX_REASONS_SHOWN]],
        "n_more": max(0, len(decision.reasons) - MAX_REASONS_SHOWN),
        "n_blocking": sum(r.blocking for r in decision.reasons),
        "risk_counts": [(fmt.t(f"decision.priority.{p}"), int(counts.get(p, 0)))
                        for p in _RISK_PRIORITIES] if risk is not None else None,
        "risk_template": localized(getattr(risk, "template_name", None), fmt.language),
        "remaining_risks": [_risk_row(r, fmt) for r in decision.remaining_risks],
    }


def recommendations(decision: Decision, run: Mapping[str, Any], fmt: Any) -> list[str]:
    """One recommendation per kind of reason, in the reasons' order, then the general one for
    the outcome (commissioning or periodic wording)."""
    kind = "periodic" if is_periodic(run) else "commissioning"
    values: dict[str, dict[str, Any]] = {}  # the first reason of each code fills its fields
    for reason in decision.reasons:
        values.setdefault(reason.code, dict(reason.values))
    items = [fmt.t(f"recommendation.{code}", **values[code]) for code in values]
    items.append(fmt.t(f"recommendation.{kind}.{decision.outcome}"))
    return items


def signoff_context(decision: Decision, run: Mapping[str, Any], fmt: Any) -> dict[str, Any]:
    """The sign-off block: who signs, and the outcomes the committee may tick."""
    kind = "periodic" if is_periodic(run) else "commissioning"
    return {
        "proposed": fmt.t(f"decision.{kind}.{decision.outcome}"),
        "options": [fmt.t(f"decision.{kind}.{o}") for o in _OUTCOME_CSS],
        "roles": [fmt.t("signoff.physicist"), fmt.t("signoff.chair")],
    }


def audit_rows(events: pd.DataFrame, fmt: Any) -> list[dict[str, str]]:
    """The run's recorded decisions (``qa approve``, ``qa baseline set``, ``qa run --reason``),
    oldest first, as display strings: when (UTC), who, what, why. Operator names and reasons
    are user text, escaped by the template."""
    rows = []
    for event in events.itertuples(index=False):
        action = text(event.action)
        rows.append({"at": fmt.time(event.at), "operator": text(event.operator),
                     "action": fmt.t(f"audit.action.{action}", default=action),
                     "reason": text(event.reason)})
    return rows


def _reason(reason: Reason, fmt: Any) -> dict[str, Any]:
    values = dict(reason.values)
    if "title" in values:
        values["title"] = localized(values["title"], fmt.language)
    if "label" in values:
        values["label"] = f" [{values['label']}]" if values["label"] else ""
    if "statistic" in values:
        values["statistic"] = fmt.t(f"statistic.{values['statistic']}",
                                    default=values["statistic"])
    if "percent" in values:
        values["percent"] = fmt.number(values["percent"], "", "%")
    values.setdefault("limit", fmt.number(MAX_ERRORED_CASE_PERCENT, "", "%"))
    if isinstance(values["limit"], float):
        values["limit"] = fmt.number(values["limit"], "", "%")
    values.setdefault("severity_limit", SEVERE_RISK_SEVERITY)
    return {"text": fmt.t(f"decision.reason.{reason.code}", **values),
            "blocking": reason.blocking, "anchor": reason.anchor,
            "kind": fmt.t("decision.blocking" if reason.blocking else "decision.condition")}


def _risk_row(row: Any, fmt: Any) -> dict[str, str]:
    def score(name: str) -> str:
        value = finite_or_none(getattr(row, name, None))
        return "n/a" if value is None else f"{value:g}"

    return {"mode": text(getattr(row, "mode_id", "")),
            "title": localized(getattr(row, "title", None), fmt.language),
            "severity": score("severity"), "occurrence": score("occurrence"),
            "detectability": score("detectability"), "rpn": score("rpn")}
