"""Specification of the store's tamper evidence (SHA-256 chain, ``Store.verify``, ``qa verify``).

Each tampering test removes the append-only guard of one table, as an administrator with
database access could, changes the data behind the store's back with raw SQL, and expects
``verify`` to name the record. Every test runs on SQLite and on PostgreSQL (``store`` fixture,
``tests/qa/conftest.py``). Expected digests are computed here with ``hashlib`` and ``json``
from the documented canonical form, independently of ``qa.store._ledger``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re

import pytest
import sqlalchemy as sa

from checks.base import Measurement
from qa.cli import main
from qa.store import Store
from qa.store._ledger import record_digest
from tests.qa.store_helpers import PRE_CHAIN_RUN_SQL, fill_run, new_run, upgrade_to

UTC = dt.timezone.utc
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _unguard(store: Store, table: str) -> None:
    """Drop the append-only triggers of ``table`` (what a tamperer would have to do)."""
    with store._engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            trigger = "runs_finish_once" if table == "runs" else f"{table}_append_only"
            connection.exec_driver_sql(f"DROP TRIGGER {trigger} ON {table}")
        else:
            for event in ("update", "delete"):
                connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_{event}")


def _raw(store: Store, statement: str, **params) -> None:
    with store._engine.begin() as connection:
        connection.execute(sa.text(statement), params)


def _scalar(store: Store, query: str, **params):
    with store._engine.connect() as connection:
        return connection.execute(sa.text(query), params).scalar_one()


def _finished_store(store: Store) -> int:
    run_id = fill_run(store)
    store.finish_run(run_id, "complete", exit_code=10, summary={"n": 3})
    store.set_baseline(run_id, operator="physicist A", reason="commissioning accepted")
    store.approve_run(run_id, operator="physicist B", reason="reviewed at committee")
    return run_id


# ------------------------------------------------------------------------ intact chain


def test_an_untouched_store_verifies_and_reports_its_head_hash(store):
    empty = store.verify()
    assert (empty.ok, empty.head_hash, empty.n_entries, empty.problems) == (True, None, 0, ())
    run_id = _finished_store(store)
    result = store.verify()
    assert result.ok and result.problems == () and result.notes == ()
    assert HEX64.match(result.head_hash)
    assert result.head_hash == _scalar(store, "SELECT hash FROM ledger ORDER BY seq DESC "
                                              "LIMIT 1")
    rows = sum(_scalar(store, f"SELECT count(*) FROM {table}") for table in (
        "runs", "cases", "measurements", "verdicts", "errors", "validations", "details",
        "baselines", "audit_events"))
    assert result.n_records == rows + 1 == 21  # + the finish of the run
    assert result.n_entries == _scalar(store, "SELECT count(*) FROM ledger")
    # every write appended one entry: the run, 3 cases, 2 measurement batches, verdicts,
    # details, 2 errors, validation, finish, baseline and its audit event, approval
    assert result.n_entries == 15
    assert store.audit_events(run_id=run_id)["action"].tolist() == ["baseline_set",
                                                                     "run_approved"]


def test_an_earlier_head_hash_anchors_the_chain(store):
    run_id = new_run(store)
    anchor = store.verify().head_hash
    store.add_case(run_id, "p01", position=0, attributes={})
    later = store.verify(anchors=[anchor])
    assert later.ok and later.head_hash != anchor
    forged = "f" * 64
    result = store.verify(anchors=[forged])
    assert not result.ok
    assert [p.kind for p in result.problems] == ["anchor_missing"]
    assert forged in str(result.problems[0])


def test_record_digest_is_the_documented_canonical_json():
    content = {"id": 7, "run_id": 1, "case_id": "p01", "value": 0.1 + 0.2, "label": "",
               "unit": "HU", "bound": math.nan, "note": None, "neg_zero": -0.0,
               "far": -math.inf, "ok": True,
               "at": dt.datetime(2026, 1, 2, 4, 5, 6, 7, tzinfo=dt.timezone(dt.timedelta(
                   hours=1)))}
    by_hand = ('{"content":{"at":"2026-01-02T03:05:06.000007Z","case_id":"p01",'
               '"far":"-inf","id":7,"label":"","neg_zero":"0.0","ok":true,"run_id":1,'
               '"unit":"HU","value":"0.30000000000000004"},"table":"measurements"}')
    assert record_digest("measurements", content) == hashlib.sha256(
        by_hand.encode("ascii")).hexdigest()


def test_sqlite_and_postgresql_give_the_same_digests(tmp_path, request):
    """The same writes give byte-identical ledger records on both backends."""
    base, engine = request.getfixturevalue("pg_database")
    with engine.connect() as connection:
        connection.exec_driver_sql("CREATE SCHEMA same_digests")
    records = []
    for url in (f"sqlite:///{tmp_path / 'qa.db'}",
                f"{base}?options=-csearch_path%3Dsame_digests"):
        with Store(url) as store:
            run_id = new_run(store, started_at=dt.datetime(2026, 1, 1, 8, tzinfo=UTC))
            store.add_case(run_id, "p01", position=0, attributes={"bmi": 24.5, "sex": "F"})
            store.add_measurements(run_id, "p01", "hu", "hu_accuracy", [
                Measurement("mae_hu", 0.1 + 0.2, "HU"), Measurement("me_hu", -0.0, "HU"),
                Measurement("hd95_mm", math.inf, "mm"), Measurement("x", math.nan, "1")])
            store.add_verdicts(run_id, [{"check_id": "hu", "metric": "mae_hu", "level": "OK",
                                         "case_id": "p01", "value": 0.3,
                                         "tolerance_max": 70.0}])
            store.add_details(run_id, "p01", "hu", {"histogram": [1, 2, math.nan]})
            store.finish_run(run_id, "complete", exit_code=0,
                             finished_at=dt.datetime(2026, 1, 1, 9, tzinfo=UTC))
            with store._engine.connect() as connection:
                records.append(connection.exec_driver_sql(  # runs: uid is a random uuid4
                    "SELECT table_name, records FROM ledger WHERE table_name <> 'runs' "
                    "ORDER BY seq").all())
            assert store.verify().ok
    assert [table for table, _ in records[0]] == [
        "cases", "measurements", "verdicts", "details", "run_finish"]
    assert records[0] == records[1]


def test_ledger_entries_roll_back_with_the_records_they_cover(store):
    run_id = new_run(store)
    entries = store.verify().n_entries
    with pytest.raises(RuntimeError, match="worker died"):
        with store.atomic():  # one transaction: the case and its measurements, or nothing
            store.add_case(run_id, "p01", position=0, attributes={})
            store.add_measurements(run_id, "p01", "hu", "hu", [Measurement("m", 1.0, "HU")])
            raise RuntimeError("worker died")
    after = store.verify()
    assert after.ok and after.n_entries == entries and store.cases(run_id).empty
    with store.atomic():
        store.add_case(run_id, "p01", position=0, attributes={})
        store.add_measurements(run_id, "p01", "hu", "hu", [Measurement("m", 1.0, "HU")])
    assert store.verify().n_entries == entries + 2


# --------------------------------------------------------------------------- tampering


def test_a_changed_measurement_is_named(store):
    run_id = _finished_store(store)
    target = _scalar(store, "SELECT id FROM measurements WHERE case_id = 'p02' AND label = ''")
    _unguard(store, "measurements")
    _raw(store, "UPDATE measurements SET value = 65.0 WHERE id = :id", id=target)
    result = store.verify()
    assert not result.ok
    [problem] = result.problems
    assert (problem.kind, problem.table, problem.run_id, problem.case_id) == (
        "content_changed", "measurements", run_id, "p02")
    assert str(problem).startswith(f"measurements id {target} (run {run_id}, case 'p02'): "
                                   "content changed since it was recorded (ledger entry ")


def test_a_deleted_verdict_is_named(store):
    run_id = _finished_store(store)
    target = _scalar(store, "SELECT id FROM verdicts WHERE level = 'TOLERANCE'")
    _unguard(store, "verdicts")
    _raw(store, "DELETE FROM verdicts WHERE id = :id", id=target)
    [problem] = store.verify().problems
    assert (problem.kind, problem.table, problem.record, problem.case_id) == (
        "record_removed", "verdicts", str(target), "p02")
    assert str(problem).startswith(f"verdicts id {target} (run {run_id}, case 'p02'): removed")


def test_a_deleted_ledger_entry_is_named(store):
    _finished_store(store)
    seq = _scalar(store, "SELECT seq FROM ledger WHERE table_name = 'verdicts'")
    _unguard(store, "ledger")
    _raw(store, "DELETE FROM ledger WHERE seq = :seq", seq=seq)
    problems = store.verify().problems
    assert str(problems[0]) == (f"ledger: entry {seq} removed (seq jumps from {seq - 1} to "
                                f"{seq + 1})")
    # the records it covered are now unaccounted for, each named
    assert {p.kind for p in problems[1:]} == {"not_in_ledger"}
    assert {p.table for p in problems[1:]} == {"verdicts"} and len(problems) == 1 + 3
    _raw(store, "DELETE FROM ledger WHERE seq = 1")
    assert str(store.verify().problems[0]) == ("ledger: entry 1 removed (the ledger starts at "
                                               "entry 2)")


def test_a_rewritten_or_reordered_ledger_entry_is_named(store):
    _finished_store(store)
    _unguard(store, "ledger")
    _raw(store, "UPDATE ledger SET run_id = 99 WHERE seq = 2")
    _raw(store, "UPDATE ledger SET seq = -seq WHERE seq IN (4, 5)")
    _raw(store, "UPDATE ledger SET seq = 9 + seq WHERE seq IN (-4, -5)")  # 4 <-> 5
    messages = [str(p) for p in store.verify().problems if p.table == "ledger"]
    assert messages[0] == ("ledger: entry 2 (cases) changed: its hash does not match its "
                           "content")
    assert messages[1:] == [
        "ledger: entry 4 (measurements) changed: its hash does not match its content",
        "ledger: entry 5 (cases) changed: its hash does not match its content",
        "ledger: entry 6 (measurements) does not follow entry 5: an entry was removed, "
        "inserted or reordered"]


def test_a_changed_baseline_reason_is_named(store):
    run_id = _finished_store(store)
    _unguard(store, "baselines")
    _raw(store, "UPDATE baselines SET reason = 'nobody asked'")
    [problem] = store.verify().problems
    assert (problem.kind, problem.table, problem.run_id) == ("content_changed", "baselines",
                                                             run_id)


def test_a_row_inserted_behind_the_store_is_named(store):
    run_id = _finished_store(store)
    _raw(store, "INSERT INTO errors (run_id, case_id, message, created_at) VALUES "
                "(:run, 'p01', 'planted', :at)", run=run_id,
         at="2026-01-01 00:00:00")
    [problem] = store.verify().problems
    assert problem.kind == "not_in_ledger" and problem.table == "errors"
    assert str(problem).endswith("(run 1, case 'p01'): not in the ledger (written behind the "
                                 "store's back)")


def test_a_changed_run_record_or_run_finish_is_named(store):
    run_id = _finished_store(store)
    _unguard(store, "runs")
    _raw(store, "UPDATE runs SET exit_code = 0 WHERE id = :id", id=run_id)
    [problem] = store.verify().problems
    assert (problem.kind, problem.table) == ("content_changed", "run_finish")
    assert str(problem).startswith(f"runs id {run_id} (the finish: status, finished_at, "
                                   "exit_code, summary): content changed")
    _raw(store, "UPDATE runs SET model_sha256 = :sha WHERE id = :id", sha="e" * 64, id=run_id)
    assert [str(p) for p in store.verify().problems][0] == (
        f"runs id {run_id}: content changed since it was recorded (ledger entry 1)")


def test_a_run_finished_behind_the_store_is_named(store):
    run_id = new_run(store)
    _unguard(store, "runs")
    _raw(store, "UPDATE runs SET status = 'complete' WHERE id = :id", id=run_id)
    [problem] = store.verify().problems
    assert (problem.kind, problem.table) == ("not_in_ledger", "run_finish")


def test_a_truncated_tail_is_caught_by_the_anchor_only(store):
    """Removing the newest entry and its record leaves a consistent chain: only a head
    hash kept elsewhere (the report prints it) shows the truncation."""
    run_id = _finished_store(store)
    anchor = store.verify().head_hash
    _unguard(store, "ledger")
    _unguard(store, "audit_events")
    _raw(store, "DELETE FROM audit_events WHERE action = 'run_approved'")
    _raw(store, "DELETE FROM ledger WHERE seq = (SELECT max(seq) FROM ledger)")
    assert store.verify().ok
    result = store.verify(anchors=[anchor])
    assert [p.kind for p in result.problems] == ["anchor_missing"]
    assert store.audit_events(run_id=run_id)["action"].tolist() == ["baseline_set"]


# --------------------------------------------------------------------------------- CLI


def test_qa_verify_exit_codes_and_lines(store, capsys):
    _finished_store(store)
    assert main(["verify", "--store", store.url]) == 0
    out = capsys.readouterr().out
    head = store.verify().head_hash
    assert f"chain intact: 15 ledger entries, 21 records; head {head}" in out
    _unguard(store, "measurements")
    _raw(store, "UPDATE measurements SET unit = 'mm' WHERE metric = 'me_hu'")
    assert main(["verify", "--store", store.url, "--anchor", head]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("measurements id 5 (run 1, case 'p01'): content changed")
    assert out[-1] == "chain BROKEN: 1 problem; head " + head


# --------------------------------------------------------------------- older stores


def test_a_0003_store_is_adopted_into_the_chain_when_upgraded(store_url):
    upgrade_to(store_url, "0003")
    engine = sa.create_engine(store_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(PRE_CHAIN_RUN_SQL)
        connection.exec_driver_sql("INSERT INTO cases (run_id, case_id, position, attributes, "
                                   "status) VALUES (1, 'p01', 0, '{}', 'ok')")
        connection.exec_driver_sql("INSERT INTO measurements (run_id, case_id, check_id, "
                                   "\"check\", metric, label, value, unit) VALUES "
                                   "(1, 'p01', 'hu', 'hu_accuracy', 'mae_hu', '', 55.5, 'HU')")
        connection.exec_driver_sql(
            "INSERT INTO baselines (run_id, protocol_name, model_name, model_version, set_at, "
            "operator, reason) VALUES (1, 'p', 'm', '1', '2026-01-02 00:00:00', 'op', 'first')")
    engine.dispose()

    with Store(store_url) as store:  # opening migrates to head and adopts the old rows
        result = store.verify()
        assert result.ok and result.n_records == 5  # run, its finish, case, measurement, baseline
        [note] = result.notes
        assert note.startswith("5 records written before the hash chain existed were adopted "
                               "into it on ")
        assert note.endswith("UTC; their integrity before that date is not evidenced")
        run_id = new_run(store)
        store.add_case(run_id, "p01", position=0, attributes={})
        assert store.verify().ok
        _unguard(store, "measurements")
        _raw(store, "UPDATE measurements SET value = 50.5 WHERE id = 1")
        [problem] = store.verify().problems
        assert str(problem).startswith("measurements id 1 (run 1, case 'p01'): content changed")
