"""Specification of crash safety: a killed run keeps whole cases only, shows as incomplete,
and ``qa run --resume`` completes it with every case exactly once."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qa.runner
from qa.cli import main
from qa.exitcodes import ExitCode
from qa.lock import run_lock
from qa.resume import ResumeError, open_runs_of, resume_run, run_states
from qa.runner import run_protocol
from qa.store import Store
from tests.cohort_builders import write_precomputed_cohort

OFFSETS = {f"C{i:02d}": offset for i, offset in
           enumerate([10.0, -20.0, 80.0, 100.0, 35.0, -5.0], start=1)}


@pytest.fixture()
def sqlite_store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as opened:
        yield opened

# ``store`` (tests/qa/conftest.py): the test runs on SQLite and on PostgreSQL.


def _tables(store: Store, run_id: int) -> dict:
    """The result tables of a run, without run id, times and great_expectations' batch
    names (a per-process counter)."""
    validations = store.validations(run_id).drop(columns="run_id")
    validations["result"] = [{k: v for k, v in r.items() if k != "raw"}
                             for r in validations["result"]]
    return {"cases": store.cases(run_id),
            "measurements": store.measurements(run_id).drop(columns="run_id"),
            "verdicts": store.verdicts(run_id).drop(columns="run_id"),
            "details": store.details(run_id).drop(columns="run_id"),
            "errors": store.errors(run_id).drop(columns=["run_id", "created_at"]),
            "validations": validations}


def _assert_same_results(store: Store, resumed: int, reference: int) -> None:
    a, b = _tables(store, resumed), _tables(store, reference)
    for name in a:
        left, right = a[name].reset_index(drop=True), b[name].reset_index(drop=True)
        assert left.equals(right), f"table {name}: resumed run {resumed} differs from run " \
                                   f"{reference}"


def _row_counts(store: Store, run_id: int) -> dict[str, int]:
    return {name: len(frame) for name, frame in _tables(store, run_id).items()}


def _interrupt_after(monkeypatch, n_cases: int) -> None:
    """Make the next run stop (Ctrl-C) after ``n_cases`` cases have been computed."""
    real = qa.runner.case_results

    def interrupted(spec, context, cases, progress=None):
        for i, result in enumerate(real(spec, context, cases, progress)):
            if i == n_cases:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(qa.runner, "case_results", interrupted)


def _interrupted_run(store: Store, protocol: Path, monkeypatch, n_cases: int) -> int:
    with monkeypatch.context() as patch:
        _interrupt_after(patch, n_cases)
        with pytest.raises(KeyboardInterrupt):
            run_protocol(protocol, store)
    return int(store.runs()["run_id"].iloc[-1])


# ------------------------------------------------------------------------ whole cases only


def test_a_case_is_stored_whole_or_not_at_all(store):
    from checks.base import Measurement

    run_id = store.create_run(protocol_name="p", protocol_kind="commissioning",
                              protocol_hash="h", protocol_text="t", dataset_hash="d",
                              case_table_path="cases.csv",
                              model={"name": "m", "version": "1", "adapter": "precomputed"},
                              software_version="0", operator="o", hostname="h")
    with pytest.raises(OSError, match="disk full"), store.atomic():
        store.add_case(run_id, "C01", position=0, attributes={})
        store.add_measurements(run_id, "C01", "hu", "hu_accuracy",
                               [Measurement("mae_hu", 12.0, "HU")])
        raise OSError("disk full")  # the process fails before the case's last row
    assert store.cases(run_id).empty
    assert store.measurements(run_id).empty
    with pytest.raises(RuntimeError, match="do not nest"), store.atomic(), store.atomic():
        pass


# ------------------------------------------------------------------------------ resuming


def test_an_interrupted_run_stays_open_and_resumes_to_the_same_results(tmp_path, store,
                                                                        monkeypatch):
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS)
    run_id = _interrupted_run(store, protocol, monkeypatch, n_cases=2)
    assert store.run(run_id)["status"] == "running"
    assert list(store.cases(run_id)["case_id"]) == ["C01", "C02"]
    assert run_states(store).tolist() == ["interrupted"]

    outcome = resume_run(protocol, store, run_id, operator="physicist")
    assert outcome.run_id == run_id
    assert store.run(run_id)["status"] == "complete"
    resumed = outcome.summary.pop("resumed")
    assert resumed["cases_already_stored"] == 2 and resumed["operator"] == "physicist"

    reference = run_protocol(protocol, store)
    _assert_same_results(store, run_id, reference.run_id)
    assert outcome.summary == reference.summary
    assert outcome.exit_code == reference.exit_code
    assert list(store.cases(run_id)["case_id"]) == list(OFFSETS)  # each case once


def test_a_run_interrupted_in_its_cohort_phase_is_not_resumed(tmp_path, sqlite_store,
                                                              monkeypatch):
    store = sqlite_store
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS)

    def stop(*_args, **_kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(qa.runner, "run_cohort_checks", stop)  # after the cohort grades
        with pytest.raises(KeyboardInterrupt):
            run_protocol(protocol, store)
    run_id = int(store.runs()["run_id"].iloc[-1])
    before = _row_counts(store, run_id)
    with pytest.raises(ResumeError, match=f"run {run_id} cannot be resumed: it was "
                                          "interrupted during its cohort phase.*cohort "
                                          "verdicts.*start a new run"):
        resume_run(protocol, store, run_id)
    assert _row_counts(store, run_id) == before  # nothing written
    assert store.run(run_id)["status"] == "running"


def test_resume_refuses_a_finished_run_or_changed_protocol_or_data(tmp_path, sqlite_store,
                                                                  monkeypatch, capsys):
    store = sqlite_store
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS)
    run_id = _interrupted_run(store, protocol, monkeypatch, n_cases=0)
    before = _row_counts(store, run_id)

    edited = tmp_path / "edited.yaml"
    edited.write_text(protocol.read_text().replace("max: 70", "max: 75"))
    (tmp_path / "cohort" / "edited.yaml").write_text(edited.read_text())
    with pytest.raises(ResumeError, match="is not the one it started with"):
        resume_run(tmp_path / "cohort" / "edited.yaml", store, run_id)

    sct = tmp_path / "cohort" / "C03" / "sct.nii.gz"
    original = sct.read_bytes()
    sct.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ResumeError, match="or a file it names changed since the run started"):
        resume_run(protocol, store, run_id)
    sct.write_bytes(original)
    assert _row_counts(store, run_id) == before

    other = _interrupted_run(store, protocol, monkeypatch, n_cases=0)
    store.finish_run(other, "failed")
    with pytest.raises(ResumeError, match=f"run {other} is already failed .*start a new run"):
        resume_run(protocol, store, other)
    code = main(["run", str(protocol), "--store", store.url, "--resume", str(other)])
    assert code == ExitCode.NOT_STARTED
    assert f"run {other} is already failed" in capsys.readouterr().err


def test_a_running_run_whose_lock_is_held_is_not_called_interrupted(tmp_path, store,
                                                                    monkeypatch):
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS)
    run_id = _interrupted_run(store, protocol, monkeypatch, n_cases=0)
    protocol_hash = store.run(run_id)["protocol_hash"]
    with run_lock(store.url, protocol_hash, timeout_s=0):  # as a live `qa run` holds it
        assert run_states(store).tolist() == ["running"]
    assert run_states(store).tolist() == ["interrupted"]
    assert open_runs_of(store, protocol_hash) == [run_id]  # `qa run` names it in a warning
    assert open_runs_of(store, "0" * 64) == []


# ------------------------------------------------------------------- kill -9, end to end


def _command_protocol(folder: Path) -> Path:
    """The test cohort with a 'model' that is an external command copying the precomputed
    sCT; it sleeps 1 s per case while the file ``slow`` exists (the same executable either
    way, so the same model fingerprint)."""
    protocol = write_precomputed_cohort(folder, OFFSETS)
    model = folder / "copy_model.sh"
    model.write_text('#!/bin/sh\n[ -f slow ] && sleep 1\ncp "$1" "$2"\n', encoding="utf-8")
    model.chmod(model.stat().st_mode | stat.S_IEXEC)
    text = protocol.read_text(encoding="utf-8")
    text = text.replace(
        'model: {name: vendor-sct, version: "1.0", adapter: precomputed, output: sct}',
        'model: {name: copy-sct, version: "1.0", adapter: command, '
        'command: "./copy_model.sh {input} {output}", input: sct, output: sct_model}')
    text = text.replace("evaluated: sct", "evaluated: sct_model")
    protocol.write_text(text, encoding="utf-8")
    return protocol


@pytest.mark.slow  # a `qa run` subprocess killed mid-way, then resumed (~15 s on 2 cores)
def test_a_run_killed_mid_way_is_resumed_with_every_measurement_exactly_once(tmp_path,
                                                                             capsys):
    protocol = _command_protocol(tmp_path / "cohort")
    (tmp_path / "cohort" / "slow").touch()
    url = f"sqlite:///{tmp_path / 'qa.db'}"
    log = open(tmp_path / "run.log", "w", encoding="utf-8")  # noqa: SIM115
    with Store(url) as store:  # created (and migrated) before the run starts
        child = subprocess.Popen([sys.executable, "-m", "qa", "run", str(protocol),
                                  "--store", url], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                runs = store.runs()
                if not runs.empty and len(store.cases(int(runs["run_id"].iloc[-1]))) >= 2:
                    break
                assert child.poll() is None, (tmp_path / "run.log").read_text()
                assert time.monotonic() < deadline, "the run stored no case in 120 s"
                time.sleep(0.05)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait()
            log.close()
        assert child.returncode == -signal.SIGKILL
        run_id = int(runs["run_id"].iloc[-1])
        stored = list(store.cases(run_id)["case_id"])
        assert 2 <= len(stored) < len(OFFSETS)
        assert store.run(run_id)["status"] == "running"
        per_case = store.measurements(run_id).groupby("case_id").size()
        assert sorted(per_case.index) == sorted(stored)  # no half-written case
        rows_per_case = int(per_case.iloc[0])
        assert (per_case == rows_per_case).all()

    capsys.readouterr()
    assert main(["runs", "--store", url]) == 0
    listed = capsys.readouterr()
    row = next(line for line in listed.out.splitlines() if line.split()[0] == str(run_id))
    assert "incomplete" in row.split() and "running" not in row.split()
    assert f"complete it with `qa run PROTOCOL --resume {run_id}`" in listed.err

    (tmp_path / "cohort" / "slow").unlink()
    resumed_code = main(["run", str(protocol), "--store", url, "--resume", str(run_id)])
    reference_code = main(["run", str(protocol), "--store", url])
    assert resumed_code == reference_code == ExitCode.ACTION  # C04 at 100 HU is ACTION
    with Store(url) as store:
        reference = int(store.runs()["run_id"].iloc[-1])
        run = store.run(run_id)
        assert run["status"] == "complete"
        assert run["summary"]["resumed"]["cases_already_stored"] == len(stored)
        measured = store.measurements(run_id)
        assert len(measured) == len(OFFSETS) * rows_per_case
        assert not measured.duplicated(["case_id", "check_id", "metric", "label"]).any()
        assert sorted(store.cases(run_id)["case_id"]) == sorted(OFFSETS)
        _assert_same_results(store, run_id, reference)
