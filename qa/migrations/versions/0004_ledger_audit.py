"""Tamper evidence and audit trail: the ``ledger`` hash chain and the ``audit_events`` table.

``ledger``: one entry per write transaction of the store, in order (``seq`` 1, 2, 3 …). Each
entry lists the records that write stored (table, key, case, SHA-256 of the record's canonical
content) and its ``hash`` = SHA-256 of the entry's own fields and the previous entry's hash.
``audit_events``: who did what and why (baseline set, run approved, tolerance changed), with a
mandatory, non-blank reason. Both are append-only like every table (triggers below).

Rows written before this revision are not in the chain; when the store is upgraded to head
(``Store`` opening it, or ``alembic upgrade head``), they are *adopted*: one ledger entry of
kind ``adopted`` per table is appended in the same transaction (``qa.store._ledger``), so that
from then on a change is evident; ``qa verify`` says how many records were adopted and when.
This file itself only creates the tables and stays frozen.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_REFUSED = "the results store is append-only; a rerun is a new run"
_TABLES = ("ledger", "audit_events")


def upgrade() -> None:
    op.create_table(
        "ledger",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("table_name", sa.Text, nullable=False),
        sa.Column("run_id", sa.Integer, nullable=True),
        sa.Column("records", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("hash", name="uq_ledger_hash"),
        sa.CheckConstraint("kind IN ('write', 'adopted')", name="ck_ledger_kind"),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_audit_events_run"),
                  nullable=True),
        sa.Column("protocol_name", sa.Text, nullable=True),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.CheckConstraint("length(trim(reason)) > 0", name="ck_audit_events_reason"),
        sa.CheckConstraint("length(trim(operator)) > 0", name="ck_audit_events_operator"),
        sa.CheckConstraint("action IN ('baseline_set', 'run_approved', 'tolerance_changed')",
                           name="ck_audit_events_action"),
    )
    op.create_index("ix_audit_events_protocol", "audit_events", ["protocol_name"])
    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:  # qa_refuse_change() was created by revision 0001
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR "
                       f"TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION "
                       "qa_refuse_change()")
    else:
        for table in _TABLES:
            for event in ("update", "delete"):
                op.execute(f"CREATE TRIGGER {table}_no_{event} BEFORE {event.upper()} ON "
                           f"{table} BEGIN SELECT RAISE(ABORT, '{table}: {_REFUSED}'); END")


def downgrade() -> None:
    for table in _TABLES:
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        else:
            for event in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{event}")
    op.drop_index("ix_audit_events_protocol", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("ledger")
