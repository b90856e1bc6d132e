"""Baselines in the store: set one (append-only), list them, find the active one.

A baseline makes a complete run the reference of periodic QA for its protocol name. Setting a
new one never erases the old: it is a new row whose ``previous_id`` names the baseline it
replaces; the *active* baseline of a protocol is its most recent row.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import sqlalchemy as sa

from qa.store._schema import baselines, runs

__all__ = ["BASELINE_COLUMNS", "insert_baseline", "baselines_frame", "active_baseline"]

BASELINE_COLUMNS = ("baseline_id", "run_id", "protocol_name", "model_name", "model_version",
                    "model_sha256", "set_at", "operator", "reason", "previous_id")
_REFUSED_EXIT_CODES = {30: "some cases or checks could not be run",
                       40: "the run could not start"}


def insert_baseline(connection: sa.Connection, run_id: int, *, operator: str, reason: str,
                    set_at: dt.datetime) -> int:
    """Insert a baseline row for ``run_id`` (checked first); return its id.

    Raises
    ------
    ValueError
        Blank reason or operator; the run is not complete; the run has errors (exit 30).
    KeyError
        Unknown run (the caller turns it into the store's message).
    """
    reason, operator = (reason or "").strip(), (operator or "").strip()
    if not reason:
        raise ValueError("a baseline needs a reason (e.g. --reason \"commissioning of v2.1 "
                         "accepted by the committee on 2026-03-02\"); it is kept with the "
                         "baseline for the audit trail")
    if not operator:
        raise ValueError("a baseline needs the operator who sets it (--operator NAME)")
    run = connection.execute(sa.select(runs).where(runs.c.id == run_id)).first()
    if run is None:
        raise KeyError(run_id)
    if run.status != "complete":
        raise ValueError(f"run {run_id} is {run.status}, not complete; only a complete run "
                         "can be a baseline: rerun the protocol and set that run")
    if run.exit_code in _REFUSED_EXIT_CODES:
        raise ValueError(f"run {run_id} exited {run.exit_code} "
                         f"({_REFUSED_EXIT_CODES[run.exit_code]}): a baseline must hold every "
                         "case of the constancy set; fix the errors (`qa report "
                         f"{run_id}` lists them), rerun, and set the new run")
    previous = _active_row(connection, run.protocol_name)
    row = {"run_id": run_id, "protocol_name": run.protocol_name,
           "model_name": run.model_name, "model_version": run.model_version,
           "model_sha256": run.model_sha256, "set_at": set_at, "operator": operator,
           "reason": reason, "previous_id": None if previous is None else previous.id}
    return int(connection.execute(baselines.insert(), row).inserted_primary_key[0])


def baselines_frame(connection: sa.Connection, protocol_name: str | None = None
                    ) -> pd.DataFrame:
    """Every baseline (oldest first), optionally of one protocol; plus an ``active`` column."""
    query = sa.select(*(baselines.c[c] for c in ("id", *BASELINE_COLUMNS[1:]))).order_by(
        baselines.c.id)
    if protocol_name is not None:
        query = query.where(baselines.c.protocol_name == protocol_name)
    frame = pd.DataFrame(connection.execute(query).all(), columns=list(BASELINE_COLUMNS))
    frame["baseline_id"] = frame["baseline_id"].astype("int64")
    frame["run_id"] = frame["run_id"].astype("int64")
    frame["previous_id"] = frame["previous_id"].astype("Int64")
    frame["set_at"] = pd.to_datetime(frame["set_at"], utc=True)
    latest = frame.groupby("protocol_name")["baseline_id"].transform("max") if len(frame) \
        else frame["baseline_id"]
    frame["active"] = frame["baseline_id"] == latest
    return frame


def active_baseline(connection: sa.Connection, protocol_name: str) -> dict[str, Any] | None:
    """The most recent baseline of ``protocol_name`` as a dict, or None."""
    row = _active_row(connection, protocol_name)
    if row is None:
        return None
    return dict(zip(BASELINE_COLUMNS, row, strict=True))


def _active_row(connection: sa.Connection, protocol_name: str) -> sa.Row[Any] | None:
    query = (sa.select(*(baselines.c[c] for c in ("id", *BASELINE_COLUMNS[1:])))
             .where(baselines.c.protocol_name == protocol_name)
             .order_by(baselines.c.id.desc()).limit(1))
    return connection.execute(query).first()
