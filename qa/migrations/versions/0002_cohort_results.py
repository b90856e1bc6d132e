"""Cohort-level results: ``measurements.case_id`` and ``details.case_id`` may be NULL.

A NULL ``case_id`` marks a result of the whole run (a cohort check such as subgroup bias, or
the comparison with a baseline). Such rows are unique per (run, check, metric, label) and per
(run, check, name) through partial unique indexes, since SQL treats NULLs as distinct in the
existing unique constraints. A foreign key ``run_id -> runs.id`` is added to both tables so
cohort rows (which the composite case foreign key does not cover) still point at a run.

The append-only guards stay: on SQLite the batch migration recreates both tables, so their
``*_no_update`` / ``*_no_delete`` triggers are dropped first and created again afterwards; on
PostgreSQL ``ALTER TABLE`` keeps the statement triggers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_REFUSED = "the results store is append-only; a rerun is a new run"
_TABLES = ("measurements", "details")
_COHORT_KEYS = {
    "measurements": ("uq_measurements_cohort_key", ["run_id", "check_id", "metric", "label"]),
    "details": ("uq_details_cohort_key", ["run_id", "check_id", "name"]),
}


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _drop_sqlite_guards()
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("case_id", existing_type=sa.Text(), nullable=True)
            batch.create_foreign_key(f"fk_{table}_run", "runs", ["run_id"], ["id"])
        name, columns = _COHORT_KEYS[table]
        op.create_index(name, table, columns, unique=True,
                        sqlite_where=sa.text("case_id IS NULL"),
                        postgresql_where=sa.text("case_id IS NULL"))
    if sqlite:
        _create_sqlite_guards()


def downgrade() -> None:
    """Back to 0001; refused (by the NOT NULL constraint) while cohort rows exist."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _drop_sqlite_guards()
    for table in _TABLES:
        name, _ = _COHORT_KEYS[table]
        op.drop_index(name, table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_run", type_="foreignkey")
            batch.alter_column("case_id", existing_type=sa.Text(), nullable=False)
    if sqlite:
        _create_sqlite_guards()


def _drop_sqlite_guards() -> None:
    for table in _TABLES:
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{event}")


def _create_sqlite_guards() -> None:
    """The same triggers as revision 0001 creates on these two tables."""
    for table in _TABLES:
        for event in ("update", "delete"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{event} BEFORE {event.upper()} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table}: {_REFUSED}'); END"
            )
