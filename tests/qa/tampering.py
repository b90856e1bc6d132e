"""A store tampered with in every way ``qa verify`` names (one problem of each kind, each form
of record), for the tests of the verify lines (CLI, English) and of the report (French)."""

from __future__ import annotations

import sqlalchemy as sa

from qa.store import Store
from tests.qa.store_helpers import fill_run, new_run

#: Case ids that are HTML: a report must print them escaped.
HTML_CASE_IDS = ("<b>p9</b>", "<i>p7</i>")


def _raw(store: Store, statement: str, **params) -> None:
    with store._engine.begin() as connection:
        connection.execute(sa.text(statement), params)


def _unguard(store: Store, table: str) -> None:
    """Drop the append-only triggers of ``table`` (SQLite), as a tamperer would."""
    with store._engine.begin() as connection:
        for event in ("update", "delete"):
            connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_{event}")


def tamper_every_way(store: Store) -> int:
    """Fill a fresh SQLite file store with two finished runs, then change it behind its back:
    a measurement, a case, a run's finish changed; a verdict removed; an error planted; ledger
    entries removed (the first, a range, a single one), rewritten, swapped and duplicated.
    Returns the first run's id. ``qa verify --anchor fff…`` then names 20 problems."""
    run_id = fill_run(store)
    store.finish_run(run_id, "complete", exit_code=10, summary={"n": 3})
    store.set_baseline(run_id, operator="physicist A", reason="commissioning accepted")
    store.approve_run(run_id, operator="physicist B", reason="reviewed at committee")
    other = new_run(store)
    store.add_case(other, HTML_CASE_IDS[0], position=0, attributes={})
    store.finish_run(other, "complete", exit_code=0)
    for table in ("measurements", "verdicts", "runs", "cases", "ledger"):
        _unguard(store, table)
    _raw(store, "UPDATE measurements SET value = 65.0 WHERE id = 1")
    _raw(store, "DELETE FROM verdicts WHERE level = 'TOLERANCE'")
    _raw(store, "INSERT INTO errors (run_id, case_id, message, created_at) VALUES "
                "(:run, :case, 'planted', '2026-01-01 00:00:00')", run=other,
         case=HTML_CASE_IDS[1])
    _raw(store, "UPDATE runs SET exit_code = 3 WHERE id = :id", id=run_id)
    _raw(store, "UPDATE cases SET position = 9 WHERE case_id = :case", case=HTML_CASE_IDS[0])
    _raw(store, "DELETE FROM ledger WHERE seq IN (1, 13, 14, 16)")
    _raw(store, "UPDATE ledger SET records = (SELECT records FROM ledger WHERE seq = 9) "
                "WHERE seq = 10")
    _raw(store, "UPDATE ledger SET run_id = 99 WHERE seq = 6")
    _raw(store, "UPDATE ledger SET seq = -seq WHERE seq IN (3, 4)")
    _raw(store, "UPDATE ledger SET seq = 7 + seq WHERE seq IN (-3, -4)")
    return run_id
