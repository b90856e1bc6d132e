"""The cohort phase of a run: checks that see the whole run at once (``scope == "cohort"``).

After every case has been checked and graded, the runner hands each cohort check
(:class:`checks.base.CohortCheck`, e.g. subgroup bias) a :class:`checks.base.CohortInput`
built from what the store holds for the run, stores the measurements and details it returns
as cohort-level rows (``case_id`` NULL), and grades them against the check's ``tolerances``
(cohort verdicts, ``statistic`` ``"value"``). A cohort check that fails is recorded as a run
error naming the check (no case); the other checks and everything already stored are kept.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from checks.base import CheckOutput, CohortCheck, CohortInput
from qa.errors import QAInputError
from qa.protocol import CheckSpec, Protocol
from qa.store import Store
from qa.verdicts import Verdict, grade_measurements

__all__ = ["is_cohort_check", "cohort_input", "CohortPhase", "run_cohort_checks"]

logger = logging.getLogger(__name__)


def is_cohort_check(check: Any) -> bool:
    """True for a check that runs once per run on the cohort, not per case."""
    return isinstance(check, CohortCheck) or getattr(check, "scope", "case") == "cohort"


def cohort_input(store: Store, run_id: int, protocol: Protocol) -> CohortInput:
    """What a cohort check sees, read back from the store for ``run_id``.

    ``measurements``: the run's per-case measurements (case_id, check_id, check, metric,
    label, value, unit), in case-table order. ``cases``: case_id then one column per declared
    attribute, as stored (every case recorded for the run, including cases with errors;
    an attribute no case has is a column of None). ``verdicts``: the per-case verdicts
    (case_id, check_id, metric, label, statistic, value, level, the four bounds, message).
    ``attributes``: the protocol's attribute declarations as plain dicts.
    """
    measured = store.measurements(run_id)
    measured = measured[measured["case_id"].notna()].drop(columns="run_id")
    cases = store.cases(run_id)
    for name in protocol.attributes:
        if name not in cases.columns:
            cases[name] = None
    cases = cases[["case_id", *protocol.attributes]]
    graded = store.verdicts(run_id)
    graded = graded[graded["case_id"].notna()].drop(columns="run_id")
    attributes = {name: spec.model_dump(exclude_none=True)
                  for name, spec in protocol.attributes.items()}
    return CohortInput(measurements=measured.reset_index(drop=True),
                       cases=cases.reset_index(drop=True),
                       verdicts=graded.reset_index(drop=True), attributes=attributes)


def pooled_input(store: Store, run_id: int, protocol: Protocol) -> CohortInput:
    """:func:`cohort_input` of several runs, with a ``run_id`` column in each frame.

    The runs: the active baseline's run of the protocol (``baseline.protocol`` or its name),
    the complete runs of the same protocol name started after it, and ``run_id`` last; a
    case seen in several runs keeps its latest attributes (checks keep each case's latest
    values). Without a baseline only ``run_id`` is used (logged).
    """
    from qa.baseline import baseline_spec

    name = baseline_spec(protocol).protocol or protocol.name
    baseline = store.active_baseline(name)
    if baseline is None:
        logger.warning("pool: since_baseline but protocol %r has no baseline; using run %d "
                       "alone", name, run_id)
        run_ids = [run_id]
    else:
        runs = store.runs()
        first = int(baseline["run_id"])
        later = runs[(runs["protocol_name"] == protocol.name) & (runs["status"] == "complete")
                     & (runs["run_id"] > first) & (runs["run_id"] != run_id)]
        run_ids = [first, *later.sort_values("run_id")["run_id"].astype(int), run_id]
    parts = [(r, cohort_input(store, r, protocol)) for r in run_ids]
    return CohortInput(
        measurements=pd.concat([p.measurements.assign(run_id=r) for r, p in parts],
                               ignore_index=True),
        cases=pd.concat([p.cases for _, p in parts], ignore_index=True)
        .drop_duplicates("case_id", keep="last").reset_index(drop=True),
        verdicts=pd.concat([p.verdicts.assign(run_id=r) for r, p in parts],
                           ignore_index=True),
        attributes=parts[-1][1].attributes)


@dataclass
class CohortPhase:
    """What the cohort phase produced: the cohort verdicts and the ids of failed checks."""

    verdicts: list[Verdict] = field(default_factory=list)
    failed_check_ids: list[str] = field(default_factory=list)


def run_cohort_checks(store: Store, run_id: int, protocol: Protocol,
                      checks: list[tuple[CheckSpec, Any]]) -> CohortPhase:
    """Run each cohort check once on the run's results; store and grade what it returns.

    Parameters
    ----------
    store : qa.store.Store
    run_id : int
        A running run whose cases have all been stored.
    protocol : qa.protocol.Protocol
    checks : list of (CheckSpec, CohortCheck)
        The protocol's cohort checks, in protocol order.

    Returns
    -------
    CohortPhase
        The stored cohort verdicts and the ids of the checks that failed (each recorded as a
        run error with its ``check_id`` and no case).
    """
    phase = CohortPhase()
    if not checks:
        return phase
    data = cohort_input(store, run_id, protocol)
    for spec, check in checks:
        try:
            output = check.run_cohort(data if spec.pool == "run"
                                      else pooled_input(store, run_id, protocol))
            if not isinstance(output, CheckOutput):
                raise TypeError(f"run_cohort returned {type(output).__name__}, not a "
                                "CheckOutput")
            store.add_measurements(run_id, None, spec.id, spec.check, output.measurements)
            if output.details:
                store.add_details(run_id, None, spec.id, output.details)
        except QAInputError as exc:
            _record(store, run_id, spec, phase, exc.message, field=exc.field)
            continue
        except (ValueError, ArithmeticError) as exc:
            _record(store, run_id, spec, phase, f"{type(exc).__name__}: {exc}")
            continue
        except Exception as exc:  # a bug or an unforeseen input: record it, keep going
            logger.error("cohort check %s: unexpected error\n%s", spec.id,
                         traceback.format_exc())
            _record(store, run_id, spec, phase, f"unexpected {type(exc).__name__}: {exc} "
                                                "(please report this with the log)")
            continue
        verdicts = grade_measurements(spec, None, output.measurements)
        store.add_verdicts(run_id, verdicts)
        phase.verdicts.extend(verdicts)
    return phase


def _record(store: Store, run_id: int, spec: CheckSpec, phase: CohortPhase, message: str,
            field: str | None = None) -> None:
    store.add_error(run_id, f"cohort check {spec.id!r} could not be run: {message}",
                    check_id=spec.id, field=field)
    logger.warning("cohort check %s: %s", spec.id, message)
    phase.failed_check_ids.append(spec.id)

