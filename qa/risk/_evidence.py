"""Evidence for a failure mode, read from the stored verdicts of its linked checks.

Counting rules (documented in ``docs/risk.md``; a physicist must be able to recount them):

* ``unit: case`` — the trials are the cases of the run. A case is *evaluated* when it has at
  least one per-case verdict of a linked check (or, for the ``errors`` link, always). Its
  outcome is the worst level of those verdicts (an ``errors`` link gives ACTION to a case with
  an error row or the status ``error``). It is a *failure* when that level reaches the mode's
  ``failure_level`` (ACTION by default); at ACTION, the cases whose worst level is TOLERANCE
  are counted and shown apart, not as failures. Cases with no linked verdict (not run, errored,
  not applicable) are *not evaluated*: they are neither trials nor failures, and their number
  is shown.
* ``unit: run`` — the trials are this run and the earlier finished (complete or incomplete)
  runs of the same protocol name. A run is evaluated when it stored a linked verdict (cohort
  or per-case) and no error for that check; it fails when any linked verdict reaches the
  failure level. Input drift (``drift``) stores a verdict only for a feature that moved: a
  run whose protocol declares ``drift:`` and that stored none is evaluated, without failure.
* In both units a verdict that measured nothing (value NaN) and stayed below the failure
  level — "no baseline is set: the fingerprint cannot be checked" (TOLERANCE) — is ignored;
  a NaN graded at or above it (a metric that could not be computed is ACTION) is a failure.

Detection class (mapped to D by the scales): ``every_case`` when a linked per-case check
graded every case of the run, ``some_cases`` when it graded only some, ``run_level`` for a
run-unit mode whose check the run's protocol declares, ``not_in_protocol`` when no linked
check is declared in this run's protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import yaml

from qa.risk._scales import clopper_pearson_interval
from qa.risk._template import EvidenceLink, FailureMode

__all__ = ["Evidence", "RunData", "read_run", "gather_evidence", "ENGINE_CHECKS"]

#: Check ids the engine itself writes (not declared under ``checks:``), and ``errors``.
ENGINE_CHECKS = ("baseline", "drift", "trend", "errors")
_RANK = {"OK": 0, "TOLERANCE": 1, "ACTION": 2}
#: Engine checks that store a verdict only when they find something (input drift).
_SILENT_WHEN_OK = ("drift",)


@dataclass(frozen=True)
class Evidence:
    """What the store says about one failure mode (counts are cases or runs, see ``unit``).

    ``observed_rate`` = k / n and ``upper_bound`` (the upper end of the two-sided
    Clopper–Pearson interval at ``confidence_level``) are fractions, None when n = 0.
    ``n_failures_this_run``: the failures of the run itself (= ``n_failures`` for a case-unit
    mode; 0 or 1 for a run-unit mode; None when the run did not evaluate the mode).
    """

    links: tuple[str, ...]
    unit: str
    failure_level: str
    n_total: int
    n_evaluated: int
    n_failures: int
    n_tolerance: int
    n_not_evaluated: int
    observed_rate: float | None
    lower_bound: float | None
    upper_bound: float | None
    confidence_level: float
    detection_class: str
    run_ids: tuple[int, ...]
    n_failures_this_run: int | None

    @property
    def assessed(self) -> bool:
        """True when at least one case (or run) was evaluated."""
        return self.n_evaluated > 0


@dataclass(frozen=True)
class RunData:
    """What the evidence needs from one stored run (read once, reused)."""

    run_id: int
    declared: frozenset[str]
    names: Mapping[str, str]  # check id -> check name
    cases: tuple[tuple[str, str], ...]  # (case id, status) in case-table order
    verdicts: pd.DataFrame
    errors: pd.DataFrame


def read_run(store: Any, run_id: int, run: Mapping[str, Any] | None = None) -> RunData:
    """Read a run's protocol declarations, cases, verdicts and errors from the store."""
    run = store.run(run_id) if run is None else run
    try:
        protocol = yaml.safe_load(str(run.get("protocol_text") or "")) or {}
    except yaml.YAMLError:
        protocol = {}
    protocol = protocol if isinstance(protocol, dict) else {}
    names: dict[str, str] = {}
    for item in protocol.get("checks") or []:
        if isinstance(item, dict) and isinstance(item.get("check"), str):
            names[str(item.get("id", item["check"]))] = item["check"]
    declared = set(names) | set(names.values()) | {"errors"}
    if str(run.get("protocol_kind")) == "periodic":
        declared.add("baseline")
    declared |= {key for key in ("drift", "trend") if protocol.get(key)}
    cases = store.cases(run_id)
    pairs = tuple((str(c), str(s)) for c, s in zip(cases["case_id"], cases["status"],
                                                   strict=True)) if len(cases) else ()
    return RunData(run_id, frozenset(declared), names, pairs, store.verdicts(run_id),
                   store.errors(run_id))


