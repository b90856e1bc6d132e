"""Specification of the results store (qa.store), on SQLite and on PostgreSQL.

PostgreSQL tests run against the server at 127.0.0.1:5432 (trust auth, database ``test``): one
fresh database per test session, one fresh schema per test; they are skipped when psycopg or
the server is missing. Expected values are written out by hand or computed with plain Python
(``sorted``), independently of the store's SQL.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
import time
import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import qa.store._engine as store_engine
from checks.base import Measurement
from qa.store import RUN_COLUMNS, Store, StoreError, UnknownRunError
from qa.store._schema import metadata
from tests.qa.store_helpers import PG_PASSWORD, fill_run, new_run, upgrade_to

UTC = dt.timezone.utc
TABLES = ("runs", "cases", "measurements", "verdicts", "errors", "validations", "details",
          "baselines", "ledger", "audit_events")
HEAD_REVISION = "0004"


# --------------------------------------------------------------------------- fixtures


# ------------------------------------------------------------------------------ tests


def test_open_migrates_empty_database_to_tables_matching_the_code(store):
    with store._engine.connect() as connection:
        names = set(sa.inspect(connection).get_table_names())
        version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), metadata)
    assert names == {*TABLES, "alembic_version"}
    assert version == [(HEAD_REVISION,)]
    assert differences == []  # the migrations and qa/store/_schema.py describe one schema
    assert store.runs().empty and list(store.runs().columns) == list(RUN_COLUMNS)


def test_reopen_keeps_data_and_does_not_run_migrations_again(store_url, monkeypatch):
    with Store(store_url) as first:
        run_id = new_run(first)

    def refuse(*args, **kwargs):
        raise AssertionError("upgrade must not run on a database already at head")

    monkeypatch.setattr(store_engine.command, "upgrade", refuse)
    with Store(store_url) as second:
        assert second.run(run_id)["protocol_name"] == "MR-to-sCT pelvis"


def test_round_trip_of_everything_written(store):
    run_id = fill_run(store)
    cases = store.cases(run_id)
    assert list(cases.columns) == ["case_id", "position", "status", "sex", "bmi", "age"]
    assert cases["case_id"].tolist() == ["p01", "p02", "p03"]
    assert cases["status"].tolist() == ["ok", "ok", "error"]
    assert cases["bmi"].iloc[0] == 24.5 and cases["bmi"].isna().tolist()[1:] == [True, True]
    assert cases["age"].iloc[1] == 61

    got = store.measurements(run_id)
    assert list(got.columns) == ["run_id", "case_id", "check_id", "check", "metric", "label",
                                 "value", "unit"]
    assert list(zip(got["case_id"], got["metric"], got["label"], strict=True)) == [
        ("p01", "mae_hu", ""), ("p01", "mae_hu", "bone"), ("p01", "me_hu", ""),
        ("p02", "mae_hu", ""), ("p02", "mae_hu", "bone")]
    np.testing.assert_array_equal(got["value"], [55.25, np.nan, -np.inf, 71.5, 180.0])
    assert set(got["run_id"]) == {run_id} and set(got["check"]) == {"hu_accuracy"}

    verdicts = store.verdicts(run_id)
    assert verdicts["case_id"].tolist()[:2] == ["p01", "p02"]
    assert pd.isna(verdicts["case_id"].iloc[2])  # cohort aggregate comes last
    assert verdicts["level"].tolist() == ["OK", "TOLERANCE", "OK"]
    assert verdicts["statistic"].tolist() == ["value", "value", "mean"]
    np.testing.assert_array_equal(verdicts["value"], [55.25, 71.5, 63.375])
    np.testing.assert_array_equal(verdicts["action_max"], [90.0, 90.0, np.nan])
    assert verdicts["message"].tolist() == ["", "above 70 HU", ""]

    details = store.details(run_id, check_id="hu", name="histogram")
    assert details["payload"].tolist() == [
        {"edges_hu": [-100.0, 0.0, 100.0], "counts": [3, None]}]
    assert store.details(run_id)["name"].tolist() == ["histogram", "n_voxels"]
    assert store.details(run_id)["payload"].tolist()[1] == 12

    errors = store.errors(run_id)
    assert errors["case_id"].tolist()[0] == "p03" and pd.isna(errors["case_id"].iloc[1])
    first = errors.iloc[0]
    assert (first["check_id"], first["role"], first["path"], first["field"]) == (
        "hu", "ct", "p03/ct", "ImagePosition")
    assert first["message"] == "cannot read the CT series; check the path"  # location in columns
    assert str(errors["created_at"].dt.tz) == "UTC"

    validations = store.validations(run_id)
    assert validations["success"].tolist() == [True]
    assert validations["statistics"].iloc[0] == {"evaluated_expectations": 4,
                                                 "success_percent": 100.0}
    assert validations["result"].iloc[0]["results"] == [{"success": True}]


def test_json_columns_hold_strict_json(store):
    run_id = fill_run(store)
    store.finish_run(run_id, "complete", summary={"mean_mae_hu": math.nan, "n": 3})
    with store._engine.connect() as connection:
        texts = connection.exec_driver_sql(
            "SELECT payload FROM details UNION ALL SELECT summary FROM runs").scalars().all()

    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")

    assert [json.loads(text, parse_constant=refuse) for text in texts][-1] == {
        "mean_mae_hu": None, "n": 3}


def test_run_record_with_utc_times_and_model_fingerprint(store):
    paris_summer = dt.timezone(dt.timedelta(hours=2))
    started = dt.datetime(2025, 6, 1, 14, 30, 0, 123456, tzinfo=paris_summer)
    run_id = new_run(store, started_at=started)
    record = store.run(run_id)
    assert list(record) == list(RUN_COLUMNS)
    assert record["started_at"] == dt.datetime(2025, 6, 1, 12, 30, 0, 123456, tzinfo=UTC)
    assert record["started_at"].tzinfo == UTC and record["finished_at"] is None
    assert (record["model_name"], record["model_version"], record["model_adapter"],
            record["model_sha256"]) == ("mr2ct", "2.1", "torch", "c" * 64)
    assert record["model_details"] == {"path": "models/mr2ct.ts", "input": "mr"}
    assert record["protocol_text"] == "name: MR-to-sCT pelvis\nchecks: []\n"
    assert record["status"] == "running" and uuid.UUID(record["uid"]).version == 4


def test_finish_run_once_then_refuses_any_write(store):
    run_id = fill_run(store)
    end = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.finish_run(run_id, "incomplete", exit_code=2, summary={"errors": 1}, finished_at=end)
    record = store.run(run_id)
    assert (record["status"], record["exit_code"], record["summary"], record["finished_at"]) == (
        "incomplete", 2, {"errors": 1}, end)
    with pytest.raises(ValueError, match="run .* is already finished \\(incomplete at "
                                         "2030-01-02 03:04:05 UTC\\).*a rerun is a new run"):
        store.finish_run(run_id, "complete")
    with pytest.raises(ValueError, match="already finished"):
        store.add_error(run_id, "late")
    assert store.run(run_id)["status"] == "incomplete"


def test_finish_run_rejects_bad_status_and_time(store):
    run_id = new_run(store, started_at=dt.datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="status 'running' is not one of complete"):
        store.finish_run(run_id, "running")
    with pytest.raises(ValueError, match="is before started_at"):
        store.finish_run(run_id, "complete", finished_at=dt.datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="finished_at 2026-01-01T00:00:00 has no time zone"):
        store.finish_run(run_id, "complete", finished_at=dt.datetime(2026, 1, 1))


def test_unknown_run_id_names_the_store_and_the_remedy(store):
    shown = repr(store)[len("Store('"):-2]
    expected = f"run 42 not found in store {shown}; `qa runs` lists them"
    for call in (lambda: store.run(42), lambda: store.measurements(42),
                 lambda: store.add_case(42, "p01", position=0, attributes={}),
                 lambda: store.finish_run(42, "complete")):
        with pytest.raises(UnknownRunError) as caught:
            call()
        assert str(caught.value) == expected
        assert isinstance(caught.value, KeyError)


def test_password_is_masked_in_repr(store):
    assert PG_PASSWORD not in repr(store)
    if store.url.startswith("postgresql"):
        assert ":***@" in repr(store) and PG_PASSWORD in store.url


def test_runs_lists_every_run_oldest_first(store):
    ids = [new_run(store, protocol_name=f"periodic {i}", protocol_kind="periodic")
           for i in range(3)]
    store.finish_run(ids[1], "failed", exit_code=1)
    listed = store.runs()
    assert list(listed.columns) == list(RUN_COLUMNS)
    assert listed["run_id"].tolist() == sorted(ids) == ids
    assert listed["protocol_name"].tolist() == ["periodic 0", "periodic 1", "periodic 2"]
    assert listed["status"].tolist() == ["running", "failed", "running"]
    assert listed["exit_code"].iloc[1] == 1 and pd.isna(listed["exit_code"].iloc[0])
    assert str(listed["started_at"].dt.tz) == "UTC"
    assert new_run(store) == ids[-1] + 1  # a rerun is a new run


def test_order_follows_case_position_whatever_the_insertion_order(store):
    rng = np.random.default_rng(20250601)
    run_id = new_run(store)
    case_ids = [f"case-{i}" for i in range(8)]
    positions = rng.permutation(8)
    for index in rng.permutation(8):
        store.add_case(run_id, case_ids[index], position=int(positions[index]), attributes={})
    # Mixed case and punctuation: PostgreSQL locale collations would sort these differently.
    keys = [("hu", "mae_hu", "Bone"), ("hu", "mae_hu", "_air"), ("hu", "mae_hu", "bone"),
            ("Gamma", "pass_rate_percent", "3%/2mm"), ("gamma", "pass_rate_percent", "2%/2mm")]
    for index in rng.permutation(8):
        for key_index in rng.permutation(len(keys)):
            check_id, metric, label = keys[key_index]
            store.add_measurements(run_id, case_ids[index], check_id, check_id.lower(),
                                   [Measurement(metric, float(index), "HU", label)])
    expected = sorted(((int(positions[i]), c, m, lab, case_ids[i])
                       for i in range(8) for c, m, lab in keys))
    got = store.measurements(run_id)
    assert list(zip(got["case_id"], got["check_id"], got["metric"], got["label"],
                    strict=True)) == [(case, c, m, lab) for _, c, m, lab, case in expected]
    assert store.cases(run_id)["case_id"].tolist() == [
        case for _, case in sorted(zip(positions.tolist(), case_ids, strict=True))]
    assert store.measurements(run_id, check_id="gamma")["label"].tolist() == ["2%/2mm"] * 8
    # Cases that could not be placed in the table share position -1: then by case id.
    for case_id in ("excluded-b", "excluded-a"):
        store.add_case(run_id, case_id, position=-1, attributes={}, status="error")
        store.add_measurements(run_id, case_id, "hu", "hu", [Measurement("m", 0.0, "HU")])
    assert store.cases(run_id)["case_id"].tolist()[:3] == ["excluded-a", "excluded-b",
                                                           expected[0][-1]]
    assert store.measurements(run_id)["case_id"].tolist()[:2] == ["excluded-a", "excluded-b"]


def test_database_refuses_updates_and_deletes(store):
    run_id = fill_run(store)
    # baselines and audit_events are empty here: see the baseline and audit tests
    tables = [table for table in TABLES if table not in ("baselines", "audit_events")]
    statements = [f"UPDATE {table} SET run_id = run_id" for table in tables[1:]]
    statements += [f"DELETE FROM {table}" for table in tables]
    statements += ["UPDATE runs SET protocol_hash = 'forged'"]
    with store._engine.connect() as connection:
        for statement in statements:
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                with connection.begin():
                    connection.exec_driver_sql(statement)
    store.finish_run(run_id, "complete")
    with store._engine.connect() as connection:
        with pytest.raises(sa.exc.DatabaseError, match="only finish_run may update a run"):
            with connection.begin():
                connection.exec_driver_sql("UPDATE runs SET status = 'failed'")
    assert len(store.measurements(run_id)) == 5 and store.run(run_id)["status"] == "complete"


def test_input_errors_say_what_to_do(store):
    run_id = new_run(store)
    store.add_case(run_id, "p01", position=0, attributes={})
    with pytest.raises(ValueError, match="run .* has no case 'p09'; call add_case first"):
        store.add_measurements(run_id, "p09", "hu", "hu_accuracy", [Measurement("m", 1, "HU")])
    with pytest.raises(ValueError, match="already has case 'p01' \\(position 0\\); each case"):
        store.add_case(run_id, "p01", position=3, attributes={})
    store.add_measurements(run_id, "p01", "hu", "hu_accuracy", [Measurement("mae_hu", 1, "HU")])
    with pytest.raises(ValueError, match="measurements: case 'p01', check 'hu'.*once per run"):
        store.add_measurements(run_id, "p01", "hu", "hu_accuracy",
                               [Measurement("mae_hu", 2, "HU")])
    with pytest.raises(ValueError, match="verdict 0 \\(hu.mae_hu\\): level 'WARN' is not one"):
        store.add_verdicts(run_id, [{"check_id": "hu", "metric": "mae_hu", "level": "WARN"}])
    with pytest.raises(ValueError, match="verdict 0: missing level"):
        store.add_verdicts(run_id, [{"check_id": "hu", "metric": "mae_hu"}])
    with pytest.raises(ValueError, match="protocol_kind 'weekly' is not one of"):
        new_run(store, protocol_kind="weekly")
    with pytest.raises(ValueError, match="model is missing version; give them in the"):
        new_run(store, model={"name": "m", "adapter": "torch"})
    with pytest.raises(ValueError, match="started_at 2025-01-01T00:00:00 has no time zone"):
        new_run(store, started_at=dt.datetime(2025, 1, 1))
    with pytest.raises(TypeError, match="details\\['mask'\\] of check 'hu', case 'p01' cannot"):
        store.add_details(run_id, "p01", "hu", {"mask": object()})
    assert len(store.measurements(run_id)) == 1 and store.verdicts(run_id).empty


def test_export_csv_round_trips(store, tmp_path):
    run_id = fill_run(store)
    store.finish_run(run_id, "complete", exit_code=0, summary={"n_cases": 3})
    written = store.export(run_id, tmp_path / "export", format="csv")
    assert [path.name for path in written] == [f"{t}.csv" for t in (
        "runs", "cases", "measurements", "verdicts", "errors", "details", "validations")]
    measurements = pd.read_csv(tmp_path / "export" / "measurements.csv").fillna({"label": ""})
    pd.testing.assert_frame_equal(measurements, store.measurements(run_id), check_dtype=False)
    verdicts = pd.read_csv(tmp_path / "export" / "verdicts.csv")
    np.testing.assert_array_equal(verdicts["value"], store.verdicts(run_id)["value"])
    runs = pd.read_csv(tmp_path / "export" / "runs.csv")
    assert runs["run_id"].tolist() == [run_id]
    assert json.loads(runs["summary"].iloc[0]) == {"n_cases": 3}
    assert runs["protocol_text"].iloc[0] == "name: MR-to-sCT pelvis\nchecks: []\n"
    assert pd.Timestamp(runs["finished_at"].iloc[0]) == store.run(run_id)["finished_at"]
    cases = pd.read_csv(tmp_path / "export" / "cases.csv")
    assert cases["case_id"].tolist() == ["p01", "p02", "p03"]
    details = pd.read_csv(tmp_path / "export" / "details.csv")
    assert json.loads(details["payload"].iloc[0])["counts"] == [3, None]


def test_export_parquet_round_trips(store, tmp_path):
    pytest.importorskip("pyarrow")
    run_id = fill_run(store)
    store.add_case(run_id, "p04", position=3, attributes={"sex": 1})  # mixed types → text
    store.export(run_id, tmp_path / "export", format="parquet")
    measurements = pd.read_parquet(tmp_path / "export" / "measurements.parquet")
    pd.testing.assert_frame_equal(measurements, store.measurements(run_id), check_dtype=False)
    cases = pd.read_parquet(tmp_path / "export" / "cases.parquet")
    assert cases["sex"].tolist() == ["M", "F", "M", "1"]


def test_export_refusals(store, tmp_path, monkeypatch):
    run_id = new_run(store)
    with pytest.raises(ValueError, match="export format 'xlsx' is not one of"):
        store.export(run_id, tmp_path, format="xlsx")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        store.export(run_id, tmp_path / "file")
    with pytest.raises(UnknownRunError, match="run 99 not found"):
        store.export(99, tmp_path / "out")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match="pip install 'alara-qa\\[export\\]'"):
        store.export(run_id, tmp_path / "out", format="parquet")


def test_url_from_qa_store_variable(store_url, monkeypatch):
    monkeypatch.setenv("QA_STORE", store_url)
    with Store() as from_env:
        assert from_env.url == store_url
        run_id = new_run(from_env)
    with Store(store_url) as again:
        assert again.run(run_id)["protocol_name"] == "MR-to-sCT pelvis"


def test_sqlite_default_is_qa_db_in_the_current_folder(tmp_path, monkeypatch):
    """SQLite only by nature: the default URL and relative paths are SQLite files."""
    monkeypatch.delenv("QA_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    with Store() as default:
        assert default.url == f"sqlite:///{tmp_path / 'qa.db'}" and (tmp_path / "qa.db").exists()
    with Store("sqlite:///relative.db") as relative:
        assert relative.url == f"sqlite:///{tmp_path / 'relative.db'}"


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path):
    """SQLite only by nature (PRAGMAs); the PostgreSQL side of writer serialisation is in
    test_a_write_transaction_holds_the_write_lock."""
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as opened:
        with opened._engine.connect() as connection:
            pragmas = [connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                       for name in ("journal_mode", "busy_timeout", "foreign_keys")]
    assert pragmas == ["wal", 30000, 1]


def test_a_write_transaction_holds_the_write_lock(store):
    """While one write transaction is open, another writer waits (here: gives up after
    0.1 s): SQLite BEGIN IMMEDIATE; PostgreSQL LOCK TABLE ledger IN EXCLUSIVE MODE."""
    run_id = new_run(store)
    other = sa.create_engine(store.url, isolation_level="AUTOCOMMIT")
    with store._write_connection() as connection, other.connect() as second:
        connection.execute(sa.text("SELECT 1"))
        if store.url.startswith("sqlite"):
            second.exec_driver_sql("PRAGMA busy_timeout=100")
            attempt = "BEGIN IMMEDIATE"
        else:
            second.exec_driver_sql("SET lock_timeout = '100ms'")
            second.exec_driver_sql("BEGIN")
            attempt = "LOCK TABLE ledger IN EXCLUSIVE MODE"
        with pytest.raises(sa.exc.OperationalError, match="locked|lock timeout"):
            second.exec_driver_sql(attempt)
        if not store.url.startswith("sqlite"):
            second.exec_driver_sql("ROLLBACK")
        assert second.exec_driver_sql("SELECT count(*) FROM runs").scalar() == 1  # reads go on
    other.dispose()
    store.add_case(run_id, "p01", position=0, attributes={})  # the lock is released


def test_unusable_locations_raise_store_error(tmp_path):
    with pytest.raises(StoreError, match="cannot open the results store sqlite:///.*missing/"
                                         "qa.db.*check that the folder exists"):
        Store(f"sqlite:///{tmp_path / 'missing' / 'qa.db'}")
    with pytest.raises(StoreError, match="(?s)cannot open the results store postgresql\\+psycopg://"
                                         "qa:\\*\\*\\*@127.0.0.1:1/qa: .*the server is up"):
        Store("postgresql+psycopg://qa:secret@127.0.0.1:1/qa")


def test_a_store_of_a_newer_version_is_refused(store_url):
    Store(store_url).close()
    engine = sa.create_engine(store_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(StoreError, match="at schema revision 9999, which this version of "
                                         "ALARA-QA does not know"):
        Store(store_url)


class _BusyCursor:
    """A sqlite3 cursor stand-in whose WAL conversion is refused ``busy`` times, as SQLite
    refuses it (at once, without its busy handler) while another connection holds the file."""

    def __init__(self, busy: int) -> None:
        self.busy, self.mode, self.calls = busy, "delete", 0

    def execute(self, sql: str):
        import sqlite3

        if sql == "PRAGMA journal_mode=WAL":
            self.calls += 1
            if self.calls <= self.busy:
                raise sqlite3.OperationalError("database is locked")
            self.mode = "wal"
        return self

    def fetchone(self):
        return (self.mode,)


def test_the_wal_conversion_of_a_new_sqlite_store_is_retried_while_the_file_is_busy():
    cursor = _BusyCursor(busy=3)
    store_engine._use_wal(cursor, timeout_s=5.0)
    assert cursor.mode == "wal" and cursor.calls == 4


def test_the_wal_conversion_gives_up_after_the_busy_timeout_with_sqlites_error():
    import sqlite3

    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        store_engine._use_wal(_BusyCursor(busy=10**9), timeout_s=0.05)


def test_a_store_already_in_wal_mode_is_not_converted_again():
    cursor = _BusyCursor(busy=10**9)
    cursor.mode = "wal"
    store_engine._use_wal(cursor, timeout_s=0.0)  # no conversion attempted, so no error
    assert cursor.calls == 0


_OPEN_WHEN_TOLD = """
import pathlib, sys, time
from qa.store import Store
folder = pathlib.Path(sys.argv[1])
(folder / f"ready-{sys.argv[2]}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
Store(sys.argv[3]).close()
"""


def test_concurrent_first_opens_migrate_once(store_url, tmp_path):
    children = [subprocess.Popen([sys.executable, "-c", _OPEN_WHEN_TOLD, str(tmp_path), str(i),
                                  store_url], stderr=subprocess.PIPE, text=True)
                for i in range(2)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    outcomes = [(child.returncode, child.communicate(timeout=60)[1]) for child in children]
    outcomes = [(child.returncode, stderr) for child, (_, stderr) in zip(children, outcomes,
                                                                         strict=True)]
    # the last lines of a child's error name the failure if this ever flakes
    assert outcomes == [(0, "")] * 2, [err.strip().splitlines()[-2:] for _, err in outcomes]
    with Store(store_url) as opened:
        with opened._engine.connect() as connection:
            assert connection.exec_driver_sql(
                "SELECT version_num FROM alembic_version").all() == [(HEAD_REVISION,)]


# ------------------------------------------------------------------ cohort-level results


def test_cohort_level_measurements_and_details_have_no_case_and_come_last(store):
    run_id = fill_run(store)
    store.add_measurements(run_id, None, "bias", "subgroup_bias", [
        Measurement("mae_difference_hu", 12.5, "HU", "bmi>=30"),
        Measurement("p_value", 0.003, "1", "bmi>=30")])
    store.add_details(run_id, None, "bias", {"groups": {"bmi>=30": 6, "bmi<30": 18}})

    got = store.measurements(run_id)
    assert got["case_id"].tolist()[:5] == ["p01", "p01", "p01", "p02", "p02"]
    assert got["case_id"].iloc[5:].isna().all()  # cohort rows after every case row
    assert got["metric"].tolist()[5:] == ["mae_difference_hu", "p_value"]
    np.testing.assert_array_equal(got["value"].iloc[5:], [12.5, 0.003])
    cohort = store.measurements(run_id, check_id="bias")
    assert cohort["check"].tolist() == ["subgroup_bias"] * 2
    details = store.details(run_id)
    assert pd.isna(details["case_id"].iloc[-1])
    assert details["name"].iloc[-1] == "groups"  # one row per top-level key
    assert details["payload"].iloc[-1] == {"bmi>=30": 6, "bmi<30": 18}


def test_a_cohort_result_is_stored_once_per_run(store):
    run_id = new_run(store)
    store.add_measurements(run_id, None, "bias", "subgroup_bias", [Measurement("m", 1.0, "1")])
    with pytest.raises(ValueError, match="cohort level \\(no case\\), check 'bias': a "
                                         "\\(metric, label\\) pair was given twice"):
        store.add_measurements(run_id, None, "bias", "subgroup_bias",
                               [Measurement("m", 2.0, "1")])
    store.add_details(run_id, None, "bias", {"groups": 1})
    with pytest.raises(ValueError, match="cohort level \\(no case\\), check 'bias': details "
                                         "already stored"):
        store.add_details(run_id, None, "bias", {"groups": 2})
    # another run may hold the same cohort key
    other = new_run(store)
    store.add_measurements(other, None, "bias", "subgroup_bias", [Measurement("m", 3.0, "1")])
    assert store.measurements(run_id)["value"].tolist() == [1.0]


def test_cohort_rows_of_an_unknown_or_finished_run_are_refused(store):
    with pytest.raises(UnknownRunError, match="run 99 not found"):
        store.add_measurements(99, None, "bias", "subgroup_bias", [Measurement("m", 1.0, "1")])
    run_id = new_run(store)
    store.finish_run(run_id, "complete")
    with pytest.raises(ValueError, match="already finished"):
        store.add_details(run_id, None, "bias", {"groups": 1})


def test_cohort_rows_are_append_only_too(store):
    run_id = new_run(store)
    store.add_measurements(run_id, None, "bias", "subgroup_bias", [Measurement("m", 1.0, "1")])
    store.add_details(run_id, None, "bias", {"groups": 1})
    with store._engine.connect() as connection:
        for statement in ("UPDATE measurements SET value = 0", "DELETE FROM measurements",
                          "UPDATE details SET name = 'x'", "DELETE FROM details"):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                with connection.begin():
                    connection.exec_driver_sql(statement)


def test_a_0001_store_with_data_migrates_to_cohort_results_keeping_everything(store_url):
    upgrade_to(store_url, "0001")
    engine = sa.create_engine(store_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO runs (uid, protocol_name, protocol_kind, protocol_hash, protocol_text, "
            "dataset_hash, case_table_path, model_name, model_version, model_adapter, "
            "model_details, software_version, operator, hostname, started_at, status) VALUES "
            "('u1', 'p', 'commissioning', 'h', 't', 'd', 'c.csv', 'm', '1', 'torch', '{}', "
            "'0.1', 'op', 'host', '2026-01-01 00:00:00', 'running')")
        connection.exec_driver_sql("INSERT INTO cases (run_id, case_id, position, attributes, "
                                   "status) VALUES (1, 'p01', 0, '{}', 'ok')")
        connection.exec_driver_sql("INSERT INTO measurements (run_id, case_id, check_id, "
                                   "\"check\", metric, label, value, unit) VALUES "
                                   "(1, 'p01', 'hu', 'hu_accuracy', 'mae_hu', '', 55.5, 'HU')")
        connection.exec_driver_sql("INSERT INTO details (run_id, case_id, check_id, name, "
                                   "payload) VALUES (1, 'p01', 'hu', 'histogram', '[1, 2]')")
        with pytest.raises(sa.exc.IntegrityError):  # 0001: every measurement has a case
            with connection.begin_nested():
                connection.exec_driver_sql(
                    "INSERT INTO measurements (run_id, case_id, check_id, \"check\", metric, "
                    "label, value, unit) VALUES (1, NULL, 'b', 'b', 'm', '', 1, '1')")
    engine.dispose()

    with Store(store_url) as store:  # opening migrates to head
        with store._engine.connect() as connection:
            differences = compare_metadata(
                MigrationContext.configure(connection, opts={"compare_type": True}), metadata)
        assert differences == []
        assert store.measurements(1)[["case_id", "metric", "value"]].values.tolist() == [
            ["p01", "mae_hu", 55.5]]
        assert store.details(1)["payload"].tolist() == [[1, 2]]
        store.add_measurements(1, None, "bias", "subgroup_bias", [Measurement("m", 2.0, "1")])
        assert store.verify().ok  # the 0001 rows were adopted into the chain on upgrade
        assert store.measurements(1)["case_id"].tolist()[0] == "p01"
        assert pd.isna(store.measurements(1)["case_id"].iloc[1])
        with store._engine.connect() as connection:
            for statement in ("UPDATE measurements SET value = 0", "DELETE FROM details",
                              "DELETE FROM cases"):
                with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                    with connection.begin():
                        connection.exec_driver_sql(statement)


# ----------------------------------------------------------------------------- baselines


def _complete_run(store: Store, exit_code: int = 0, **overrides) -> int:
    run_id = new_run(store, **overrides)
    store.finish_run(run_id, "complete", exit_code=exit_code)
    return run_id


def test_a_baseline_records_who_when_why_and_the_model_and_never_erases_the_old(store):
    first = _complete_run(store)
    when = dt.datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    b1 = store.set_baseline(first, operator="physicist A", reason="commissioning accepted",
                            set_at=when)
    second = _complete_run(store, model={"name": "mr2ct", "version": "2.2", "adapter": "torch",
                                         "sha256": "d" * 64})
    b2 = store.set_baseline(second, operator="physicist B", reason="v2.2 re-commissioned")
    other = _complete_run(store, protocol_name="CBCT sCT")
    b3 = store.set_baseline(other, operator="physicist A", reason="first")

    listed = store.baselines()
    assert listed["baseline_id"].tolist() == [b1, b2, b3]
    assert listed["active"].tolist() == [False, True, True]
    assert listed["previous_id"].isna().tolist() == [True, False, True]
    assert listed["previous_id"].iloc[1] == b1  # the one it replaced, kept
    row = listed.iloc[0]
    assert (row.run_id, row.operator, row.reason, row.model_version, row.model_sha256) == (
        first, "physicist A", "commissioning accepted", "2.1", "c" * 64)
    assert row.set_at == pd.Timestamp(when)
    active = store.active_baseline("MR-to-sCT pelvis")
    assert (active["baseline_id"], active["run_id"], active["model_version"]) == (b2, second,
                                                                                  "2.2")
    assert store.active_baseline("no such protocol") is None
    assert store.baselines("CBCT sCT")["baseline_id"].tolist() == [b3]
    with store._engine.connect() as connection:
        for statement in ("UPDATE baselines SET reason = 'x'", "DELETE FROM baselines"):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                with connection.begin():
                    connection.exec_driver_sql(statement)


def test_a_baseline_needs_a_reason_and_a_complete_run_without_errors(store):
    running = new_run(store)
    with pytest.raises(ValueError, match="needs a reason"):
        store.set_baseline(running, operator="A", reason="  ")
    with pytest.raises(ValueError, match="needs the operator"):
        store.set_baseline(running, operator="", reason="r")
    with pytest.raises(ValueError, match=f"run {running} is running, not complete"):
        store.set_baseline(running, operator="A", reason="r")
    with pytest.raises(UnknownRunError, match="run 99 not found"):
        store.set_baseline(99, operator="A", reason="r")
    with_errors = _complete_run(store, exit_code=30)
    with pytest.raises(ValueError, match="exited 30 \\(some cases or checks could not be "
                                         "run\\): a baseline must hold every case"):
        store.set_baseline(with_errors, operator="A", reason="r")
    assert store.baselines().empty
