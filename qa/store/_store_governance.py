"""Governance part of :class:`qa.store.Store`: baselines, approvals, audit events and the
SHA-256 chain (``qa baseline``, ``qa approve``, ``qa verify``).

A mixin: the methods use the store's engine, its write transaction and audit helpers
(:class:`qa.store._store.Store` defines them).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from qa.store import _ledger
from qa.store import _schema as tables
from qa.store._rows import aware

if TYPE_CHECKING:
    from qa.store._verify import VerifyResult

logger = logging.getLogger(__name__)


class StoreGovernance:
    """Baselines, approvals, audit events and chain verification of a store."""

    _engine: sa.Engine

    def set_baseline(self, run_id: int, *, operator: str, reason: str,
                     set_at: dt.datetime | None = None) -> int:
        """Make the complete run ``run_id`` the active baseline of its protocol; return the
        baseline id.

        Append-only: the previous baseline of the protocol is kept (the new row's
        ``previous_id`` names it). The model fingerprint (name, version, SHA-256) is copied
        from the run. ``reason`` and ``operator`` are mandatory.

        Raises
        ------
        ValueError
            Blank reason or operator, a run that is not complete, or a run with errors.
        UnknownRunError
            No such run.
        """
        from qa.store._baselines import insert_baseline

        set_at = aware(set_at, "set_at")
        with self._write_connection() as connection:
            try:
                baseline_id = insert_baseline(connection, run_id, operator=operator,
                                              reason=reason, set_at=set_at)
            except KeyError:
                raise self._unknown(run_id) from None
            _ledger.chain(connection, "baselines", [baseline_id], run_id)
            row = connection.execute(sa.select(tables.baselines).where(
                tables.baselines.c.id == baseline_id)).one()
            self._audit(connection, action="baseline_set", operator=operator, reason=reason,
                        run_id=run_id, protocol_name=row.protocol_name,
                        target=f"baseline {baseline_id}", at=set_at,
                        details={"baseline_id": baseline_id, "previous_id": row.previous_id,
                                 "model_name": row.model_name,
                                 "model_version": row.model_version,
                                 "model_sha256": row.model_sha256})
        logger.info("baseline %d set: run %d", baseline_id, run_id)
        return baseline_id

    def baselines(self, protocol_name: str | None = None) -> pd.DataFrame:
        """Every baseline, oldest first (columns ``qa.store.BASELINE_COLUMNS`` + ``active``)."""
        from qa.store._baselines import baselines_frame

        with self._engine.connect() as connection:
            return baselines_frame(connection, protocol_name)

    def active_baseline(self, protocol_name: str) -> dict[str, Any] | None:
        """The most recent baseline of ``protocol_name`` (keys ``BASELINE_COLUMNS``), or None."""
        from qa.store._baselines import active_baseline

        with self._engine.connect() as connection:
            return active_baseline(connection, protocol_name)

    def approve_run(self, run_id: int, *, operator: str, reason: str,
                    at: dt.datetime | None = None) -> int:
        """Record that ``operator`` approved the finished run ``run_id``, and why; return the
        audit event id. The run is not changed (append-only): the approval is an event.

        Raises
        ------
        ValueError
            Blank reason or operator, or a run that is still running.
        UnknownRunError
            No such run.
        """
        from qa.store._audit import require_reason

        reason, operator = require_reason("run_approved", reason, operator)
        with self._write_connection() as connection:
            run = connection.execute(sa.select(tables.runs).where(
                tables.runs.c.id == run_id)).first()
            if run is None:
                raise self._unknown(run_id)
            if run.status == "running":
                raise ValueError(f"run {run_id} is still running; approve it once it has "
                                 "finished (`qa runs` shows its status)")
            event_id = self._audit(
                connection, action="run_approved", operator=operator, reason=reason,
                run_id=run_id, protocol_name=run.protocol_name, target=f"run {run_id}",
                at=aware(at, "at"),
                details={"status": run.status, "exit_code": run.exit_code,
                         "protocol_hash": run.protocol_hash, "model_sha256": run.model_sha256})
        logger.info("run %d approved by %s", run_id, operator)
        return event_id

    def audit_events(self, protocol_name: str | None = None,
                     run_id: int | None = None) -> pd.DataFrame:
        """Audit events (who, what, why), oldest first; columns ``qa.store.AUDIT_COLUMNS``."""
        from qa.store._audit import audit_frame

        with self._engine.connect() as connection:
            return audit_frame(connection, protocol_name, run_id)

    def verify(self, anchors: Iterable[str] = ()) -> VerifyResult:
        """Re-check the SHA-256 chain of the whole store (``qa verify``).

        Returns a :class:`~qa.store.VerifyResult`: ``ok``, ``head_hash`` (print it, keep it:
        a later ``verify(anchors=[head_hash])`` proves the chain still extends it), and one
        :class:`~qa.store.ChainProblem` per record changed, removed or written behind the
        store's back, and per ledger entry removed, changed or out of order.
        """
        from qa.store._verify import verify_chain

        return verify_chain(self._engine, anchors)

    def run_anchor(self, run_id: int) -> dict[str, Any] | None:
        """The ledger entry that chained this run's finish: ``{"seq", "hash"}``, or None.

        A report prints this hash rather than the store's head: it is fixed once the run is
        finished, so the same run renders the same report however many runs follow, and
        ``qa verify --anchor HASH`` later proves the store still holds the run's history.
        None while the run is unfinished or in a store written before the chain existed.
        """
        ledger = tables.ledger
        query = (sa.select(ledger.c.seq, ledger.c.hash)
                 .where(ledger.c.table_name == "run_finish", ledger.c.run_id == run_id)
                 .order_by(ledger.c.seq.desc()).limit(1))
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else {"seq": int(row.seq), "hash": str(row.hash)}
