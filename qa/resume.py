"""Crash safety: tell an interrupted run from a running one, and resume it.

A run whose process dies (``kill -9``, power loss, the out-of-memory killer, Ctrl-C) cannot
close itself: it stays ``running`` in the store, with every case it finished. Each case was
stored in one transaction (:meth:`qa.store.Store.atomic`: its row, measurements, details,
verdicts, errors and image metadata together), so a case is either complete in the store or
absent: there are no half-written cases.

*Interrupted or still running?* ``qa run`` holds the run lock of its (protocol, store) for the
whole run (:mod:`qa.lock`); the operating system (or PostgreSQL, for an advisory lock)
releases it when the process ends, however it ends. A ``running`` run whose lock is free has
no live process: :func:`qa.lock.run_state` (one run) and :func:`run_states` (a table of runs)
call it ``interrupted``; ``qa runs`` lists it as ``incomplete`` and the report says on its
first page that the run is incomplete and how to finish it. (A run started through the
Python API without the lock, e.g. by ``qa demo``, looks interrupted to another process while
it runs.)

*Resume* (:func:`resume_run`, ``qa run PROTOCOL --resume RUN``, under the same run lock):

1. the run must be ``running`` (a finished run is never edited: a rerun is a new run);
2. the protocol's SHA-256, the dataset hash (case table and every referenced file), the model
   fingerprint (name, version, adapter, SHA-256) and the software version must equal the
   run's: one run never mixes two protocols, datasets, models or versions;
3. the cohort phase must not have started (it writes cohort rows that cannot be completed
   without duplicating some; such a run stays incomplete and a new run is needed);
4. the cases the run does not hold are computed and stored, then the cohort phase runs on
   every stored case and the run is closed; the summary's ``resumed`` entry records when,
   where, by whom and how many cases were already stored.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from qa import __version__
from qa.errors import QAInputError
from qa.executors import ExecutorSpec
from qa.lock import is_interrupted, run_state  # is_interrupted: re-exported
from qa.protocol import Protocol
from qa.risk import RISK_CHECK_ID
from qa.runner import CASE_TABLE_SCOPE, RunOutcome, execute_run, login_name, prepare_run
from qa.store import Store

__all__ = ["ResumeError", "run_states", "is_interrupted", "open_runs_of", "resume_run"]

logger = logging.getLogger(__name__)

_MODEL_KEYS = ("name", "version", "adapter", "sha256")
#: Check ids of the run-level details ``run_protocol`` stores when the run starts (before any
#: case): they do not mean that the cohort phase has begun.
RUN_START_CHECK_IDS = frozenset({RISK_CHECK_ID})


class ResumeError(QAInputError):
    """A run that cannot be resumed (finished, or its protocol, data or model changed)."""


def run_states(store: Store, runs: pd.DataFrame | None = None) -> pd.Series:
    """The state of each run of ``runs`` (default ``store.runs()``), aligned with it:
    :func:`qa.lock.run_state`, the stored status except ``interrupted`` for a ``running`` run
    whose process died."""
    runs = store.runs() if runs is None else runs
    states = runs["status"].astype(object).copy()
    for index, run in runs.iterrows():
        states[index] = run_state(store, run)
    return states


def open_runs_of(store: Store, protocol_sha256: str) -> list[int]:
    """Ids of the ``running`` runs of the protocol with this SHA-256, oldest first.

    Called while holding the protocol's run lock (as ``qa run`` does), these are runs whose
    process died: ``qa run`` names them so that the operator can resume one instead.
    """
    runs = store.runs()
    chosen = runs[(runs["status"] == "running") & (runs["protocol_hash"] == protocol_sha256)]
    return [int(run_id) for run_id in chosen["run_id"]]


def resume_run(protocol: Protocol | str | Path, store: Store, run_id: int, *,
               executor: ExecutorSpec | None = None, progress: bool | None = None,
               operator: str | None = None, trust_model: bool = False) -> RunOutcome:
    """Complete the interrupted run ``run_id``: its missing cases, its cohort phase, its end.

    The caller holds the run lock of (protocol, store) (``qa run --resume`` takes it first),
    so no other process is writing to the run.

    Parameters
    ----------
    protocol : Protocol or path
        The protocol the run was started with (same SHA-256).
    store : qa.store.Store
    run_id : int
    executor : qa.executors.ExecutorSpec, optional
        Where to compute the missing cases (default: in this process); it may differ from
        the first attempt's.
    progress : bool, optional
        Progress bar on stderr (default: when stderr is a terminal).
    operator : str, optional
        Who resumes it (recorded in the summary's ``resumed`` entry; default login name).
    trust_model : bool
        As for :func:`qa.runner.run_protocol`.

    Raises
    ------
    ResumeError
        The run is finished, its cohort phase had started, or the protocol, dataset, model
        or software version differs from the run's; nothing is written then.
    qa.store.UnknownRunError
        No such run.
    """
    run = store.run(run_id)
    if run["status"] != "running":
        finished = run["finished_at"]
        raise ResumeError(
            f"run {run_id} is already {run['status']} (finished "
            f"{finished:%Y-%m-%d %H:%M:%S} UTC): only a run whose process died while it was "
            "running can be resumed; runs are never edited, so start a new run with "
            "`qa run PROTOCOL`")
    prepared = prepare_run(protocol, trust_model=trust_model)
    _refuse_changes(run, prepared, run_id)
    _refuse_started_cohort_phase(store, run_id)
    stored = store.cases(run_id)
    total = len(prepared.case_table.cases)
    resumed = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "hostname": platform.node(), "operator": operator or login_name(),
               "cases_already_stored": int(len(stored))}
    logger.info("resuming run %d (%s): %d of %d case(s) stored", run_id, run["protocol_name"],
                int(stored["case_id"].isin([c.case_id for c in
                                            prepared.case_table.cases]).sum()), total)
    return execute_run(prepared, store, run_id, executor or ExecutorSpec(), progress,
                       resumed=resumed)


def _refuse_changes(run: Mapping[str, Any], prepared: Any, run_id: int) -> None:
    protocol = prepared.protocol
    where = f"run {run_id} cannot be resumed"
    if protocol.sha256 != run["protocol_hash"]:
        raise ResumeError(
            f"{where}: the protocol {protocol.path} is not the one it started with (SHA-256 "
            f"{protocol.sha256[:12]}…, the run has {str(run['protocol_hash'])[:12]}…); give the "
            "protocol file as it was, or start a new run", path=str(protocol.path))
    dataset = prepared.dataset_sha256
    if dataset != run["dataset_hash"]:
        raise ResumeError(
            f"{where}: the case table {prepared.case_table.path} or a file it names changed "
            f"since the run started (dataset hash {dataset[:12]}…, the run has "
            f"{str(run['dataset_hash'])[:12]}…); restore the data, or start a new run",
            path=str(prepared.case_table.path))
    model = prepared.context.adapter.fingerprint().to_dict()
    changed = [key for key in _MODEL_KEYS
               if (model.get(key) or None) != (run.get(f"model_{key}") or None)]
    if changed:
        shown = ", ".join(f"{key} {run.get(f'model_{key}')!r} -> {model.get(key)!r}"
                          for key in changed)
        raise ResumeError(f"{where}: the model changed since the run started ({shown}); one "
                          "run never mixes two models: start a new run", field="model")
    if run["software_version"] != __version__:
        raise ResumeError(
            f"{where}: it was started by ALARA-QA {run['software_version']}, this is "
            f"{__version__}; one run never mixes two versions: resume it with "
            f"{run['software_version']}, or start a new run")


def _refuse_started_cohort_phase(store: Store, run_id: int) -> None:
    """Refuse when any row of the cohort phase (written after the last case) is stored."""
    found = []
    measured = store.measurements(run_id)
    if (measured["case_id"].isna() | measured["check_id"].str.startswith("baseline.")).any():
        found.append("cohort measurements")
    if store.verdicts(run_id)["case_id"].isna().any():
        found.append("cohort verdicts")
    details = store.details(run_id)
    if (details["case_id"].isna() & ~details["check_id"].isin(RUN_START_CHECK_IDS)).any():
        found.append("cohort details")
    errors = store.errors(run_id)
    if (errors["case_id"].isna() & errors["check_id"].notna()).any():
        found.append("cohort-check errors")
    if (store.validations(run_id)["scope"] != CASE_TABLE_SCOPE).any():
        found.append("the image-metadata validation")
    if found:
        raise ResumeError(
            f"run {run_id} cannot be resumed: it was interrupted during its cohort phase, "
            f"after all of its cases were stored ({', '.join(found)} already stored); "
            "completing it would duplicate cohort rows. Its case results stay in the store; "
            "start a new run with `qa run PROTOCOL`")
