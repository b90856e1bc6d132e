"""Read queries of the results store, each returning a DataFrame with a fixed column order.

Sorting is done in pandas, not SQL, so the order is the same on every backend (PostgreSQL
collations may sort text differently from SQLite's byte order): case position (rows without a
case last), case id (ties of position), then the listed keys, then insertion order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from qa.store._json import from_json_text
from qa.store._schema import cases, details, errors, measurements, runs, validations, verdicts

__all__ = ["RUN_COLUMNS", "CASE_COLUMNS", "MEASUREMENT_COLUMNS", "VERDICT_COLUMNS",
           "ERROR_COLUMNS", "DETAIL_COLUMNS", "VALIDATION_COLUMNS", "run_record", "runs_frame",
           "cases_frame", "measurements_frame", "verdicts_frame", "errors_frame",
           "details_frame", "validations_frame"]

RUN_COLUMNS = ("run_id", *(c.name for c in runs.columns if c.name != "id"))
CASE_COLUMNS = ("case_id", "position", "status")
MEASUREMENT_COLUMNS = ("run_id", "case_id", "check_id", "check", "metric", "label", "value",
                       "unit")
VERDICT_COLUMNS = ("run_id", "case_id", "check_id", "metric", "label", "statistic", "value",
                   "level", "tolerance_min", "tolerance_max", "action_min", "action_max",
                   "message")
ERROR_COLUMNS = ("run_id", "case_id", "check_id", "role", "path", "field", "message",
                 "created_at")
DETAIL_COLUMNS = ("run_id", "case_id", "check_id", "name", "payload")
VALIDATION_COLUMNS = ("run_id", "scope", "success", "statistics", "result")
_RUN_JSON = ("model_details", "summary")


def run_record(row: sa.Row[Any]) -> dict[str, Any]:
    """A ``runs`` row as a dict keyed by :data:`RUN_COLUMNS`, JSON columns decoded."""
    record = dict(zip(RUN_COLUMNS, row, strict=True))
    for key in _RUN_JSON:
        record[key] = from_json_text(record[key])
    return record


def runs_frame(connection: sa.Connection) -> pd.DataFrame:
    """All runs, oldest first."""
    rows = connection.execute(sa.select(runs).order_by(runs.c.id)).all()
    frame = pd.DataFrame([run_record(row) for row in rows], columns=list(RUN_COLUMNS))
    frame["run_id"] = frame["run_id"].astype("int64")
    frame["exit_code"] = frame["exit_code"].astype("Int64")
    return _utc(frame, "started_at", "finished_at")


def cases_frame(connection: sa.Connection, run_id: int) -> pd.DataFrame:
    """Cases by position (then case id), then one column per attribute (first-seen order)."""
    query = (sa.select(cases.c.case_id, cases.c.position, cases.c.status, cases.c.attributes)
             .where(cases.c.run_id == run_id).order_by(cases.c.position))
    records, attribute_names = [], {}
    for case_id, position, status, attributes_text in connection.execute(query):
        record = {"case_id": case_id, "position": position, "status": status}
        for key, value in from_json_text(attributes_text).items():
            column = f"attribute_{key}" if key in CASE_COLUMNS else key
            attribute_names.setdefault(column, None)
            record[column] = value
        records.append(record)
    frame = pd.DataFrame(records, columns=[*CASE_COLUMNS, *attribute_names])
    frame["position"] = frame["position"].astype("int64")
    return frame.sort_values(["position", "case_id"], kind="stable").reset_index(drop=True)


def measurements_frame(connection: sa.Connection, run_id: int,
                       check_id: str | None = None) -> pd.DataFrame:
    """Measurements ordered by case position, check_id, metric, label."""
    query = _with_position(measurements, MEASUREMENT_COLUMNS, run_id)
    if check_id is not None:
        query = query.where(measurements.c.check_id == check_id)
    frame = _sorted(connection, query, MEASUREMENT_COLUMNS, ["check_id", "metric", "label"])
    return _floats(frame, "value")


def verdicts_frame(connection: sa.Connection, run_id: int) -> pd.DataFrame:
    """Per-case verdicts by case position, then cohort verdicts (``case_id`` None)."""
    query = _with_position(verdicts, VERDICT_COLUMNS, run_id)
    frame = _sorted(connection, query, VERDICT_COLUMNS,
                    ["check_id", "metric", "label", "statistic"])
    return _floats(frame, "value", "tolerance_min", "tolerance_max", "action_min", "action_max")


def errors_frame(connection: sa.Connection, run_id: int) -> pd.DataFrame:
    """Errors by case position (run-level errors last), then in the order recorded."""
    query = _with_position(errors, ERROR_COLUMNS, run_id)
    return _utc(_sorted(connection, query, ERROR_COLUMNS, []), "created_at")


def details_frame(connection: sa.Connection, run_id: int, check_id: str | None = None,
                  name: str | None = None) -> pd.DataFrame:
    """Details by case position, check_id, name; ``payload`` decoded from JSON."""
    query = _with_position(details, DETAIL_COLUMNS, run_id)
    if check_id is not None:
        query = query.where(details.c.check_id == check_id)
    if name is not None:
        query = query.where(details.c.name == name)
    frame = _sorted(connection, query, DETAIL_COLUMNS, ["check_id", "name"])
    frame["payload"] = [from_json_text(text) for text in frame["payload"]]
    return frame


def validations_frame(connection: sa.Connection, run_id: int) -> pd.DataFrame:
    """Validations in the order recorded; ``statistics`` and ``result`` decoded from JSON."""
    query = (sa.select(*(validations.c[name] for name in VALIDATION_COLUMNS))
             .where(validations.c.run_id == run_id).order_by(validations.c.id))
    frame = pd.DataFrame(connection.execute(query).all(), columns=list(VALIDATION_COLUMNS))
    frame["success"] = frame["success"].astype(bool)
    for column in ("statistics", "result"):
        frame[column] = [from_json_text(text) for text in frame[column]]
    return frame


def _with_position(table: sa.Table, columns: Sequence[str], run_id: int) -> sa.Select[Any]:
    joined = table.outerjoin(cases, sa.and_(cases.c.run_id == table.c.run_id,
                                            cases.c.case_id == table.c.case_id))
    return (sa.select(*(table.c[name] for name in columns), cases.c.position.label("_position"),
                      table.c.id.label("_id"))
            .select_from(joined).where(table.c.run_id == run_id))


def _sorted(connection: sa.Connection, query: sa.Select[Any], columns: Sequence[str],
            keys: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(connection.execute(query).all(),
                         columns=[*columns, "_position", "_id"])
    if len(frame):
        frame = frame.sort_values(["_position", "case_id", *keys, "_id"], kind="stable",
                                  na_position="last")
    frame = frame.drop(columns=["_position", "_id"]).reset_index(drop=True)
    frame["run_id"] = frame["run_id"].astype("int64")
    return frame


def _floats(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for column in columns:
        frame[column] = frame[column].astype("float64")
    return frame


def _utc(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for column in columns:
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame
