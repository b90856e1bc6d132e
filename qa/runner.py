"""Run a protocol over its case table into the results store.

Flow: load and validate the case table (great_expectations) -> fingerprint the model ->
open a run in the store -> process the cases (in this process or ``workers`` local
processes) -> store each case's measurements, details, errors and verdicts as it finishes
-> grade the cohort aggregates -> run the cohort checks (``qa.cohort_runner``) on the stored
per-case results -> for a ``periodic`` protocol, compare with the active baseline
(``qa.baseline``: model fingerprint, per-case differences) -> validate the image metadata ->
close the run with its exit code.

One bad case never stops the others: its problems are stored as errors and the run goes on.
Results reach the store in case-table order whatever the number of workers, so two runs of
the same protocol on the same data give the same rows in the same order.
"""

from __future__ import annotations

import getpass
import logging
import os
import platform
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from qa import __version__
from qa.baseline import run_baseline_comparison
from qa.case_runner import CaseContext, CaseResult, process_case
from qa.cohort_runner import is_cohort_check, run_cohort_checks
from qa.dataset import CaseTable, dataset_hash, load_cases
from qa.exitcodes import ExitCode, exit_code_for
from qa.models import load_adapter
from qa.protocol import Protocol, load_protocol
from qa.store import Store
from qa.trending import IMAGE_METADATA_CHECK_ID, run_drift_check, run_trend_charts
from qa.validation import validate_case_table, validate_image_metadata
from qa.verdicts import Level, Verdict, grade_cohort, grade_measurements, worst_level

