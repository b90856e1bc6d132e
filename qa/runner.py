"""Run a protocol over its case table into the results store.

Flow: load and validate the case table (great_expectations) -> fingerprint the model ->
open a run in the store -> compute the cases (:mod:`qa.executors`: in this process, in
``workers`` local processes, or as Dask tasks) -> store each case's row, measurements,
details, errors and verdicts in one transaction as it finishes -> grade the cohort
aggregates -> run the cohort checks (``qa.cohort_runner``) on the stored per-case results ->
for a ``periodic`` protocol, compare with the active baseline (``qa.baseline``: model
fingerprint, per-case differences) -> validate the image metadata -> close the run with its
exit code.

One bad case never stops the others: its problems are stored as errors and the run goes on.
Cases arrive in completion order; every read sorts by the case's position in the case table,
and the cohort phase reads the per-case results back from the store, so the executor, the
number of workers and an interruption followed by ``qa run --resume`` (:mod:`qa.resume`)
never change what a run stores.

A run whose process dies (killed, power loss, out of memory) or is stopped with Ctrl-C stays
``running`` in the store with every case it finished; ``qa runs`` shows it as incomplete and
``qa run PROTOCOL --resume RUN`` completes it. A run stopped by any other exception is
closed as ``incomplete``.
"""

from __future__ import annotations

import getpass
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from qa import __version__
from qa.audit import tolerance_change_event
from qa.baseline import run_baseline_comparison
from qa.case_runner import CaseContext, CaseResult
from qa.cohort_runner import is_cohort_check, run_cohort_checks
from qa.dataset import CaseTable, dataset_hash, load_cases
from qa.executors import ExecutorSpec, case_results
from qa.exitcodes import ExitCode, exit_code_for
from qa.models import load_adapter
from qa.protocol import Protocol, load_protocol
from qa.risk import RISK_CHECK_ID, TEMPLATE_DETAIL, template_record
from qa.store import Store
from qa.trending import IMAGE_METADATA_CHECK_ID, run_drift_check, run_trend_charts
from qa.validation import validate_case_table, validate_image_metadata
from qa.verdicts import Level, Verdict, grade_cohort, grade_measurements, worst_level

__all__ = ["RunOutcome", "PreparedRun", "prepare_run", "execute_run", "run_protocol"]

logger = logging.getLogger(__name__)

