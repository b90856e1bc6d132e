"""The decision the report proposes to the committee: may the model be used clinically?

The rule reads only what the run stored (verdicts, data validations, errors, case statuses,
run status) and the risk register computed from it (:func:`qa.risk.assess_run`). It never
grades a number itself: every reason points at a stored verdict, validation, error or risk row.

Rule (also in ``docs/report.md`` and in the report's appendix)
----------------------------------------------------------------
**Not approved** (periodic run: *suspend clinical use*) when any of

1. no verdict was recorded, or the run is not ``complete``: failed, closed ``incomplete``,
   *interrupted* (stored ``running`` but no process holds its run lock, see
   :func:`qa.lock.run_state`: the cases it had not finished are missing and its cohort phase
   may not have run; the reason says how to finish it, ``qa run PROTOCOL --resume RUN``) or
   still *running* (a process holds the lock: the evidence so far is partial);
2. a cohort-level verdict (no case: a cohort statistic, a pass rate, the model fingerprint,
   a control-chart alarm or an input-drift finding) is at ACTION; or (2b) a case is at ACTION
   on a check, metric and label for which the protocol grades no cohort ``pass_rate``. A
   pass-rate verdict is how a protocol states the share of cases it allows outside the
   levels; without one, it allows none;
3. a data validation scope failed (the evidence rests on inputs that broke the protocol's
   expectations): the case table or the image metadata. The ``input_drift`` scope is left to
   its verdicts, which carry the level the protocol gave drift (``drift: level``);
4. a run-level error (not tied to a case) was recorded: a check could not run at all;
5. more than :data:`MAX_ERRORED_CASE_PERCENT` % of the cases could not be evaluated;
6. a high-priority risk of severity ≥ :data:`SEVERE_RISK_SEVERITY` (TG-100: potentially
   serious toxicity or worse) has failures in this run's evidence.

**Approved with conditions** (*continue with conditions*) when not blocked and any of

7. a cohort-level verdict is at TOLERANCE;
8. some cases have per-case verdicts at ACTION or TOLERANCE (listed for review);
9. some cases (at most the limit of 5) could not be evaluated;
10. high- or medium-priority risks remain, or risks could not be scored from the evidence
    (not assessed), or no risk register could be computed.

**Approved** (*continue*) otherwise. The tool proposes; the committee decides and signs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from reports.plots import finite_or_none, missing, text

__all__ = ["Decision", "Reason", "decide", "OUTCOMES", "MAX_ERRORED_CASE_PERCENT",
           "SEVERE_RISK_SEVERITY", "GRADED_BY_VERDICTS"]

#: Outcomes, from best to worst.
OUTCOMES: tuple[str, ...] = ("approved", "approved_with_conditions", "not_approved")
#: Above this share of cases that could not be evaluated (percent), the run cannot support use.
MAX_ERRORED_CASE_PERCENT = 10.0
#: Severity (1–10, TG-100 scale) from which a high-priority risk with observed failures blocks.
SEVERE_RISK_SEVERITY = 8
#: Validation scopes whose findings are also stored as verdicts at the protocol's level
#: (``drift: level``): rules 2 and 7 grade them, not rule 3.
GRADED_BY_VERDICTS = frozenset({"input_drift"})

#: Reason code of rule 1 for a run that has not finished: its process died (interrupted) or
#: is still running.
_UNFINISHED = {"interrupted": "run_interrupted", "running": "run_in_progress"}


@dataclass(frozen=True)
class Reason:
    """One reason behind the decision.

    ``code`` names the catalog message ``decision.reason.<code>`` (filled with ``values``);
    ``blocking`` is True for a reason that makes the outcome *not approved*; ``anchor`` is the
    id of the report section holding the evidence.
    """

    code: str
    blocking: bool
    anchor: str
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The proposed outcome (one of :data:`OUTCOMES`), its reasons (blocking first, in rule
    order), and the high-priority risks that remain (risk rows, for the summary)."""

    outcome: str
    reasons: tuple[Reason, ...]
    remaining_risks: tuple[Any, ...] = ()


def decide(run: Mapping[str, Any], verdicts: pd.DataFrame, validations: pd.DataFrame,
           errors: pd.DataFrame, cases: pd.DataFrame, risk: Any | None, *,
           state: str | None = None) -> Decision:
    """Apply the rule of this module's docstring to one run.

    Parameters
    ----------
    run : mapping
        The run record (``status``).
    verdicts, validations, errors, cases : pandas.DataFrame
        As returned by the store's read methods for the run.
    risk : qa.risk.RiskAssessment or None
        The risk register (``rows`` with ``priority``, ``severity`` and ``evidence.n_failures``,
        the failures counted in this run's linked evidence), or None when none could be
        computed.
    state : str, optional
        The run's state, :func:`qa.lock.run_state` (the caller reads the run lock): the stored
        status, except ``interrupted`` for a ``running`` run whose process died. Default: the
        stored status.

    Returns
    -------
    Decision
    """
    blocking: list[Reason] = []
    conditions: list[Reason] = []
    status = text(run.get("status")) if state is None else state
    if not len(verdicts):
        blocking.append(Reason("no_verdicts", True, "verdicts"))
    if status in _UNFINISHED:
        run_id = run.get("run_id", run.get("id"))
        blocking.append(Reason(_UNFINISHED[status], True, "run-state",
                               {"run": text(run_id) or "RUN", "n_cases": len(cases)}))
    elif status != "complete":
        blocking.append(Reason("run_not_complete", True, "provenance",
                               {"status": status or "n/a"}))
    cohort = verdicts[verdicts["case_id"].map(missing)] if len(verdicts) else verdicts
    for row in cohort.itertuples(index=False):
        level = text(row.level)
        if level not in ("ACTION", "TOLERANCE"):
            continue
        values = {"check": text(row.check_id), "metric": text(row.metric),
                  "label": text(row.label), "statistic": text(row.statistic),
                  "message": text(row.message)}
        reason = Reason(f"cohort_{level.lower()}", level == "ACTION", "verdicts", values)
        (blocking if level == "ACTION" else conditions).append(reason)
    for row in validations.itertuples(index=False):
        if not bool(row.success) and text(row.scope) not in GRADED_BY_VERDICTS:
            blocking.append(Reason("validation_failed", True, "validation",
                                   {"scope": text(row.scope)}))
    n_run_errors = int(errors["case_id"].map(missing).sum()) if len(errors) else 0
    if n_run_errors:
        blocking.append(Reason("run_errors", True, "errors", {"n": n_run_errors}))
    _errored(errors, cases, blocking, conditions)
    _case_levels(verdicts, blocking, conditions)
    remaining = _risks(risk, blocking, conditions)
    outcome = OUTCOMES[2] if blocking else OUTCOMES[1] if conditions else OUTCOMES[0]
    return Decision(outcome, tuple(blocking + conditions), tuple(remaining))


