"""Audit trail in the store: who did what, to which run or baseline, and why.

Each event is an ``audit_events`` row with a mandatory, non-blank reason (as QATrack+ asks
for reference-value changes), chained in the ledger like every record. Actions:

``baseline_set``
    a run became the baseline of its protocol (``qa baseline set RUN --reason``);
``run_approved``
    a finished run was approved for the record (``qa approve RUN --reason``);
``tolerance_changed``
    a run was started with tolerance or action levels that differ from the previous run of
    the same protocol name (``qa run --reason``; see :mod:`qa.audit`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pandas as pd
import sqlalchemy as sa

from qa.store._json import from_json_text, to_json_text
from qa.store._schema import AUDIT_ACTIONS, audit_events

__all__ = ["AUDIT_COLUMNS", "insert_event", "audit_frame", "require_reason"]

AUDIT_COLUMNS = ("event_id", "at", "operator", "action", "run_id", "protocol_name", "target",
                 "reason", "details")

_EXAMPLES = {
    "baseline_set": '--reason "commissioning of v2.1 accepted by the committee on 2026-03-02"',
    "run_approved": '--reason "reviewed with the committee on 2026-03-02: ACTION on bone '
                    'MAE explained by the metal hip of case p07"',
    "tolerance_changed": '--reason "bone MAE tolerance raised to 220 HU after the 2026 '
                         'audit (minutes ref. 12)"',
}


def require_reason(action: str, reason: str | None, operator: str | None) -> tuple[str, str]:
    """The stripped reason and operator; a blank one raises ``ValueError`` saying what to do."""
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"audit action {action!r} is not one of {', '.join(AUDIT_ACTIONS)}")
    reason, operator = (reason or "").strip(), (operator or "").strip()
    if not reason:
        what = {"baseline_set": "a baseline", "run_approved": "approving a run",
                "tolerance_changed": "changing tolerance or action levels"}[action]
        raise ValueError(f"{what} needs a reason (e.g. {_EXAMPLES[action]}); it is kept in "
                         "the audit trail")
    if not operator:
        raise ValueError(f"{action}: the operator is blank; give --operator NAME")
    return reason, operator


def insert_event(connection: sa.Connection, *, action: str, operator: str, reason: str,
                 target: str, run_id: int | None = None, protocol_name: str | None = None,
                 details: Mapping[str, Any] | None = None,
                 at: dt.datetime | None = None) -> int:
    """Insert one audit event (reason and operator checked first); return its id."""
    reason, operator = require_reason(action, reason, operator)
    row = {"at": at or dt.datetime.now(dt.timezone.utc), "operator": operator,
           "action": action, "run_id": run_id, "protocol_name": protocol_name,
           "target": target, "reason": reason,
           "details": to_json_text(dict(details or {}), what=f"details of the {action} event")}
    return int(connection.execute(audit_events.insert(), row).inserted_primary_key[0])


def audit_frame(connection: sa.Connection, protocol_name: str | None = None,
                run_id: int | None = None) -> pd.DataFrame:
    """Audit events, oldest first (columns :data:`AUDIT_COLUMNS`, ``details`` decoded)."""
    query = sa.select(audit_events).order_by(audit_events.c.id)
    if protocol_name is not None:
        query = query.where(audit_events.c.protocol_name == protocol_name)
    if run_id is not None:
        query = query.where(audit_events.c.run_id == run_id)
    rows = [dict(zip(AUDIT_COLUMNS, row, strict=True)) for row in connection.execute(query)]
    frame = pd.DataFrame(rows, columns=list(AUDIT_COLUMNS))
    frame["details"] = [from_json_text(text) for text in frame["details"]]
    frame["event_id"] = frame["event_id"].astype("int64")
    frame["run_id"] = frame["run_id"].astype("Int64")
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return frame
