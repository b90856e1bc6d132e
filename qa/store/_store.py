"""The :class:`Store`: append-only results of QA runs in SQLite or PostgreSQL."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from checks.base import Measurement
from qa.errors import QAInputError
from qa.store import _ledger
from qa.store import _schema as tables
from qa.store._engine import default_url, make_engine, mask_url, resolve_url, upgrade_to_head
from qa.store._json import to_json_text
from qa.store._rows import aware, cases_of, verdict_row, where
from qa.store._schema import CASE_STATUSES, FINISHED_STATUSES, PROTOCOL_KINDS
from qa.store._store_governance import StoreGovernance
from qa.store._store_reads import StoreReads, UnknownRunError

__all__ = ["Store", "UnknownRunError"]

logger = logging.getLogger(__name__)

_MODEL_KEYS = ("name", "version", "adapter", "sha256")


class Store(StoreReads, StoreGovernance):
    """Append-only store of QA runs, cases, measurements, verdicts, errors and JSON details.

    This module holds the writes; the reads (:class:`qa.store._store_reads.StoreReads`) and
    the baselines, approvals, audit events and chain checks
    (:class:`qa.store._store_governance.StoreGovernance`) are mixed in.

    Parameters
    ----------
    url : str, optional
        SQLAlchemy URL. Default: the ``QA_STORE`` environment variable, else
        ``sqlite:///qa.db`` in the current folder. PostgreSQL: ``postgresql+psycopg://...``
        (needs the ``postgres`` extra). A relative SQLite path is made absolute on open.

    Notes
    -----
    Opening runs ``alembic upgrade head`` unless the database is already at head. Every write
    is its own transaction. Nothing is ever updated or deleted, except the one
    :meth:`finish_run` of a run; database triggers enforce this too. Writes to a finished run
    are refused: a rerun is a new run. Datetimes are timezone-aware UTC in and out. Measured
    values that are NaN are stored as SQL NULL and read back as NaN; ±inf is kept. JSON
    columns hold strict JSON (non-finite floats become ``null``).
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url if url is not None else default_url())
        self._url_shown = mask_url(self.url)
        self._engine = make_engine(self.url)
        self._atomic = threading.local()  # the open atomic() transaction of each thread
        try:
            upgrade_to_head(self._engine, self._url_shown)
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"Store({self._url_shown!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled database connections."""
        self._engine.dispose()

    # ----------------------------------------------------------------------------- writes

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Make every write of this thread inside the ``with`` block one transaction.

        All the block's writes are stored together or, if an error leaves the block (or the
        process dies), none of them. The runner stores each case this way (its row,
        measurements, details, verdicts, errors), so a run killed mid-way never leaves a
        half-written case; ``qa run --resume`` relies on it. Reads inside the block do not
        see its writes until it ends. Blocks do not nest. On SQLite the block holds the write
        lock: keep it to writes of results already computed.
        """
        if getattr(self._atomic, "connection", None) is not None:
            raise RuntimeError("Store.atomic() blocks do not nest")
        with self._engine.connect().execution_options(qa_write=True) as connection, \
                connection.begin():
            _ledger.lock(connection)
            self._atomic.connection = connection
            try:
                yield
            finally:
                self._atomic.connection = None

    def create_run(self, *, protocol_name: str, protocol_kind: str, protocol_hash: str,
                   protocol_text: str, dataset_hash: str, case_table_path: str | Path,
                   model: Mapping[str, Any], software_version: str, operator: str,
                   hostname: str, started_at: dt.datetime | None = None,
                   audit: Mapping[str, Any] | None = None) -> int:
        """Record a new run with status ``running`` and return its id.

        ``model`` needs ``name``, ``version`` and ``adapter``; ``sha256`` (of the weights or
        executable) is optional; every other key goes to the JSON column ``model_details``.
        ``started_at`` defaults to now (UTC). ``audit``: the keyword arguments of an audit
        event (``action``, ``operator``, ``reason``, ``target``, ``details``) recorded in the
        same transaction for the new run (e.g. ``tolerance_changed``, :mod:`qa.audit`).
        """
        if protocol_kind not in PROTOCOL_KINDS:
            raise ValueError(f"protocol_kind {protocol_kind!r} is not one of "
                             f"{', '.join(PROTOCOL_KINDS)}; set `kind:` in the protocol")
        missing = [key for key in _MODEL_KEYS[:3] if model.get(key) in (None, "")]
        if missing:
            raise ValueError(f"model is missing {', '.join(missing)}; give them in the "
                             "protocol's `model:` entry (name, version, adapter)")
        row = {
            "uid": str(uuid.uuid4()), "protocol_name": protocol_name,
            "protocol_kind": protocol_kind, "protocol_hash": protocol_hash,
            "protocol_text": protocol_text, "dataset_hash": dataset_hash,
            "case_table_path": str(case_table_path), "model_name": str(model["name"]),
            "model_version": str(model["version"]), "model_adapter": str(model["adapter"]),
            "model_sha256": model.get("sha256"),
            "model_details": to_json_text({k: v for k, v in model.items()
                                           if k not in _MODEL_KEYS}, what="model details"),
            "software_version": software_version, "operator": operator, "hostname": hostname,
            "started_at": aware(started_at, "started_at"), "status": "running",
        }
        with self._write_connection() as connection:
            run_id = int(connection.execute(tables.runs.insert(), row).inserted_primary_key[0])
            _ledger.chain(connection, "runs", [run_id], run_id)
            if audit is not None:
                self._audit(connection, run_id=run_id, protocol_name=protocol_name, **audit)
        logger.info("run %s started (%s, %s)", run_id, protocol_name, row["uid"])
        return int(run_id)

    def add_case(self, run_id: int, case_id: str, *, position: int,
                 attributes: Mapping[str, Any], status: str = "ok") -> None:
        """Record a case of the run: its ``position`` in the case table and its attributes.

        ``position`` orders every read (ties, e.g. -1 for a case that could not be placed,
        are broken by case id). ``attributes`` is stored as strict JSON.
        """
        if status not in CASE_STATUSES:
            raise ValueError(f"case {case_id!r}: status {status!r} is not one of "
                             f"{', '.join(CASE_STATUSES)}")
        c = tables.cases.c
        with self._writing(run_id) as connection:
            clash = connection.execute(sa.select(c.position).where(
                c.run_id == run_id, c.case_id == case_id)).first()
            if clash is not None:
                raise ValueError(f"run {run_id} already has case {case_id!r} (position "
                                 f"{clash.position}); each case is recorded once per run "
                                 "(case ids must be unique in the case table)")
            connection.execute(tables.cases.insert(), {
                "run_id": run_id, "case_id": case_id, "position": int(position),
                "attributes": to_json_text(dict(attributes),
                                           what=f"attributes of case {case_id!r}"),
                "status": status})
            _ledger.chain(connection, "cases", [[run_id, case_id]], run_id)

    def add_measurements(self, run_id: int, case_id: str | None, check_id: str, check: str,
                         measurements: Iterable[Measurement]) -> int:
        """Bulk-insert one case's measurements from one check; return how many were stored.

        ``case_id`` None stores cohort-level measurements (a result of the whole run, e.g. a
        cohort check or the comparison with a baseline); they need no ``add_case`` and are
        read after every case's rows. NaN values are stored as NULL. A (metric, label) pair
        may appear once per case (or once at cohort level) and check.
        """
        rows = [{"run_id": run_id, "case_id": case_id, "check_id": check_id, "check": check,
                 "metric": m.metric, "label": m.label or "", "value": float(m.value),
                 "unit": m.unit} for m in measurements]
        if rows:
            with self._writing(run_id, case_ids=cases_of(case_id)) as connection:
                self._insert(connection, tables.measurements, rows,
                             f"{where(case_id)}, check {check_id!r}: a (metric, label) pair "
                             "was given twice", run_id)
        return len(rows)

    def add_details(self, run_id: int, case_id: str | None, check_id: str,
                    details: Mapping[str, Any]) -> None:
        """Store a check's JSON details for one case: one row per top-level key.

        ``case_id`` None stores cohort-level details (read after every case's rows).
        """
        rows = [{"run_id": run_id, "case_id": case_id, "check_id": check_id, "name": str(name),
                 "payload": to_json_text(payload, what=f"details[{name!r}] of check "
                                         f"{check_id!r}, {where(case_id)}")}
                for name, payload in details.items()]
        if rows:
            with self._writing(run_id, case_ids=cases_of(case_id)) as connection:
                self._insert(connection, tables.details, rows,
                             f"{where(case_id)}, check {check_id!r}: details already stored",
                             run_id)

    def add_error(self, run_id: int, message: str, *, case_id: str | None = None,
                  check_id: str | None = None, role: str | None = None,
                  path: str | Path | None = None, field: str | None = None) -> None:
        """Record an error of the run (``case_id`` None for run-level errors)."""
        row = {"run_id": run_id, "case_id": case_id, "check_id": check_id, "role": role,
               "path": None if path is None else str(path), "field": field,
               "message": str(message), "created_at": dt.datetime.now(dt.timezone.utc)}
        with self._writing(run_id) as connection:
            self._insert(connection, tables.errors, [row], "error", run_id)

    def add_errors_from(self, run_id: int, exc: BaseException, *, case_id: str | None = None,
                        check_id: str | None = None) -> None:
        """Record an exception; a :class:`~qa.errors.QAInputError` gives its location fields.

        For a ``QAInputError`` the message is ``exc.message`` (what is wrong and what to do):
        its location goes into the case, check, role, path and field columns, not repeated
        in the text. ``case_id`` and ``check_id`` given here win over the exception's own
        ``case_id`` and ``check``. Any other exception is recorded as ``"Type: text"``.
        """
        if isinstance(exc, QAInputError):
            self.add_error(run_id, exc.message, case_id=case_id or exc.case_id,
                           check_id=check_id or exc.check, role=exc.role, path=exc.path,
                           field=exc.field)
        else:
            self.add_error(run_id, f"{type(exc).__name__}: {exc}", case_id=case_id,
                           check_id=check_id)

    def add_verdicts(self, run_id: int, verdicts: Iterable[Any]) -> int:
        """Bulk-insert verdicts (mappings or dataclass instances); return how many.

        Fields: ``check_id``, ``metric``, ``level`` (OK | TOLERANCE | ACTION, any case, or an
        enum whose value or name is one) are required; ``case_id`` (None: cohort aggregate),
        ``label`` (''), ``statistic`` ('value'), ``value`` (NaN), ``tolerance_min``,
        ``tolerance_max``, ``action_min``, ``action_max`` (None) and ``message`` ('') are
        optional. Other fields are ignored.
        """
        rows = [verdict_row(run_id, index, item) for index, item in enumerate(verdicts)]
        if rows:
            case_ids = {row["case_id"] for row in rows if row["case_id"] is not None}
            with self._writing(run_id, case_ids=case_ids) as connection:
                self._insert(connection, tables.verdicts, rows, "verdict", run_id)
        return len(rows)

    def add_validation(self, run_id: int, scope: str, success: bool, result: Mapping[str, Any],
                       statistics: Mapping[str, Any] | None = None) -> None:
        """Record a data validation (great_expectations ``describe_dict()`` as ``result``).

        ``statistics`` defaults to ``result["statistics"]`` when present.
        """
        if statistics is None and isinstance(result.get("statistics"), Mapping):
            statistics = result["statistics"]
        row = {"run_id": run_id, "scope": scope, "success": bool(success),
               "statistics": None if statistics is None else to_json_text(
                   statistics, what=f"statistics of validation {scope!r}"),
               "result": to_json_text(result, what=f"result of validation {scope!r}")}
        with self._writing(run_id) as connection:
            self._insert(connection, tables.validations, [row], "validation", run_id)

    def finish_run(self, run_id: int, status: str, *, exit_code: int | None = None,
                   summary: Mapping[str, Any] | None = None,
                   finished_at: dt.datetime | None = None) -> None:
        """Close a running run: the only update the store allows, once.

        Raises
        ------
        ValueError
            ``status`` is not complete | incomplete | failed, the run is already finished, or
            ``finished_at`` is before ``started_at``.
        """
        if status not in FINISHED_STATUSES:
            raise ValueError(f"finish_run: status {status!r} is not one of "
                             f"{', '.join(FINISHED_STATUSES)}")
        finished_at = aware(finished_at, "finished_at")
        with self._writing(run_id) as connection:
            started_at = connection.execute(
                sa.select(tables.runs.c.started_at).where(tables.runs.c.id == run_id)).scalar_one()
            if finished_at < started_at:
                raise ValueError(f"run {run_id}: finished_at {finished_at.isoformat()} is "
                                 f"before started_at {started_at.isoformat()}")
            connection.execute(
                tables.runs.update()
                .where(tables.runs.c.id == run_id, tables.runs.c.status == "running").values(
                    status=status, finished_at=finished_at,
                    exit_code=None if exit_code is None else int(exit_code),
                    summary=None if summary is None else to_json_text(
                        summary, what=f"summary of run {run_id}")))
            _ledger.chain(connection, "run_finish", [run_id], run_id)
        logger.info("run %s finished: %s", run_id, status)

    # ---------------------------------------------------------------------------- helpers

    @contextmanager
    def _writing(self, run_id: int, case_ids: Iterable[str] = ()) -> Iterator[sa.Connection]:
        """A write transaction on a run that exists, is still running and has these cases
        (the transaction of the enclosing :meth:`atomic` block, if any)."""
        with self._write_connection() as connection:
            row = connection.execute(sa.select(tables.runs.c.status, tables.runs.c.finished_at)
                                     .where(tables.runs.c.id == run_id)).first()
            if row is None:
                raise self._unknown(run_id)
            if row.status != "running":
                raise ValueError(
                    f"run {run_id} is already finished ({row.status} at "
                    f"{row.finished_at:%Y-%m-%d %H:%M:%S} UTC); runs are never edited: a rerun "
                    "is a new run")
            if case_ids:
                c = tables.cases.c
                query = sa.select(c.case_id).where(c.run_id == run_id,
                                                   c.case_id.in_(sorted(set(case_ids))))
                known = set(connection.execute(query).scalars())
                missing = sorted(set(case_ids) - known)
                if missing:
                    raise ValueError(f"run {run_id} has no case {', '.join(map(repr, missing))}; "
                                     "call add_case first")
            yield connection

    @contextmanager
    def _write_connection(self) -> Iterator[sa.Connection]:
        shared = getattr(self._atomic, "connection", None)
        if shared is not None:
            yield shared
            return
        with self._engine.connect().execution_options(qa_write=True) as connection, \
                connection.begin():
            _ledger.lock(connection)  # the chain appends in order
            yield connection

    def _audit(self, connection: sa.Connection, **event: Any) -> int:
        from qa.store._audit import insert_event

        event_id = insert_event(connection, **event)
        _ledger.chain(connection, "audit_events", [event_id], event.get("run_id"))
        return event_id

    @staticmethod
    def _insert(connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]],
                duplicate: str, run_id: int) -> None:
        """Insert rows of a run and chain them (one ledger entry for the batch)."""
        try:  # every column back, through the column types: what the chain hashes
            stored = connection.execute(table.insert().returning(*table.c), rows).all()
        except sa.exc.IntegrityError as exc:
            raise ValueError(f"{table.name}: {duplicate} or was already recorded; each is "
                             "recorded once per run (a rerun is a new run)") from exc
        _ledger.append_rows(connection, table.name, [row._mapping for row in stored], run_id)
