"""Baselines: a complete run made the reference of periodic QA for its protocol and model.

Append-only like every table: a new baseline is a new row (``previous_id`` points at the one
it replaces), nothing is updated or deleted. ``reason`` is mandatory and not blank.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_REFUSED = "the results store is append-only; a rerun is a new run"


def upgrade() -> None:
    op.create_table(
        "baselines",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_baselines_run"),
                  nullable=False),
        sa.Column("protocol_name", sa.Text, nullable=False),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("model_sha256", sa.Text, nullable=True),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("previous_id", sa.Integer,
                  sa.ForeignKey("baselines.id", name="fk_baselines_previous"), nullable=True),
        sa.CheckConstraint("length(trim(reason)) > 0", name="ck_baselines_reason"),
        sa.CheckConstraint("length(trim(operator)) > 0", name="ck_baselines_operator"),
    )
    op.create_index("ix_baselines_protocol", "baselines", ["protocol_name"])
    if op.get_bind().dialect.name == "postgresql":
        # qa_refuse_change() was created by revision 0001
        op.execute("CREATE TRIGGER baselines_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
                   "ON baselines FOR EACH STATEMENT EXECUTE FUNCTION qa_refuse_change()")
    else:
        for event in ("update", "delete"):
            op.execute(f"CREATE TRIGGER baselines_no_{event} BEFORE {event.upper()} ON "
                       f"baselines BEGIN SELECT RAISE(ABORT, 'baselines: {_REFUSED}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS baselines_append_only ON baselines")
    else:
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS baselines_no_{event}")
    op.drop_index("ix_baselines_protocol", table_name="baselines")
    op.drop_table("baselines")