def _errored(errors: pd.DataFrame, cases: pd.DataFrame, blocking: list[Reason],
             conditions: list[Reason]) -> None:
    """Rule 5 / 9: cases with an error row or the status ``error``."""
    errored = {text(c) for c in errors["case_id"] if not missing(c)} if len(errors) else set()
    if len(cases):
        errored |= {text(c) for c, s in zip(cases["case_id"], cases["status"], strict=True)
                    if text(s) == "error"}
    if not errored:
        return
    total = max(len(cases), len(errored))
    percent = 100.0 * len(errored) / total
    values = {"n": len(errored), "total": total, "percent": percent,
              "limit": MAX_ERRORED_CASE_PERCENT}
    if percent > MAX_ERRORED_CASE_PERCENT:
        blocking.append(Reason("errored_cases_over", True, "errors", values))
    else:
        conditions.append(Reason("errored_cases", False, "errors", values))


def _case_levels(verdicts: pd.DataFrame, blocking: list[Reason],
                 conditions: list[Reason]) -> None:
    """Rules 2b and 8: per-case verdicts at ACTION or TOLERANCE.

    Per-case ACTION verdicts of a (check, metric, label) that no cohort ``pass_rate`` verdict
    governs block: the protocol allowed no case at ACTION there. Where a pass rate is graded,
    it decides (rule 2) and the cases are listed for review.
    """
    if not len(verdicts):
        return
    is_cohort = verdicts["case_id"].map(missing)
    rates = verdicts[is_cohort & (verdicts["statistic"].map(text) == "pass_rate")]
    governed = {(text(r.check_id), text(r.metric), text(r.label))
                for r in rates.itertuples(index=False)}
    per_case = verdicts[~is_cohort]
    action = per_case[per_case["level"].map(text) == "ACTION"]
    ungoverned: dict[tuple[str, str, str], set[str]] = {}
    for row in action.itertuples(index=False):
        key = (text(row.check_id), text(row.metric), text(row.label))
        if key not in governed and (*key[:2], "") not in governed:
            ungoverned.setdefault(key, set()).add(text(row.case_id))
    for (check, metric, label), case_ids in ungoverned.items():
        blocking.append(Reason("cases_action_not_allowed", True, "verdicts", {
            "check": check, "metric": metric, "label": label, "n": len(case_ids)}))
    listed = {c for ids in ungoverned.values() for c in ids}
    for level in ("ACTION", "TOLERANCE"):
        rows = per_case[(per_case["level"].map(text) == level)
                        & ~per_case["case_id"].map(text).isin(listed if level == "ACTION"
                                                              else set())]
        if not len(rows):
            continue
        checks = sorted({text(c) for c in rows["check_id"]})
        conditions.append(Reason(f"cases_{level.lower()}", False, "verdicts", {
            "n": rows["case_id"].map(text).nunique(), "checks": ", ".join(checks)}))


def _risks(risk: Any | None, blocking: list[Reason], conditions: list[Reason]) -> list[Any]:
    """Rules 6 and 10; returns the high-priority rows (the risk that remains)."""
    if risk is None:
        conditions.append(Reason("no_risk_register", False, "risk"))
        return []
    rows: Sequence[Any] = list(getattr(risk, "rows", ()) or ())
    high = [r for r in rows if text(getattr(r, "priority", "")) == "high"]
    for row in high:
        values = {"mode": text(getattr(row, "mode_id", "")),
                  "title": getattr(row, "title", ""),
                  "severity": _int_text(getattr(row, "severity", None)),
                  "rpn": _int_text(getattr(row, "rpn", None))}
        severity = finite_or_none(getattr(row, "severity", None))
        evidence = getattr(row, "evidence", None)
        failures = finite_or_none(getattr(evidence, "n_failures", getattr(row, "n_failures", None)))
        if severity is not None and severity >= SEVERE_RISK_SEVERITY and failures:
            blocking.append(Reason("severe_risk", True, "risk",
                                   {**values, "n_failures": int(failures)}))
        else:
            conditions.append(Reason("high_risk", False, "risk", values))
    counts: Mapping[str, int] = getattr(risk, "counts", {}) or {}
    if counts.get("medium"):
        conditions.append(Reason("medium_risks", False, "risk", {"n": counts["medium"]}))
    if counts.get("not_assessed"):
        conditions.append(Reason("risks_not_assessed", False, "risk",
                                 {"n": counts["not_assessed"]}))
    return high


def _int_text(value: Any) -> str:
    number = finite_or_none(value)
    return "n/a" if number is None else f"{number:g}"