__all__ = ["RunOutcome", "run_protocol"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run returns to its caller (the CLI prints it)."""

    run_id: int
    exit_code: ExitCode
    summary: dict[str, Any]


def run_protocol(protocol: Protocol | str | Path, store: Store, *, workers: int = 1,
                 operator: str | None = None, progress: bool | None = None) -> RunOutcome:
    """Run every check of ``protocol`` on every case into ``store``.

    Parameters
    ----------
    protocol : Protocol or path
        The protocol, or the path of its YAML file.
    store : qa.store.Store
    workers : int
        Number of local worker processes (1 = run in this process).
    operator : str, optional
        Who ran it; default the protocol's ``operator``, else the login name.
    progress : bool, optional
        Show a progress bar on stderr (default: only when stderr is a terminal).

    Returns
    -------
    RunOutcome

    Raises
    ------
    qa.errors.ProtocolError, qa.errors.CaseTableError, qa.errors.QAInputError
        When the run cannot start (bad protocol, unreadable case table, model not loadable);
        nothing is written to the store then.
    """
    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    case_table = load_cases(protocol)
    adapter = load_adapter(protocol.model, protocol.base_dir)
    fingerprint = adapter.fingerprint()
    instances = protocol.check_instances()
    checks = [(spec, check) for spec, check in instances if not is_cohort_check(check)]
    cohort_checks = [(spec, check) for spec, check in instances if is_cohort_check(check)]
    run_id = store.create_run(
        protocol_name=protocol.name, protocol_kind=protocol.kind,
        protocol_hash=protocol.sha256, protocol_text=protocol.text,
        dataset_hash=dataset_hash(case_table), case_table_path=str(case_table.path),
        model=fingerprint.to_dict(), software_version=__version__,
        operator=operator or protocol.operator or login_name(), hostname=platform.node(),
    )
    logger.info("run %d started: %s, %d cases", run_id, protocol.name, len(case_table.cases))
    try:
        outcome = _execute(protocol, store, run_id, case_table,
                           CaseContext(protocol, checks, adapter), cohort_checks, workers,
                           progress)
    except BaseException:
        store.finish_run(run_id, "incomplete", exit_code=None,
                         summary={"reason": "interrupted or crashed; see the log"})
        raise
    return outcome


def _execute(protocol: Protocol, store: Store, run_id: int, case_table: CaseTable,
             context: CaseContext, cohort_checks: list[tuple[Any, Any]], workers: int,
             progress: bool | None) -> RunOutcome:
    table_report = validate_case_table(case_table, protocol)
    store.add_validation(run_id, table_report.scope, table_report.success,
                         table_report.to_dict(), statistics=table_report.statistics)
    excluded = _store_table_problems(store, run_id, case_table, dict(protocol.attributes))

    verdicts: list[Verdict] = []
    measurement_rows: list[dict[str, Any]] = []
    metadata_rows: list[dict[str, Any]] = []
    error_cases = set(excluded)
    for result in _results(context, case_table, workers, progress):
        store.add_case(run_id, result.case_id, position=result.position,
                       attributes=result.attributes, status=result.status)
        specs = {spec.id: spec for spec, _ in context.checks}
        for record in result.records:
            store.add_measurements(run_id, result.case_id, record.check_id, record.check,
                                   record.measurements)
            if record.details:
                store.add_details(run_id, result.case_id, record.check_id, record.details)
            case_verdicts = grade_measurements(
                specs[record.check_id], result.case_id, record.measurements,
                not_applicable=record.details.get("not_applicable", ()))
            store.add_verdicts(run_id, case_verdicts)
            verdicts.extend(case_verdicts)
            measurement_rows.extend(
                {"case_id": result.case_id, "check_id": record.check_id, "metric": m.metric,
                 "label": m.label, "value": m.value, "unit": m.unit}
                for m in record.measurements)
        for error in result.errors:
            store.add_error(run_id, error["message"], case_id=result.case_id,
                            check_id=error.get("check_id"), role=error.get("role"),
                            path=error.get("path"), field=error.get("field"))
            logger.warning("case %s: %s", result.case_id, error["message"])
        if result.errors:
            error_cases.add(result.case_id)
        metadata_rows.extend(result.image_metadata)
        if result.image_metadata:  # kept per case for drift checks of later runs
            store.add_details(run_id, result.case_id, IMAGE_METADATA_CHECK_ID,
                              {row["role"]: row for row in result.image_metadata})

    per_case = pd.DataFrame(measurement_rows,
                            columns=["case_id", "check_id", "metric", "label", "value", "unit"])
    cohort: list[Verdict] = []
    for spec, _ in context.checks:
        cohort.extend(grade_cohort(spec, per_case, verdicts))
    store.add_verdicts(run_id, cohort)
    verdicts.extend(cohort)
    phase = run_cohort_checks(store, run_id, protocol, cohort_checks)
    verdicts.extend(phase.verdicts)
    baseline_info, baseline_failed = None, False
    if protocol.kind == "periodic":
        try:
            compared = run_baseline_comparison(store, run_id, protocol)
        except Exception as exc:  # keep the run: record why the comparison is missing
            logger.exception("run %d: comparison with the baseline failed", run_id)
            store.add_error(run_id, f"the comparison with the baseline could not be made: "
                                    f"{type(exc).__name__}: {exc} (please report this with "
                                    "the log)", check_id="baseline")
            baseline_failed = True
        else:
            verdicts.extend(compared.verdicts)
            if compared.baseline is not None:
                baseline_info = {k: compared.baseline[k]
                                 for k in ("baseline_id", "run_id", "protocol_name")}
        try:
            verdicts.extend(run_trend_charts(store, run_id, protocol))
            verdicts.extend(run_drift_check(store, run_id, protocol))
        except Exception as exc:  # keep the run: record why the charts are missing
            logger.exception("run %d: control charts failed", run_id)
            store.add_error(run_id, f"the control charts or the drift check failed: "
                                    f"{type(exc).__name__}: {exc} (please report this with "
                                    "the log)", check_id="trend")
            baseline_failed = True

    metadata_ok = True
    if metadata_rows:
        meta_report = validate_image_metadata(pd.DataFrame(metadata_rows), protocol)
        store.add_validation(run_id, meta_report.scope, meta_report.success,
                             meta_report.to_dict(), statistics=meta_report.statistics)
        metadata_ok = meta_report.success
    worst = worst_level(verdicts)
    code = exit_code_for(worst, has_errors=bool(error_cases or phase.failed_check_ids
                                                or baseline_failed),
                         validation_failed=not (table_report.success and metadata_ok))
    summary = {
        "cases_in_table": int(len(case_table.frame)),
        "cases_run": len(case_table.cases),
        "cases_with_errors": sorted(error_cases),
        "cohort_checks_with_errors": phase.failed_check_ids,
        "baseline": baseline_info,
        "verdicts": {level.value: sum(v.level == level for v in verdicts) for level in Level},
        "worst_level": worst.value if verdicts else None,
        "validation_success": bool(table_report.success and metadata_ok),
        "exit_code": int(code),
        "exit_meaning": code.meaning,
    }
    store.finish_run(run_id, "complete", exit_code=int(code), summary=summary)
    logger.info("run %d complete: %s (exit %d)", run_id, code.meaning, int(code))
    return RunOutcome(run_id, code, summary)


def _store_table_problems(store: Store, run_id: int, case_table: CaseTable,
                          attributes: dict[str, Any]) -> set[str]:
    """Record the case-table problems as errors, and each excluded case once (with its
    attributes as written in the table, so the report can still show them)."""
    recorded: set[str] = set()
    frame = case_table.frame
    for problem in case_table.problems:
        store.add_errors_from(run_id, problem, case_id=problem.case_id)
        logger.warning("%s", problem)
        case_id = problem.case_id
        if case_id and case_id not in recorded:
            rows = frame.index[frame["case_id"] == case_id] if "case_id" in frame else []
            position = int(rows[0]) if len(rows) else -1
            written = {name: _as_written(frame.at[rows[0], name], spec.numeric)
                       for name, spec in attributes.items()
                       if len(rows) and name in frame.columns}
            store.add_case(run_id, case_id, position=position, attributes=written,
                           status="error")
            recorded.add(case_id)
    return recorded


def _as_written(value: Any, numeric: bool) -> Any:
    """A case-table cell of an excluded case: a number when it reads as one, else the text
    (None when blank)."""
    text = str(value).strip()
    if not text:
        return None
    if numeric:
        try:
            return float(text)
        except ValueError:
            return text
    return text


def _results(context: CaseContext, case_table: CaseTable, workers: int,
             progress: bool | None) -> Iterator[CaseResult]:
    """Case results in table order, computed here or in ``workers`` processes."""
    from tqdm import tqdm

    cases = case_table.cases
    bar = tqdm(total=len(cases), unit="case", file=sys.stderr, desc="QA",
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    try:
        if workers == 1 or len(cases) <= 1:
            for case in cases:
                yield process_case(context, case)
                bar.update()
            return
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=_init_worker,
                                 initargs=(str(context.protocol.path), threads)) as pool:
            for result in pool.map(_work, cases):
                yield result
                bar.update()
    finally:
        bar.close()


_WORKER_CONTEXT: CaseContext | None = None


def _init_worker(protocol_path: str, threads: int) -> None:
    """Worker-process initialiser: load the protocol, checks and model once."""
    global _WORKER_CONTEXT
    protocol = load_protocol(protocol_path)
    adapter = load_adapter(protocol.model, protocol.base_dir, num_threads=threads)
    checks = [(spec, check) for spec, check in protocol.check_instances()
              if not is_cohort_check(check)]
    _WORKER_CONTEXT = CaseContext(protocol, checks, adapter)


def _work(case: Any) -> CaseResult:
    assert _WORKER_CONTEXT is not None, "worker not initialised"
    return process_case(_WORKER_CONTEXT, case)


def login_name() -> str:
    """The login name of the user running ALARA-QA (``"unknown"`` when there is none)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers / CI
        return "unknown"
