"""Initial results schema: runs, cases, measurements, verdicts, errors, validations, details.

Append-only: triggers refuse UPDATE and DELETE on every table, except the single update of a
``running`` run that sets its ``status``, ``finished_at``, ``exit_code`` and ``summary``
(``Store.finish_run``).

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_APPEND_ONLY = ("cases", "measurements", "verdicts", "errors", "validations", "details")
_RUN_IMMUTABLE = (
    "id", "uid", "protocol_name", "protocol_kind", "protocol_hash", "protocol_text",
    "dataset_hash", "case_table_path", "model_name", "model_version", "model_adapter",
    "model_sha256", "model_details", "software_version", "operator", "hostname", "started_at",
)
_REFUSED = "the results store is append-only; a rerun is a new run"


def _big_id() -> sa.Column:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                     autoincrement=True)


def _case_fk(name: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id", "case_id"], ["cases.run_id", "cases.case_id"],
                                   name=name)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column("protocol_name", sa.Text, nullable=False),
        sa.Column("protocol_kind", sa.String(16), nullable=False),
        sa.Column("protocol_hash", sa.Text, nullable=False),
        sa.Column("protocol_text", sa.Text, nullable=False),
        sa.Column("dataset_hash", sa.Text, nullable=False),
        sa.Column("case_table_path", sa.Text, nullable=False),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("model_adapter", sa.Text, nullable=False),
        sa.Column("model_sha256", sa.Text, nullable=True),
        sa.Column("model_details", sa.Text, nullable=False),
        sa.Column("software_version", sa.Text, nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("summary", sa.Text, nullable=True),
        sa.UniqueConstraint("uid", name="uq_runs_uid"),
        sa.CheckConstraint("protocol_kind IN ('commissioning', 'periodic')",
                           name="ck_runs_protocol_kind"),
        sa.CheckConstraint("status IN ('running', 'complete', 'incomplete', 'failed')",
                           name="ck_runs_status"),
    )
    op.create_table(
        "cases",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_cases_run"),
                  primary_key=True),
        sa.Column("case_id", sa.Text, primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.CheckConstraint("status IN ('ok', 'error')", name="ck_cases_status"),
    )
    op.create_table(
        "measurements",
        _big_id(),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("case_id", sa.Text, nullable=False),
        sa.Column("check_id", sa.Text, nullable=False),
        sa.Column("check", sa.Text, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("value", sa.Double, nullable=True),
        sa.Column("unit", sa.Text, nullable=False),
        _case_fk("fk_measurements_case"),
        sa.UniqueConstraint("run_id", "case_id", "check_id", "metric", "label",
                            name="uq_measurements_key"),
    )
    op.create_index("ix_measurements_run_check_metric", "measurements",
                    ["run_id", "check_id", "metric"])
    op.create_index("ix_measurements_run_case", "measurements", ["run_id", "case_id"])
    op.create_table(
        "verdicts",
        _big_id(),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_verdicts_run"),
                  nullable=False),
        sa.Column("case_id", sa.Text, nullable=True),
        sa.Column("check_id", sa.Text, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("statistic", sa.Text, nullable=False),
        sa.Column("value", sa.Double, nullable=True),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("tolerance_min", sa.Double, nullable=True),
        sa.Column("tolerance_max", sa.Double, nullable=True),
        sa.Column("action_min", sa.Double, nullable=True),
        sa.Column("action_max", sa.Double, nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        _case_fk("fk_verdicts_case"),
        sa.CheckConstraint("level IN ('OK', 'TOLERANCE', 'ACTION')", name="ck_verdicts_level"),
    )
    op.create_index("ix_verdicts_run", "verdicts", ["run_id"])
    op.create_table(
        "errors",
        _big_id(),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_errors_run"),
                  nullable=False),
        sa.Column("case_id", sa.Text, nullable=True),
        sa.Column("check_id", sa.Text, nullable=True),
        sa.Column("role", sa.Text, nullable=True),
        sa.Column("path", sa.Text, nullable=True),
        sa.Column("field", sa.Text, nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_errors_run", "errors", ["run_id"])
    op.create_table(
        "validations",
        _big_id(),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_validations_run"),
                  nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("statistics", sa.Text, nullable=True),
        sa.Column("result", sa.Text, nullable=False),
    )
    op.create_index("ix_validations_run", "validations", ["run_id"])
    op.create_table(
        "details",
        _big_id(),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("case_id", sa.Text, nullable=False),
        sa.Column("check_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        _case_fk("fk_details_case"),
        sa.UniqueConstraint("run_id", "case_id", "check_id", "name", name="uq_details_key"),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_guards()
    else:
        _sqlite_guards()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP TRIGGER IF EXISTS runs_finish_once ON runs")
        op.execute("DROP TRIGGER IF EXISTS runs_no_truncate ON runs")
    else:
        for table in (*_APPEND_ONLY, "runs"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    for table in ("details", "validations", "errors", "verdicts", "measurements", "cases",
                  "runs"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS qa_refuse_change()")
        op.execute("DROP FUNCTION IF EXISTS qa_runs_finish_once()")


def _sqlite_guards() -> None:
    for table in _APPEND_ONLY:
        for event in ("update", "delete"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{event} BEFORE {event.upper()} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table}: {_REFUSED}'); END"
            )
    op.execute(f"CREATE TRIGGER runs_no_delete BEFORE DELETE ON runs "
               f"BEGIN SELECT RAISE(ABORT, 'runs: {_REFUSED}'); END")
    changed = " OR ".join(f'OLD."{c}" IS NOT NEW."{c}"' for c in _RUN_IMMUTABLE)
    op.execute(
        "CREATE TRIGGER runs_no_update BEFORE UPDATE ON runs "
        f"WHEN OLD.status <> 'running' OR NEW.status = 'running' OR {changed} "
        f"BEGIN SELECT RAISE(ABORT, 'runs: only finish_run may update a run, once; "
        f"{_REFUSED}'); END"
    )


def _postgresql_guards() -> None:
    op.execute(
        "CREATE FUNCTION qa_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION '%: {_REFUSED}', TG_TABLE_NAME; END $$"
    )
    old = ", ".join(f'OLD."{c}"' for c in _RUN_IMMUTABLE)
    new = ", ".join(f'NEW."{c}"' for c in _RUN_IMMUTABLE)
    op.execute(
        "CREATE FUNCTION qa_runs_finish_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF TG_OP = 'DELETE' THEN RAISE EXCEPTION 'runs: {_REFUSED}'; END IF; "
        f"IF OLD.status <> 'running' OR NEW.status = 'running' "
        f"OR ROW({old}) IS DISTINCT FROM ROW({new}) THEN "
        f"RAISE EXCEPTION 'runs: only finish_run may update a run, once; {_REFUSED}'; END IF; "
        "RETURN NEW; END $$"
    )
    for table in _APPEND_ONLY:
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
                   f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION qa_refuse_change()")
    op.execute("CREATE TRIGGER runs_finish_once BEFORE UPDATE OR DELETE ON runs "
               "FOR EACH ROW EXECUTE FUNCTION qa_runs_finish_once()")
    op.execute("CREATE TRIGGER runs_no_truncate BEFORE TRUNCATE ON runs "
               "FOR EACH STATEMENT EXECUTE FUNCTION qa_refuse_change()")
