"""The SHA-256 hash chain of the store (``ledger``): canonical content, digests, appends.

Every write transaction of :class:`qa.store.Store` appends one ledger entry, in the same
transaction and under the store's write lock, listing the records it stored. Conventions
(documented in ``docs/store.md``; changing any of them breaks the verification of every
existing store, so they are frozen):

Canonical content of a record
    The record as the database returns it, through the store's column types, in the writing
    transaction (``INSERT … RETURNING`` every column, or a read-back), so the digest covers
    what the database holds and ``qa verify`` reads it back the same way; it is then
    serialised as JSON ``{"table": T, "content": {column: value}}`` with sorted keys, the
    separators ``","`` and ``":"`` and ASCII escapes. Columns whose value is NULL (or NaN,
    which the store keeps as NULL) are left out, so adding a nullable column later does not
    change old digests. Values: text as is (JSON columns as their stored text), integers as
    JSON integers, booleans as ``true``/``false``, floats as the text of Python's shortest
    round-trip ``repr`` (``"0.1"``, ``"inf"``, ``"-inf"``; ``-0.0`` as ``"0.0"``), datetimes
    as UTC ``"YYYY-MM-DDTHH:MM:SS.ffffffZ"``. SQLite and PostgreSQL give the same bytes.
Record digest
    Hex SHA-256 of those bytes. ``runs`` is chained in two parts: ``runs`` (every column but
    the four that :meth:`~qa.store.Store.finish_run` sets) when the run is created, and
    ``run_finish`` (``id``, ``status``, ``finished_at``, ``exit_code``, ``summary``) when it
    is finished.
Ledger entry
    ``records`` = JSON list of ``[key, case_id, digest]`` (key: the record id, or
    ``[run_id, case_id]`` for ``cases``); ``hash`` = hex SHA-256 of the JSON object
    ``{"seq", "recorded_at", "kind", "table", "run_id", "records", "prev_hash"}`` (same JSON
    conventions, ``records`` as its stored text), where ``prev_hash`` is the previous entry's
    ``hash`` (64 zeros for entry 1). ``seq`` counts 1, 2, 3 … without gaps.

The chain serialises writers: SQLite write transactions start with ``BEGIN IMMEDIATE``;
on PostgreSQL every write first takes ``LOCK TABLE ledger IN EXCLUSIVE MODE`` (readers are
not blocked). This is tamper *evidence*, not a signature: someone who rewrites a record and
recomputes every later entry is caught only by comparing the head hash with one kept
elsewhere (the report prints it; ``qa verify --anchor HASH``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from qa.store import _schema as tables

__all__ = ["GENESIS_HASH", "CHAINED", "RUN_FINISH_COLUMNS", "canonical_bytes", "record_digest",
           "entry_hash", "lock", "chain", "chain_rows", "append_rows", "adopt_unchained",
           "record_key",
           "chain_table", "content_of"]

GENESIS_HASH = "0" * 64
RUN_FINISH_COLUMNS = ("status", "finished_at", "exit_code", "summary")

# ledger table name -> stored table
CHAINED: dict[str, sa.Table] = {
    "runs": tables.runs, "run_finish": tables.runs, "cases": tables.cases,
    "measurements": tables.measurements, "verdicts": tables.verdicts,
    "errors": tables.errors, "validations": tables.validations, "details": tables.details,
    "baselines": tables.baselines, "audit_events": tables.audit_events,
}


def _canonical_value(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return "0.0" if number == 0.0 else repr(number)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be chained")
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raise TypeError(f"no canonical form for {type(value).__name__} values")


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def canonical_bytes(table_name: str, content: Mapping[str, Any]) -> bytes:
    """The canonical serialisation of one record (module docstring), as ASCII bytes."""
    values = {str(k): _canonical_value(v) for k, v in content.items() if not _is_null(v)}
    return _dumps({"table": table_name, "content": values}).encode("ascii")


def record_digest(table_name: str, content: Mapping[str, Any]) -> str:
    """Hex SHA-256 of :func:`canonical_bytes`."""
    return hashlib.sha256(canonical_bytes(table_name, content)).hexdigest()


def content_of(table_name: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a stored row that ``table_name``'s digest covers."""
    if table_name == "runs":
        return {k: v for k, v in row.items() if k not in RUN_FINISH_COLUMNS}
    if table_name == "run_finish":
        return {k: row[k] for k in ("id", *RUN_FINISH_COLUMNS)}
    return dict(row)


def record_key(table_name: str, row: Mapping[str, Any]) -> Any:
    """The key a ledger entry names a record by: its id, or ``[run_id, case_id]`` for cases."""
    if table_name == "cases":
        return [int(row["run_id"]), str(row["case_id"])]
    return int(row["id"])


