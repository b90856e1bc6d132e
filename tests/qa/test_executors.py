"""Specification of the executors: where cases run never changes what a run stores."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import qa.executors
import qa.runner
from qa.cli import main
from qa.errors import ProtocolError
from qa.executors import (
    ExecutorSpec,
    _dask_case,
    _new_pool,
    cap_threads,
    case_results,
    worker_context,
    worker_threads,
)
from qa.exitcodes import ExitCode
from qa.runner import run_protocol
from qa.store import Store
from tests.cohort_builders import write_precomputed_cohort

OFFSETS = {"C01": 10.0, "C02": -20.0, "C03": 80.0, "C04": 100.0}


@pytest.fixture()
def store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as opened:
        yield opened


def _tables(store: Store, run_id: int) -> dict:
    """Every stored table of a run that an executor could disturb (run id dropped)."""
    errors = store.errors(run_id).drop(columns=["run_id", "created_at"])
    validations = store.validations(run_id).drop(columns="run_id")
    # great_expectations' raw output names its batches with a per-process counter
    validations["result"] = [{k: v for k, v in r.items() if k != "raw"}
                             for r in validations["result"]]
    return {"cases": store.cases(run_id),
            "measurements": store.measurements(run_id).drop(columns="run_id"),
            "verdicts": store.verdicts(run_id).drop(columns="run_id"),
            "details": store.details(run_id).drop(columns="run_id"),
            "errors": errors,
            "validations": validations}


def _assert_same_tables(store: Store, first: int, second: int) -> None:
    a, b = _tables(store, first), _tables(store, second)
    for name in a:
        left, right = a[name].reset_index(drop=True), b[name].reset_index(drop=True)
        assert left.equals(right), f"table {name} differs between run {first} and {second}"


def test_arrival_order_does_not_change_what_is_stored(tmp_path, store, monkeypatch):
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS)
    in_order = run_protocol(protocol, store).run_id
    real = qa.runner.case_results

    def reversed_arrival(spec, context, cases, progress=None):
        yield from reversed(list(real(spec, context, cases, progress)))

    monkeypatch.setattr(qa.runner, "case_results", reversed_arrival)
    reversed_run = run_protocol(protocol, store).run_id
    _assert_same_tables(store, in_order, reversed_run)
    assert list(store.cases(reversed_run)["case_id"]) == list(OFFSETS)


def test_local_executor_yields_every_case_once(tmp_path):
    from qa.runner import prepare_run

    prepared = prepare_run(write_precomputed_cohort(tmp_path / "cohort", OFFSETS))
    results = list(case_results(ExecutorSpec(), prepared.context, prepared.case_table.cases,
                                progress=False))
    assert sorted(r.case_id for r in results) == sorted(OFFSETS)
    assert all(not r.errors and r.records for r in results)


@pytest.mark.slow  # starts a Dask LocalCluster of 2 worker processes (~10-20 s on 2 cores)
def test_dask_executor_stores_the_same_results_as_the_local_one(tmp_path, store):
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS)
    local = run_protocol(protocol, store).run_id
    dask = run_protocol(protocol, store, executor="dask", workers=2).run_id
    _assert_same_tables(store, local, dask)
    assert store.run(dask)["status"] == "complete"
    assert store.run(dask)["summary"] == store.run(local)["summary"]


@pytest.mark.slow  # spawns worker pools 2-3 times (~10-30 s on 2 busy cores)
def test_a_case_that_kills_its_worker_process_is_an_error_and_the_others_go_on(tmp_path,
                                                                             store):
    import torch

    from tests.qa._crashing_model import build

    offsets = {"C01": 10.0, "C02": -20.0, "C03": 100.0}  # C03: bone at 800 HU, crashes
    protocol = write_precomputed_cohort(tmp_path / "cohort", offsets)
    torch.save(build().state_dict(), tmp_path / "cohort" / "model.pt")
    text = protocol.read_text(encoding="utf-8").replace(
        'model: {name: vendor-sct, version: "1.0", adapter: precomputed, output: sct}',
        'model: {name: copy-or-crash, version: "1", adapter: torch, path: model.pt, '
        'entrypoint: "tests.qa._crashing_model:build", input: sct, output: sct_model}')
    protocol.write_text(text.replace("evaluated: sct", "evaluated: sct_model"),
                        encoding="utf-8")
    outcome = run_protocol(protocol, store, workers=2)
    assert outcome.exit_code == ExitCode.ERRORS
    assert store.run(outcome.run_id)["status"] == "complete"
    cases = store.cases(outcome.run_id).set_index("case_id")["status"].to_dict()
    assert cases == {"C01": "ok", "C02": "ok", "C03": "error"}
    errors = store.errors(outcome.run_id)
    assert errors["case_id"].tolist() == ["C03"]
    assert "the worker process computing this case failed: BrokenProcessPool" in \
        errors["message"].iloc[0]
    measured = store.measurements(outcome.run_id)
    assert set(measured["case_id"].dropna()) == {"C01", "C02"}


def test_executor_options_are_checked_once():
    assert ExecutorSpec().describe() == "this process"
    assert ExecutorSpec("dask", 2).describe() == "dask, LocalCluster of 2 worker(s)"
    with pytest.raises(ValueError, match="executor 'spark' is not one of local, dask"):
        ExecutorSpec("spark")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        ExecutorSpec("dask", 0)
    with pytest.raises(ValueError, match="a scheduler address needs the dask executor"):
        ExecutorSpec("local", 1, "tcp://127.0.0.1:8786")


def test_cli_refuses_a_scheduler_without_the_dask_executor(tmp_path, capsys):
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS)
    code = main(["run", str(protocol), "--store", f"sqlite:///{tmp_path / 'qa.db'}",
                 "--scheduler", "tcp://127.0.0.1:8786"])
    assert code == ExitCode.USAGE
    assert "--scheduler needs --executor dask" in capsys.readouterr().err


def test_a_worker_refuses_a_protocol_edited_during_the_run(tmp_path):
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS)
    with pytest.raises(ProtocolError, match="changed since the run started"):
        worker_context(str(protocol), "0" * 64, threads=1)


# ------------------------------------------------------------------------- thread caps


@pytest.fixture()
def restore_threads():
    """numba's (this thread) and torch's thread counts, restored after the test."""
    import numba
    import torch

    numba_before, torch_before = numba.get_num_threads(), torch.get_num_threads()
    yield numba, torch
    numba.set_num_threads(numba_before)
    torch.set_num_threads(torch_before)


def test_worker_threads_share_the_cores(monkeypatch):
    for cores, workers, threads in [(16, 2, 8), (16, 3, 5), (2, 2, 1), (2, 4, 1), (8, 1, 8)]:
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert worker_threads(workers) == threads
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: 1 core
    assert worker_threads(2) == 1


def test_each_pool_worker_caps_numba_and_torch_to_its_share_of_the_cores(tmp_path):
    from qa.runner import prepare_run
    from tests.qa._thread_probe import threads_seen

    prepared = prepare_run(write_precomputed_cohort(tmp_path / "cohort", {"C01": 10.0}))
    threads = worker_threads(2)  # what `qa run --workers 2` gives each worker
    with _new_pool(2, prepared.context, threads) as pool:
        seen = [future.result() for future in [pool.submit(threads_seen) for _ in range(4)]]
    for worker in seen:
        # numba imported after the initialiser (as a check imports it): capped on import;
        # torch imported during a case: capped before the next one
        assert worker["pool_threads"] == threads
        assert worker["numba"] == worker["numba_pool"] == threads
        assert worker["torch"] == threads
    if (os.cpu_count() or 1) >= 2:
        assert threads < (os.cpu_count() or 1)  # a cap: numba would take every core


def test_cap_threads_caps_imported_modules_and_never_imports_them(monkeypatch,
                                                                  restore_threads):
    numba, torch = restore_threads
    cap_threads(1)
    assert numba.get_num_threads() == 1 and torch.get_num_threads() == 1
    cap_threads(0)  # at least 1
    assert numba.get_num_threads() == 1
    # numba not imported yet: its environment variable, a smaller one kept
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    cap_threads(3)
    assert os.environ["NUMBA_NUM_THREADS"] == "3"
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    cap_threads(3)
    assert os.environ["NUMBA_NUM_THREADS"] == "2"
    monkeypatch.setenv("NUMBA_NUM_THREADS", "16")
    cap_threads(3)
    assert os.environ["NUMBA_NUM_THREADS"] == "3"


def test_the_dask_task_wrapper_caps_the_thread_that_runs_the_case(tmp_path, monkeypatch,
                                                                   restore_threads):
    from qa.runner import prepare_run

    numba, torch = restore_threads
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    prepared = prepare_run(write_precomputed_cohort(tmp_path / "cohort", {"C01": 10.0}))
    monkeypatch.setattr(qa.executors, "process_case", lambda context, case: (
        numba.get_num_threads(), torch.get_num_threads()))
    protocol = prepared.context.protocol
    seen = _dask_case(prepared.case_table.cases[0], protocol_path=str(protocol.path),
                      protocol_sha256=protocol.sha256, threads=1, trust_model=False)
    assert seen == (1, 1)


def test_gamma_values_do_not_depend_on_the_thread_count(restore_threads):
    from checks.gamma import gamma_index
    from qa.volume import Volume

    numba, _ = restore_threads
    rng = np.random.default_rng(7)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in (12, 14, 16)), indexing="ij")
    dose = 2.0 * np.exp(-((z - 6) ** 2 + (y - 7) ** 2 + (x - 8) ** 2) / 40.0)
    reference = Volume(dose, (2.0, 2.0, 2.0))
    evaluated = reference.with_array(np.roll(dose, 1, axis=2) * (1 + rng.normal(0, 0.01,
                                                                               dose.shape)))
    results = []
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(threads)
        results.append(gamma_index(reference, evaluated, 2.0, 2.0, backend="numba").gamma)
    assert all(np.array_equal(results[0], other, equal_nan=True) for other in results[1:])