def gather_evidence(mode: FailureMode, current: RunData, history: Iterable[RunData],
                    confidence_level: float) -> Evidence:
    """Count trials and failures of ``mode`` (``history``: earlier runs, oldest first)."""
    if mode.unit == "case":
        n_total, outcomes, run_ids = len(current.cases), _case_outcomes(mode, current), \
            (current.run_id,)
        declared = any(_is_declared(link, current) for link in mode.evidence)
        if not declared:
            detection = "not_in_protocol"
        else:
            detection = "every_case" if n_total and len(outcomes) == n_total else "some_cases"
    else:
        runs = [*history, current]
        outcomes = {}
        for data in runs:
            level = _run_outcome(mode, data)
            if level is not None:
                outcomes[str(data.run_id)] = level
        n_total, run_ids = len(runs), tuple(int(k) for k in outcomes)
        declared = any(_is_declared(link, current) for link in mode.evidence)
        detection = "run_level" if declared else "not_in_protocol"
    threshold = _RANK[mode.failure_level]
    n = len(outcomes)
    k = sum(_RANK[level] >= threshold for level in outcomes.values())
    if mode.unit == "case":
        this_run: int | None = k if n else None
    else:
        own = outcomes.get(str(current.run_id))
        this_run = None if own is None else int(_RANK[own] >= threshold)
    tolerance = sum(level == "TOLERANCE" for level in outcomes.values()) \
        if mode.failure_level == "ACTION" else 0
    lower = upper = rate = None
    if n:
        lower, upper = clopper_pearson_interval(k, n, confidence_level)
        rate = k / n
    return Evidence(
        links=tuple(link.describe() for link in mode.evidence), unit=mode.unit,
        failure_level=mode.failure_level, n_total=n_total, n_evaluated=n, n_failures=k,
        n_tolerance=tolerance, n_not_evaluated=n_total - n, observed_rate=rate,
        lower_bound=lower, upper_bound=upper, confidence_level=confidence_level,
        detection_class=detection, run_ids=run_ids, n_failures_this_run=this_run)


def _case_outcomes(mode: FailureMode, data: RunData) -> dict[str, str]:
    """Case id -> worst linked level, for the evaluated cases of the run."""
    worst: dict[str, str] = {}
    known = {case_id for case_id, _ in data.cases}
    for link in mode.evidence:
        if link.check == "errors":
            errored = {case_id for case_id, status in data.cases if status == "error"}
            if len(data.errors):
                errored |= {str(c) for c in data.errors["case_id"] if isinstance(c, str)}
            for case_id in known:
                _raise_to(worst, case_id, "ACTION" if case_id in errored else "OK")
            continue
        rows = _usable(_matching(data, link), mode.failure_level)
        rows = rows.loc[rows["case_id"].map(lambda c: isinstance(c, str)).astype(bool)]
        for case_id, level in zip(rows["case_id"], rows["level"], strict=True):
            _raise_to(worst, str(case_id), str(level))
    return worst


def _run_outcome(mode: FailureMode, data: RunData) -> str | None:
    """Worst linked level of a run, or None when the run did not evaluate the mode."""
    worst: str | None = None
    for link in mode.evidence:
        if not _is_declared(link, data):
            continue
        if link.check == "errors":
            level = "ACTION" if len(data.errors) or any(s == "error" for _, s in data.cases) \
                else "OK"
        else:
            if len(data.errors) and _check_ids(link, data) & set(
                    data.errors["check_id"].dropna().astype(str)):
                continue  # the check failed in that run: not evaluated
            rows = _usable(_matching(data, link), mode.failure_level)
            if not len(rows) and link.check not in _SILENT_WHEN_OK:
                continue  # declared but graded nothing (no levels for that metric)
            level = max(map(str, rows["level"]), key=_RANK.__getitem__, default="OK")
        worst = level if worst is None or _RANK[level] > _RANK[worst] else worst
    return worst


def _matching(data: RunData, link: EvidenceLink) -> pd.DataFrame:
    frame = data.verdicts
    if not len(frame):
        return frame
    mask = frame["check_id"].astype(str).isin(_check_ids(link, data))
    if link.metric is not None:
        mask &= frame["metric"].astype(str) == link.metric
    if link.label is not None:
        mask &= frame["label"].fillna("").astype(str) == link.label
    return frame.loc[mask]


def _usable(rows: pd.DataFrame, failure_level: str) -> pd.DataFrame:
    """Drop verdicts that measured nothing (value NaN) and stayed below the failure level,
    e.g. "no baseline is set: the model fingerprint cannot be checked" (TOLERANCE): they are
    not a trial. A NaN graded at or above the failure level (a metric that could not be
    computed is ACTION) stays a failure, as the engine graded it."""
    if not len(rows):
        return rows
    below = rows["level"].astype(str).map(_RANK) < _RANK[failure_level]
    unmeasured = pd.to_numeric(rows["value"], errors="coerce").isna()
    return rows.loc[~(below & unmeasured)]


def _check_ids(link: EvidenceLink, data: RunData) -> set[str]:
    """Check ids the link names: itself, and every id whose check name it is."""
    return {link.check} | {i for i, name in data.names.items() if name == link.check}


def _is_declared(link: EvidenceLink, data: RunData) -> bool:
    return link.check in data.declared


def _raise_to(worst: dict[str, str], case_id: str, level: str) -> None:
    if case_id not in worst or _RANK[level] > _RANK[worst[case_id]]:
        worst[case_id] = level