def entry_hash(*, seq: int, recorded_at: dt.datetime, kind: str, table_name: str,
               run_id: int | None, records: str, prev_hash: str) -> str:
    """Hex SHA-256 of one ledger entry's canonical JSON (module docstring)."""
    payload = {"seq": int(seq), "recorded_at": _canonical_value(recorded_at), "kind": kind,
               "table": table_name, "run_id": None if run_id is None else int(run_id),
               "records": records, "prev_hash": prev_hash}
    return hashlib.sha256(_dumps(payload).encode("ascii")).hexdigest()


def lock(connection: sa.Connection) -> None:
    """Serialise chain appends: PostgreSQL ``LOCK TABLE ledger IN EXCLUSIVE MODE`` (held to
    the end of the transaction); SQLite writers already hold the lock (``BEGIN IMMEDIATE``)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("LOCK TABLE ledger IN EXCLUSIVE MODE")


def chain_table(table_name: str) -> sa.Table:
    return CHAINED[table_name]


def _key_filter(table_name: str, keys: Sequence[Any]) -> sa.ColumnElement[bool]:
    table = CHAINED[table_name]
    if table_name == "cases":
        run_ids = {int(k[0]) for k in keys}
        if len(run_ids) != 1:
            raise ValueError("chain(): cases of one run per entry")
        return sa.and_(table.c.run_id == run_ids.pop(),
                       table.c.case_id.in_([str(k[1]) for k in keys]))
    return table.c.id.in_([int(k) for k in keys])


def chain_rows(table_name: str, rows: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """``[key, case_id, digest]`` of stored rows (read through the store's types)."""
    records = []
    for row in rows:
        case_id = None if table_name in ("runs", "run_finish") else row.get("case_id")
        records.append([record_key(table_name, row), case_id,
                        record_digest(table_name, content_of(table_name, row))])
    return records


def chain(connection: sa.Connection, table_name: str, keys: Sequence[Any],
          run_id: int | None) -> None:
    """Read back the records ``keys`` of ``table_name`` just written in this transaction
    and append one ledger entry for them. The caller holds the lock (:func:`lock`)."""
    if not keys:
        return
    table = CHAINED[table_name]
    rows = [row._mapping for row in connection.execute(
        sa.select(table).where(_key_filter(table_name, keys)))]
    if len(rows) != len(keys):
        raise RuntimeError(f"{table_name}: {len(keys)} records written but {len(rows)} read "
                           "back; nothing was stored")
    append_rows(connection, table_name, rows, run_id)


def append_rows(connection: sa.Connection, table_name: str,
                rows: Sequence[Mapping[str, Any]], run_id: int | None) -> None:
    """Append one ledger entry for ``rows`` as the database returned them (``INSERT …
    RETURNING`` every column, or a read-back), in the caller's locked transaction."""
    records = chain_rows(table_name, rows)
    records.sort(key=lambda record: record[0])
    _append(connection, "write", table_name, run_id, records)


def _append(connection: sa.Connection, kind: str, table_name: str, run_id: int | None,
            records: list[list[Any]]) -> None:
    ledger = tables.ledger
    last = connection.execute(sa.select(ledger.c.seq, ledger.c.hash)
                              .order_by(ledger.c.seq.desc()).limit(1)).first()
    seq, prev_hash = (1, GENESIS_HASH) if last is None else (int(last.seq) + 1, last.hash)
    recorded_at = dt.datetime.now(dt.timezone.utc)
    text = json.dumps(records, separators=(",", ":"), ensure_ascii=True)
    connection.execute(ledger.insert(), {
        "seq": seq, "recorded_at": recorded_at, "kind": kind, "table_name": table_name,
        "run_id": run_id, "records": text, "prev_hash": prev_hash,
        "hash": entry_hash(seq=seq, recorded_at=recorded_at, kind=kind, table_name=table_name,
                           run_id=run_id, records=text, prev_hash=prev_hash)})


def adopt_unchained(connection: sa.Connection) -> int:
    """Chain the records written before the ledger existed; return how many.

    Called once, in the transaction that upgrades a store from a revision before 0004 to
    head: one ledger entry of kind ``adopted`` per table that holds rows (``run_finish`` for
    the runs already finished). Does nothing when the ledger already has entries.
    """
    ledger = tables.ledger
    if connection.execute(sa.select(ledger.c.seq).limit(1)).first() is not None:
        return 0
    lock(connection)
    adopted = 0
    for table_name, table in CHAINED.items():
        query = sa.select(table)
        if table_name == "run_finish":
            query = query.where(table.c.status != "running")
        rows = [row._mapping for row in connection.execute(query)]
        if rows:
            records = chain_rows(table_name, rows)
            records.sort(key=lambda record: record[0])
            _append(connection, "adopted", table_name, None, records)
            adopted += len(records)
    return adopted
