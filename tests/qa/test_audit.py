"""Specification of the audit trail: who did what and why, with a mandatory reason.

Store-level tests run on SQLite and PostgreSQL (``store`` fixture, ``tests/qa/conftest.py``);
the end-to-end ``qa run --reason`` test runs a two-case precomputed cohort on SQLite.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from qa.audit import changed_levels, levels_of, tolerance_change_event
from qa.cli import main
from qa.errors import QAInputError
from qa.exitcodes import ExitCode
from qa.store import AUDIT_COLUMNS, Store, UnknownRunError
from tests.cohort_builders import write_precomputed_cohort
from tests.qa.store_helpers import new_run

UTC = dt.timezone.utc

PROTOCOL = """\
name: P
checks:
  - check: hu_accuracy
    id: hu
    tolerances:
      mae_hu: {tolerance: {max: 70}, action: {max: 90}}
    cohort:
      - {metric: mae_hu, statistic: mean, tolerance: {max: 65}, action: {max: 80}}
  - check: gamma
    options: {criteria: 3%/2mm}
baseline:
  levels:
    hu: {mae_hu: {tolerance: {max: 5}, action: {max: 10}}}
"""


def _finished(store: Store, **overrides) -> int:
    run_id = new_run(store, **overrides)
    store.finish_run(run_id, "complete", exit_code=20)
    return run_id


def test_approving_a_run_records_who_when_why_and_the_run_state(store):
    run_id = _finished(store)
    when = dt.datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    event_id = store.approve_run(run_id, operator=" physicist B ",
                                 reason=" ACTION on bone MAE explained: hip prosthesis ",
                                 at=when)
    events = store.audit_events()
    assert list(events.columns) == list(AUDIT_COLUMNS)
    event = events.iloc[0]
    assert (event.event_id, event.action, event.operator, event.reason, event.run_id,
            event.target, event.protocol_name) == (
        event_id, "run_approved", "physicist B", "ACTION on bone MAE explained: hip prosthesis",
        run_id, f"run {run_id}", "MR-to-sCT pelvis")
    assert event["at"] == when
    assert event.details == {"status": "complete", "exit_code": 20, "protocol_hash": "a" * 64,
                             "model_sha256": "c" * 64}
    assert store.verify().ok  # the event is chained like any record


def test_blank_reasons_and_unfinished_or_unknown_runs_are_refused(store):
    running = new_run(store)
    with pytest.raises(ValueError, match="approving a run needs a reason \\(e.g. --reason "):
        store.approve_run(running, operator="B", reason="   ")
    with pytest.raises(ValueError, match="the operator is blank; give --operator NAME"):
        store.approve_run(running, operator="", reason="ok")
    with pytest.raises(ValueError, match=f"run {running} is still running; approve it once"):
        store.approve_run(running, operator="B", reason="ok")
    with pytest.raises(UnknownRunError, match="run 99 not found"):
        store.approve_run(99, operator="B", reason="ok")
    assert store.audit_events().empty


def test_the_database_itself_refuses_blank_reasons_and_edits(store):
    run_id = _finished(store)
    store.approve_run(run_id, operator="B", reason="reviewed")
    with store._engine.connect() as connection:
        with pytest.raises(sa.exc.IntegrityError):
            with connection.begin():
                connection.exec_driver_sql(
                    "INSERT INTO audit_events (at, operator, action, target, reason, details) "
                    "VALUES ('2026-01-01 00:00:00', 'B', 'run_approved', 'run 1', ' ', '{}')")
        for statement in ("UPDATE audit_events SET reason = 'x'", "DELETE FROM audit_events"):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                with connection.begin():
                    connection.exec_driver_sql(statement)


def test_setting_a_baseline_is_an_audit_event_in_the_same_transaction(store):
    first = _finished(store)
    b1 = store.set_baseline(first, operator="A", reason="commissioning accepted")
    second = _finished(store)
    b2 = store.set_baseline(second, operator="A", reason="v2.1 re-commissioned")
    events = store.audit_events(protocol_name="MR-to-sCT pelvis")
    assert events["action"].tolist() == ["baseline_set"] * 2
    assert events["target"].tolist() == [f"baseline {b1}", f"baseline {b2}"]
    assert events["reason"].tolist() == ["commissioning accepted", "v2.1 re-commissioned"]
    assert events["details"].iloc[1]["previous_id"] == b1
    assert events["at"].tolist() == store.baselines()["set_at"].tolist()
    assert store.audit_events(protocol_name="other").empty


# ------------------------------------------------------------------- tolerance changes


def test_levels_are_read_by_path_and_numbers_compared_as_numbers():
    levels = levels_of(PROTOCOL)
    assert sorted(levels) == ["baseline.levels[hu][mae_hu]", "checks[hu].cohort[mae_hu.mean]",
                              "checks[hu].tolerances[mae_hu]"]
    assert levels["checks[hu].cohort[mae_hu.mean]"] == {"tolerance": {"max": 65.0},
                                                        "action": {"max": 80.0}}
    assert changed_levels(PROTOCOL, PROTOCOL.replace("max: 70}", "max: 70.0}")) == []
    assert changed_levels(PROTOCOL, PROTOCOL.replace("criteria: 3%/2mm", "criteria: 2%/2mm")
                          ) == []  # options are not levels
    assert changed_levels(PROTOCOL, PROTOCOL.replace("max: 70}", "max: 75}")) == [
        "checks[hu].tolerances[mae_hu]"]
    assert changed_levels(PROTOCOL, PROTOCOL.replace("max: 10}", "max: 12}").replace(
        "statistic: mean", "statistic: median")) == [
        "baseline.levels[hu][mae_hu]", "checks[hu].cohort[mae_hu.mean]",
        "checks[hu].cohort[mae_hu.median]"]


def test_a_run_with_changed_levels_needs_a_reason_which_is_recorded(store):
    assert tolerance_change_event(store, "P", "commissioning", PROTOCOL, None) is None  # first
    first = new_run(store, protocol_name="P", protocol_text=PROTOCOL)
    assert tolerance_change_event(store, "P", "commissioning", PROTOCOL, None) is None  # same
    looser = PROTOCOL.replace("max: 70}", "max: 75}")
    # periodic QA after commissioning starts a new phase with its own levels
    assert tolerance_change_event(store, "P", "periodic", looser, None) is None
    with pytest.raises(QAInputError, match=(
            "the tolerance or action levels of protocol 'P' \\(commissioning\\) differ from "
            f"those of its previous run {first} \\(checks\\[hu\\].tolerances\\[mae_hu\\]\\); "
            "a change of levels needs a reason: give it with `qa run --reason TEXT`")):
        tolerance_change_event(store, "P", "commissioning", looser, "  ")
    event = tolerance_change_event(store, "P", "commissioning", looser,
                                   "raised after the 2026 audit")
    second = new_run(store, protocol_name="P", protocol_text=looser,
                     audit={**event, "operator": "physicist"})
    [recorded] = store.audit_events(protocol_name="P").itertuples(index=False)
    assert (recorded.action, recorded.run_id, recorded.reason, recorded.operator) == (
        "tolerance_changed", second, "raised after the 2026 audit", "physicist")
    assert recorded.details == {
        "previous_run_id": first, "changed": ["checks[hu].tolerances[mae_hu]"],
        "previous": {"checks[hu].tolerances[mae_hu]": {"tolerance": {"max": 70.0},
                                                       "action": {"max": 90.0}}},
        "new": {"checks[hu].tolerances[mae_hu]": {"tolerance": {"max": 75.0},
                                                  "action": {"max": 90.0}}}}
    assert tolerance_change_event(store, "P", "commissioning", looser, None) is None  # run 2


def test_qa_run_refuses_changed_levels_without_reason_then_qa_audit_lists_it(tmp_path,
                                                                             capsys):
    url = f"sqlite:///{tmp_path / 'qa.db'}"
    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 10.0, "B": 20.0})
    assert main(["run", str(protocol), "--store", url]) == ExitCode.OK
    write_precomputed_cohort(tmp_path / "c", {"A": 10.0, "B": 20.0}, hu_tolerance=(15, 90))
    capsys.readouterr()
    assert main(["run", str(protocol), "--store", url]) == ExitCode.NOT_STARTED
    assert ("(commissioning) differ from those of its previous run 1 "
            "(checks[hu_accuracy].tolerances[mae_hu])") in capsys.readouterr().err
    assert main(["run", str(protocol), "--store", url, "--operator", "J. Doe",
                 "--reason", "tolerance tightened to 15 HU (committee 2026-03-02)"]
                ) == ExitCode.TOLERANCE
    assert main(["approve", "2", "--store", url, "--operator", "J. Doe", "--reason", " "]
                ) == ExitCode.NOT_STARTED
    assert "approving a run needs a reason" in capsys.readouterr().err
    assert main(["approve", "2", "--store", url, "--operator", "K. Roe",
                 "--reason", "case B reviewed"]) == 0
    assert main(["audit", "--store", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3].split()[:1] == ["event_id"]
    assert "tolerance_changed" in lines[-2] and "tolerance tightened to 15 HU" in lines[-2]
    assert "run_approved" in lines[-1] and "K. Roe" in lines[-1] and "run 2" in lines[-1]
    assert main(["verify", "--store", url]) == 0
