"""Core tables of the results store and the column types that keep values portable.

The tables here are the *Python view* of the schema used to build queries; the schema itself
is created by the Alembic migrations in ``qa/migrations/versions`` (hand-written, frozen).
``tests/qa/test_store.py`` compares the two with Alembic's autogenerate so they cannot drift.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import sqlalchemy as sa

__all__ = [
    "metadata", "runs", "cases", "measurements", "verdicts", "errors", "validations", "details",
    "baselines", "ledger", "audit_events",
    "UTCDateTime", "FloatOrNull", "PROTOCOL_KINDS", "RUN_STATUSES", "FINISHED_STATUSES",
    "CASE_STATUSES", "LEVELS", "AUDIT_ACTIONS", "LEDGER_KINDS",
]

PROTOCOL_KINDS = ("commissioning", "periodic")
RUN_STATUSES = ("running", "complete", "incomplete", "failed")
FINISHED_STATUSES = RUN_STATUSES[1:]
CASE_STATUSES = ("ok", "error")
LEVELS = ("OK", "TOLERANCE", "ACTION")
AUDIT_ACTIONS = ("baseline_set", "run_approved", "tolerance_changed")
LEDGER_KINDS = ("write", "adopted")


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes in and out, on every backend.

    PostgreSQL stores ``timestamp with time zone``; SQLite has no time zone type, so the value is
    converted to UTC and stored as naive ISO text, then marked UTC again on the way out. A naive
    datetime is refused: its zone would be a guess.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"datetime {value.isoformat()} has no time zone; give a "
                             "timezone-aware datetime, e.g. datetime.now(timezone.utc)")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class FloatOrNull(sa.TypeDecorator[float]):
    """Double precision; NaN is stored as NULL (read back as NaN), ±inf is kept.

    SQLite turns NaN into NULL by itself while PostgreSQL keeps ``'NaN'``; storing NULL on both
    makes "not a number" one thing everywhere and lets SQL aggregates skip it.
    """

    impl = sa.Double()
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> float | None:
        if value is None:
            return None
        value = float(value)
        return None if math.isnan(value) else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> float:
        return math.nan if value is None else float(value)


def _big_id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                     autoincrement=True)


def _in(column: str, values: tuple[str, ...], name: str) -> sa.CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({quoted})", name=name)


def _case_fk(name: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id", "case_id"], ["cases.run_id", "cases.case_id"],
                                   name=name)


def _cohort_key(name: str, *columns: str) -> sa.Index:
    """Uniqueness of cohort-level rows (``case_id`` NULL), which a unique constraint
    including ``case_id`` does not give (SQL NULLs are distinct)."""
    where = sa.text("case_id IS NULL")
    return sa.Index(name, *columns, unique=True, sqlite_where=where, postgresql_where=where)


metadata = sa.MetaData()

runs = sa.Table(
    "runs", metadata,
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
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("summary", sa.Text, nullable=True),
    sa.UniqueConstraint("uid", name="uq_runs_uid"),
    _in("protocol_kind", PROTOCOL_KINDS, "ck_runs_protocol_kind"),
    _in("status", RUN_STATUSES, "ck_runs_status"),
)

cases = sa.Table(
    "cases", metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_cases_run"),
              primary_key=True),
    sa.Column("case_id", sa.Text, primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("attributes", sa.Text, nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    _in("status", CASE_STATUSES, "ck_cases_status"),
)

measurements = sa.Table(
    "measurements", metadata,
    _big_id(),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_measurements_run"),
              nullable=False),
    sa.Column("case_id", sa.Text, nullable=True),
    sa.Column("check_id", sa.Text, nullable=False),
    sa.Column("check", sa.Text, nullable=False),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("value", FloatOrNull, nullable=True),
    sa.Column("unit", sa.Text, nullable=False),
    _case_fk("fk_measurements_case"),
    sa.UniqueConstraint("run_id", "case_id", "check_id", "metric", "label",
                        name="uq_measurements_key"),
    sa.Index("ix_measurements_run_check_metric", "run_id", "check_id", "metric"),
    sa.Index("ix_measurements_run_case", "run_id", "case_id"),
    _cohort_key("uq_measurements_cohort_key", "run_id", "check_id", "metric", "label"),
)

verdicts = sa.Table(
    "verdicts", metadata,
    _big_id(),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_verdicts_run"),
              nullable=False),
    sa.Column("case_id", sa.Text, nullable=True),
    sa.Column("check_id", sa.Text, nullable=False),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("statistic", sa.Text, nullable=False),
    sa.Column("value", FloatOrNull, nullable=True),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("tolerance_min", FloatOrNull, nullable=True),
    sa.Column("tolerance_max", FloatOrNull, nullable=True),
    sa.Column("action_min", FloatOrNull, nullable=True),
    sa.Column("action_max", FloatOrNull, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    _case_fk("fk_verdicts_case"),
    _in("level", LEVELS, "ck_verdicts_level"),
    sa.Index("ix_verdicts_run", "run_id"),
)

errors = sa.Table(
    "errors", metadata,
    _big_id(),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_errors_run"),
              nullable=False),
    sa.Column("case_id", sa.Text, nullable=True),
    sa.Column("check_id", sa.Text, nullable=True),
    sa.Column("role", sa.Text, nullable=True),
    sa.Column("path", sa.Text, nullable=True),
    sa.Column("field", sa.Text, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_errors_run", "run_id"),
)

validations = sa.Table(
    "validations", metadata,
    _big_id(),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_validations_run"),
              nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("success", sa.Boolean, nullable=False),
    sa.Column("statistics", sa.Text, nullable=True),
    sa.Column("result", sa.Text, nullable=False),
    sa.Index("ix_validations_run", "run_id"),
)

details = sa.Table(
    "details", metadata,
    _big_id(),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_details_run"),
              nullable=False),
    sa.Column("case_id", sa.Text, nullable=True),
    sa.Column("check_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    _case_fk("fk_details_case"),
    sa.UniqueConstraint("run_id", "case_id", "check_id", "name", name="uq_details_key"),
    _cohort_key("uq_details_cohort_key", "run_id", "check_id", "name"),
)

baselines = sa.Table(
    "baselines", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", name="fk_baselines_run"),
              nullable=False),
    sa.Column("protocol_name", sa.Text, nullable=False),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("model_sha256", sa.Text, nullable=True),
    sa.Column("set_at", UTCDateTime, nullable=False),
    sa.Column("operator", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("previous_id", sa.Integer,
              sa.ForeignKey("baselines.id", name="fk_baselines_previous"), nullable=True),
    sa.CheckConstraint("length(trim(reason)) > 0", name="ck_baselines_reason"),
    sa.CheckConstraint("length(trim(operator)) > 0", name="ck_baselines_operator"),
    sa.Index("ix_baselines_protocol", "protocol_name"),
)

ledger = sa.Table(
    "ledger", metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("table_name", sa.Text, nullable=False),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("records", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.UniqueConstraint("hash", name="uq_ledger_hash"),
    _in("kind", LEDGER_KINDS, "ck_ledger_kind"),
)

audit_events = sa.Table(
    "audit_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
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
    _in("action", AUDIT_ACTIONS, "ck_audit_events_action"),
    sa.Index("ix_audit_events_protocol", "protocol_name"),
)
