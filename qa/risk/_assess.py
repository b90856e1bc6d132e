"""Scoring the risk register of a run: O, D, RPN, priority, ISO 14971 region, change.

Rules (TG-100, Huq et al. 2016; ISO 14971:2019; conventions in ``docs/risk.md``):

* O = the TG-100 occurrence rank of the upper end of the two-sided Clopper–Pearson interval
  of the failure rate (k failures in n evaluated cases or runs);
* D = the rank the scales give the mode's detection class (a template may override it per
  mode); S = the template's severity;
* RPN = O × S × D;
* priority ``high`` when S >= ``severity_high`` (8) whatever the RPN, or RPN >= ``rpn_high``;
  ``medium`` when RPN >= ``rpn_medium``; else ``low``;
* a mode with no evaluated case or run is ``not_assessed``: O, D, RPN, ISO probability and
  region are None — never a default score;
* ISO 14971 view: the same upper bound gives the probability category, S its severity
  category, the matrix the region (acceptable / ALARP / unacceptable);
* change: the previous finished run of the same protocol is scored with the *same* template,
  so a change reflects new evidence, not an edited template.

Deterministic: the same store gives the same assessment (no clock, no randomness).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qa.risk._evidence import Evidence, RunData, gather_evidence, read_run
from qa.risk._scales import IsoMatrix, Scales
from qa.risk._template import LocalText, RiskTemplate, load_template, parse_record

__all__ = ["RiskRow", "RiskAssessment", "assess_run", "recorded_template", "PRIORITIES",
           "CHANGES", "RISK_CHECK_ID", "TEMPLATE_DETAIL"]

#: Priorities, most urgent first (the order of the register).
PRIORITIES = ("high", "medium", "low", "not_assessed")
#: Values of :attr:`RiskRow.change`.
CHANGES = ("no_previous", "new", "no_longer_assessed", "rpn_up", "rpn_down", "unchanged",
           "not_assessed")
#: Check id and detail name under which the runner stores the template of a run.
RISK_CHECK_ID = "risk_register"
TEMPLATE_DETAIL = "template"
_FINISHED = ("complete", "incomplete")


@dataclass(frozen=True)
class RiskRow:
    """One failure mode scored for a run.

    Texts (``title``, ``effect``, ``cause``, ``mitigations``) are kept as in the template — a
    plain string or ``{language: text}`` — and resolved to the report language with
    :func:`qa.risk.localized` by the report. ``occurrence``, ``detectability``, ``rpn``,
    ``iso_probability`` and ``iso_region`` are None when the mode is not assessed.
    """

    mode_id: str
    title: LocalText
    effect: LocalText
    cause: LocalText | None
    mitigations: tuple[LocalText, ...]
    references: tuple[str, ...]
    severity: int
    occurrence: int | None
    detectability: int | None
    rpn: int | None
    priority: str
    iso_probability: str | None
    iso_severity: str
    iso_region: str | None
    evidence: Evidence
    change: str
    previous_rpn: int | None

    @property
    def n_failures(self) -> int | None:
        """Failures this run itself showed: cases whose linked verdicts reach the mode's
        failure level (TOLERANCE not counted at ACTION level), or 1 / 0 for a run-unit mode;
        None when this run did not evaluate the mode."""
        return self.evidence.n_failures_this_run


@dataclass(frozen=True)
class RiskAssessment:
    """The risk register of one run, ordered by priority, then RPN (highest first), then S."""

    run_id: int
    rows: list[RiskRow]
    template_name: LocalText
    template_sha256: str
    template_source: str
    counts: dict[str, int]
    previous_run_id: int | None
    scales: Scales
    matrix: IsoMatrix


def assess_run(store: Any, run_id: int, *,
               template: RiskTemplate | str | Path | None = None) -> RiskAssessment:
    """Score every failure mode of the template against the evidence stored for ``run_id``.

    Parameters
    ----------
    store : qa.store.Store
        Read only (``run``, ``runs``, ``cases``, ``verdicts``, ``errors``, ``details``).
    run_id : int
    template : RiskTemplate, path or None
        None: the template recorded with the run (detail ``risk_register / template``), else
        the default template.

    Returns
    -------
    RiskAssessment
    """
    if template is None:
        template = recorded_template(store, run_id) or load_template(None)
    elif not isinstance(template, RiskTemplate):
        template = load_template(template)
    run = store.run(run_id)
    runs = store.runs()
    same = runs[(runs["protocol_name"] == run["protocol_name"]) & (runs["run_id"] < run_id)
                & runs["status"].isin(_FINISHED)].sort_values("run_id")
    earlier = [int(r) for r in same["run_id"]]
    cache: dict[int, RunData] = {}

    def data(rid: int) -> RunData:
        if rid not in cache:
            cache[rid] = read_run(store, rid, run if rid == run_id else None)
        return cache[rid]

    rows = _score(template, data(run_id), lambda: [data(r) for r in earlier])
    previous_id = earlier[-1] if earlier else None
    previous: dict[str, RiskRow] = {}
    if previous_id is not None:
        previous = {r.mode_id: r for r in _score(template, data(previous_id),
                                                 lambda: [data(r) for r in earlier[:-1]])}
    rows = [_with_change(row, previous.get(row.mode_id), previous_id is not None)
            for row in rows]
    order = {mode.id: i for i, mode in enumerate(template.failure_modes)}
    rows.sort(key=lambda r: (PRIORITIES.index(r.priority), -(r.rpn or 0), -r.severity,
                             order[r.mode_id]))
    counts = {p: sum(r.priority == p for r in rows) for p in PRIORITIES}
    return RiskAssessment(run_id=run_id, rows=rows, template_name=template.name,
                          template_sha256=template.sha256, template_source=template.source,
                          counts=counts, previous_run_id=previous_id, scales=template.scales,
                          matrix=template.matrix)


def recorded_template(store: Any, run_id: int) -> RiskTemplate | None:
    """The template stored with the run by the runner, or None (older runs have none)."""
    frame = store.details(run_id, check_id=RISK_CHECK_ID, name=TEMPLATE_DETAIL)
    if not len(frame):
        return None
    payload = frame["payload"].iloc[0]
    return parse_record(payload) if isinstance(payload, Mapping) else None


def _score(template: RiskTemplate, current: RunData, history: Any) -> list[RiskRow]:
    scales, matrix = template.scales, template.matrix
    earlier: list[RunData] | None = None
    rows = []
    for mode in template.failure_modes:
        if mode.unit == "run" and earlier is None:
            earlier = history()
        evidence = gather_evidence(mode, current, earlier or [], scales.confidence_level)
        iso_severity = matrix.severity_of_rank[mode.severity]
        if not evidence.assessed:
            rows.append(_row(mode, evidence, None, None, None, "not_assessed", None,
                             iso_severity, None))
            continue
        assert evidence.upper_bound is not None
        occurrence = scales.occurrence(evidence.upper_bound)
        detectability = mode.detection.get(evidence.detection_class,
                                           scales.detection[evidence.detection_class])
        rpn = occurrence * mode.severity * detectability
        if mode.severity >= scales.severity_high or rpn >= scales.rpn_high:
            priority = "high"
        elif rpn >= scales.rpn_medium:
            priority = "medium"
        else:
            priority = "low"
        probability = matrix.probability_of(evidence.upper_bound)
        rows.append(_row(mode, evidence, occurrence, detectability, rpn, priority, probability,
                         iso_severity, matrix.region(probability, iso_severity)))
    return rows


def _row(mode: Any, evidence: Evidence, occurrence: int | None, detectability: int | None,
         rpn: int | None, priority: str, probability: str | None, iso_severity: str,
         region: str | None) -> RiskRow:
    return RiskRow(mode_id=mode.id, title=mode.title, effect=mode.effect, cause=mode.cause,
                   mitigations=mode.mitigations, references=mode.references,
                   severity=mode.severity, occurrence=occurrence, detectability=detectability,
                   rpn=rpn, priority=priority, iso_probability=probability,
                   iso_severity=iso_severity, iso_region=region, evidence=evidence,
                   change="", previous_rpn=None)


def _with_change(row: RiskRow, previous: RiskRow | None, has_previous: bool) -> RiskRow:
    if not has_previous or previous is None:
        return replace(row, change="no_previous")
    before, now = previous.rpn, row.rpn
    if before is None and now is None:
        change = "not_assessed"
    elif before is None:
        change = "new"
    elif now is None:
        change = "no_longer_assessed"
    elif now > before:
        change = "rpn_up"
    elif now < before:
        change = "rpn_down"
    else:
        change = "unchanged"
    return replace(row, change=change, previous_rpn=before)