#: ``validations.scope`` of the case-table validation, stored with the table problems in one
#: transaction: its presence tells :mod:`qa.resume` that this first phase is done.
CASE_TABLE_SCOPE = "case_table"


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run returns to its caller (the CLI prints it)."""

    run_id: int
    exit_code: ExitCode
    summary: dict[str, Any]


@dataclass(frozen=True)
class PreparedRun:
    """Everything a run needs before its first write: the protocol, the loaded case table,
    the per-case context (checks and model adapter) and the cohort checks."""

    protocol: Protocol
    case_table: CaseTable
    context: CaseContext
    cohort_checks: list[tuple[Any, Any]]

    @property
    def dataset_sha256(self) -> str:
        return dataset_hash(self.case_table)


def run_protocol(protocol: Protocol | str | Path, store: Store, *, workers: int = 1,
                 operator: str | None = None, progress: bool | None = None,
                 executor: str = "local", scheduler: str | None = None,
                 trust_model: bool = False, reason: str | None = None) -> RunOutcome:
    """Run every check of ``protocol`` on every case into ``store``.

    Parameters
    ----------
    protocol : Protocol or path
        The protocol, or the path of its YAML file.
    store : qa.store.Store
    workers : int
        Number of local worker processes (1 = run in this process), or of Dask workers of
        the ``LocalCluster`` started when ``executor="dask"`` has no ``scheduler``.
    operator : str, optional
        Who ran it; default the protocol's ``operator``, else the login name.
    progress : bool, optional
        Show a progress bar on stderr (default: only when stderr is a terminal).
    executor : {"local", "dask"}
        Where the cases are computed (:mod:`qa.executors`).
    scheduler : str, optional
        A Dask scheduler address (``tcp://host:8786``) for ``executor="dask"``.
    trust_model : bool
        Let a torch model that needs full unpickling load (it can run arbitrary code;
        ``qa run --trust-model``); recorded in the model fingerprint.
    reason : str, optional
        Why the tolerance or action levels differ from the previous run of this protocol
        name (``qa run --reason``); required then, recorded in the audit trail
        (:mod:`qa.audit`).

    Returns
    -------
    RunOutcome

    Raises
    ------
    qa.errors.ProtocolError, qa.errors.CaseTableError, qa.errors.QAInputError
        When the run cannot start (bad protocol, unreadable case table, model not loadable);
        nothing is written to the store then.
    """
    spec = ExecutorSpec(executor, workers, scheduler)  # type: ignore[arg-type]
    prepared = prepare_run(protocol, trust_model=trust_model)
    protocol = prepared.protocol
    case_table = prepared.case_table
    risk_template = template_record(protocol.risk_path)  # a bad template stops the start
    operator = operator or protocol.operator or login_name()
    audit = tolerance_change_event(store, protocol.name, protocol.kind, protocol.text, reason)
    run_id = store.create_run(
        protocol_name=protocol.name, protocol_kind=protocol.kind,
        protocol_hash=protocol.sha256, protocol_text=protocol.text,
        dataset_hash=prepared.dataset_sha256, case_table_path=str(case_table.path),
        model=prepared.context.adapter.fingerprint().to_dict(), software_version=__version__,
        operator=operator, hostname=platform.node(),
        audit=None if audit is None else {**audit, "operator": operator},
    )
    store.add_details(run_id, None, RISK_CHECK_ID, {TEMPLATE_DETAIL: risk_template})
    logger.info("run %d started: %s, %d cases (%s)", run_id, protocol.name,
                len(case_table.cases), spec.describe())
    return execute_run(prepared, store, run_id, spec, progress)


def prepare_run(protocol: Protocol | str | Path, *, trust_model: bool = False) -> PreparedRun:
    """Load the protocol, its case table, its checks and its model (nothing is stored)."""
    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    case_table = load_cases(protocol)
    adapter = load_adapter(protocol.model, protocol.base_dir, trust_model=trust_model)
    instances = protocol.check_instances()
    checks = [(spec, check) for spec, check in instances if not is_cohort_check(check)]
    cohort_checks = [(spec, check) for spec, check in instances if is_cohort_check(check)]
    return PreparedRun(protocol, case_table, CaseContext(protocol, checks, adapter),
                       cohort_checks)


def execute_run(prepared: PreparedRun, store: Store, run_id: int, executor: ExecutorSpec,
                progress: bool | None = None, *,
                resumed: dict[str, Any] | None = None) -> RunOutcome:
    """Compute and store the cases of the running run ``run_id`` that it does not hold yet,
    then its cohort phase, and close it.

    A fresh run holds no case; a resumed one (``resumed``: what :mod:`qa.resume` recorded,
    kept in the summary) holds the cases stored before its process died.
    """
    try:
        return _execute(prepared, store, run_id, executor, progress, resumed)
    except KeyboardInterrupt:
        logger.error("run %d interrupted; it keeps the cases already stored: complete it with "
                     "`qa run %s --resume %d`", run_id, prepared.protocol.path, run_id)
        raise
    except BaseException:
        store.finish_run(run_id, "incomplete", exit_code=None,
                         summary={"reason": "interrupted or crashed; see the log"})
        raise


def _execute(prepared: PreparedRun, store: Store, run_id: int, executor: ExecutorSpec,
             progress: bool | None, resumed: dict[str, Any] | None) -> RunOutcome:
    protocol, case_table, context = prepared.protocol, prepared.case_table, prepared.context
    validations = store.validations(run_id)
    if CASE_TABLE_SCOPE in set(validations["scope"]):
        table_success = bool(validations.loc[validations["scope"] == CASE_TABLE_SCOPE,
                                             "success"].iloc[0])
    else:
        table_report = validate_case_table(case_table, protocol)
        with store.atomic():  # the table phase is stored whole or not at all
            store.add_validation(run_id, table_report.scope, table_report.success,
                                 table_report.to_dict(), statistics=table_report.statistics)
            _store_table_problems(store, run_id, case_table, dict(protocol.attributes))
        table_success = bool(table_report.success)

    stored = set(store.cases(run_id)["case_id"])
    todo = [case for case in case_table.cases if case.case_id not in stored]
    if stored:
        logger.info("run %d: %d case(s) already stored, %d to run", run_id,
                    len(case_table.cases) - len(todo), len(todo))
    specs = {spec.id: spec for spec, _ in context.checks}
    for result in case_results(executor, context, todo, progress):
        with store.atomic():  # a case is stored whole or not at all (qa.resume relies on it)
            _store_case(store, run_id, result, specs)

    # The cohort phase reads the per-case results back from the store, in case-table order:
    # the same input whatever the executor, the arrival order or an interruption.
    per_case = store.measurements(run_id)
    per_case = per_case[per_case["case_id"].notna()].drop(columns=["run_id", "check"])
    verdicts = _stored_case_verdicts(store, run_id)
    errors = store.errors(run_id)
    error_cases = set(errors.loc[errors["case_id"].notna(), "case_id"])
    cohort: list[Verdict] = []
    for spec, _ in context.checks:
        cohort.extend(grade_cohort(spec, per_case, verdicts))
    store.add_verdicts(run_id, cohort)
    verdicts.extend(cohort)
    phase = run_cohort_checks(store, run_id, protocol, prepared.cohort_checks)
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
    metadata_rows = list(store.details(run_id, check_id=IMAGE_METADATA_CHECK_ID)["payload"])
    if metadata_rows:
        meta_report = validate_image_metadata(pd.DataFrame(metadata_rows), protocol)
        store.add_validation(run_id, meta_report.scope, meta_report.success,
                             meta_report.to_dict(), statistics=meta_report.statistics)
        metadata_ok = meta_report.success
    worst = worst_level(verdicts)
    code = exit_code_for(worst, has_errors=bool(error_cases or phase.failed_check_ids
                                                or baseline_failed),
                         validation_failed=not (table_success and metadata_ok))
    summary = {
        "cases_in_table": int(len(case_table.frame)),
        "cases_run": len(case_table.cases),
        "cases_with_errors": sorted(error_cases),
        "cohort_checks_with_errors": phase.failed_check_ids,
        "baseline": baseline_info,
        "verdicts": {level.value: sum(v.level == level for v in verdicts) for level in Level},
        "worst_level": worst.value if verdicts else None,
        "validation_success": bool(table_success and metadata_ok),
        "exit_code": int(code),
        "exit_meaning": code.meaning,
    }
    if resumed is not None:
        summary["resumed"] = resumed
    store.finish_run(run_id, "complete", exit_code=int(code), summary=summary)
    logger.info("run %d complete: %s (exit %d)", run_id, code.meaning, int(code))
    return RunOutcome(run_id, code, summary)


def _store_case(store: Store, run_id: int, result: CaseResult, specs: dict[str, Any]) -> None:
    """Store one case's row, measurements, details, per-case verdicts, errors and image
    metadata (the caller wraps this in one transaction)."""
    store.add_case(run_id, result.case_id, position=result.position,
                   attributes=result.attributes, status=result.status)
    for record in result.records:
        store.add_measurements(run_id, result.case_id, record.check_id, record.check,
                               record.measurements)
        if record.details:
            store.add_details(run_id, result.case_id, record.check_id, record.details)
        store.add_verdicts(run_id, grade_measurements(
            specs[record.check_id], result.case_id, record.measurements,
            not_applicable=record.details.get("not_applicable", ())))
    for error in result.errors:
        store.add_error(run_id, error["message"], case_id=result.case_id,
                        check_id=error.get("check_id"), role=error.get("role"),
                        path=error.get("path"), field=error.get("field"))
        logger.warning("case %s: %s", result.case_id, error["message"])
    if result.image_metadata:  # kept per case for drift checks of later runs
        store.add_details(run_id, result.case_id, IMAGE_METADATA_CHECK_ID,
                          {row["role"]: row for row in result.image_metadata})


def _stored_case_verdicts(store: Store, run_id: int) -> list[Verdict]:
    """The run's stored per-case verdicts (case-table order) as :class:`Verdict` records."""
    frame = store.verdicts(run_id)
    frame = frame[frame["case_id"].notna()]

    def bound(value: Any) -> float | None:
        return None if pd.isna(value) else float(value)

    return [Verdict(row.case_id, row.check_id, row.metric, row.label, row.statistic,
                    float(row.value), Level(row.level), bound(row.tolerance_min),
                    bound(row.tolerance_max), bound(row.action_min), bound(row.action_max),
                    row.message)
            for row in frame.itertuples(index=False)]


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


def login_name() -> str:
    """The login name of the user running ALARA-QA (``"unknown"`` when there is none)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers / CI
        return "unknown"
