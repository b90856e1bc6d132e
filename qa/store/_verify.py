"""Re-check the store's hash chain (``qa verify``): name every record changed or removed.

The checks, all against what :mod:`qa.store._ledger` wrote:

1. the ledger itself: ``seq`` runs 1, 2, 3 … without gaps (a gap: entries removed), each
   entry's ``hash`` matches its fields (else: entry changed), each ``prev_hash`` is the
   previous entry's hash (else: an entry was removed, inserted or reordered);
2. every record a ledger entry lists is still there (else: removed) with the same digest
   (else: content changed);
3. every record in the tables is listed by some entry (else: not in the ledger, i.e. written
   behind the store's back); a run that is not ``running`` must have its ``run_finish``.

Reads one snapshot (PostgreSQL ``REPEATABLE READ``; a SQLite read transaction), so it may run
while others write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from qa.store import _schema as tables
from qa.store._ledger import CHAINED, GENESIS_HASH, RUN_FINISH_COLUMNS, chain_rows, entry_hash

__all__ = ["ChainProblem", "VerifyResult", "verify_chain"]


@dataclass(frozen=True)
class ChainProblem:
    """One thing wrong with the chain.

    ``kind``: ``content_changed`` | ``record_removed`` | ``not_in_ledger`` |
    ``entry_removed`` | ``entry_changed`` | ``entry_out_of_order`` | ``recorded_twice`` |
    ``anchor_missing``. ``table`` is the ledger's table name (``run_finish`` for the finish
    of a run, ``ledger`` for the ledger itself); ``record`` the key as text.
    """

    kind: str
    table: str
    record: str
    message: str
    run_id: int | None = None
    case_id: str | None = None
    seq: int | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :meth:`qa.store.Store.verify`.

    ``ok``: no problem; ``head_hash``: the last ledger entry's hash (None for an empty
    store); ``n_entries``, ``n_records``: ledger entries and records they cover;
    ``notes``: facts that are not problems (records adopted from before the chain).
    """

    ok: bool
    head_hash: str | None
    n_entries: int
    n_records: int
    problems: tuple[ChainProblem, ...] = ()
    notes: tuple[str, ...] = field(default=())


def _describe(table: str, key: Any, run_id: int | None, case_id: str | None) -> str:
    if table == "cases":
        return f"cases (run {key[0]}, case {key[1]!r})"
    if table == "run_finish":
        return f"runs id {key} (the finish: {', '.join(RUN_FINISH_COLUMNS)})"
    where = [f"run {run_id}"] if run_id is not None and table != "runs" else []
    if case_id is not None:
        where.append(f"case {case_id!r}")
    return f"{table} id {key}" + (f" ({', '.join(where)})" if where else "")


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _snapshot(engine: sa.Engine) -> sa.Connection:
    connection = engine.connect()
    if engine.dialect.name == "postgresql":
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
    return connection


def verify_chain(engine: sa.Engine, anchors: Iterable[str] = ()) -> VerifyResult:
    """Re-check the whole chain; see the module docstring."""
    problems: list[ChainProblem] = []
    notes: list[str] = []
    with _snapshot(engine) as connection, connection.begin():
        expected, entries, head = _check_ledger(connection, problems, notes)
        n_records = len(expected)
        for table_name in CHAINED:
            _check_table(connection, table_name, expected, problems)
    for (table_name, key), (_, seq, run_id, case_id) in sorted(
            expected.items(), key=lambda item: item[1][1]):
        problems.append(ChainProblem(
            "record_removed", table_name, json.dumps(list(key) if isinstance(key, tuple)
                                                     else key),
            f"{_describe(table_name, key, run_id, case_id)}: removed (recorded in ledger "
            f"entry {seq})", run_id, case_id, seq))
    hashes = {entry.hash for entry in entries}
    for anchor in anchors:
        if anchor not in hashes:
            problems.append(ChainProblem(
                "anchor_missing", "ledger", anchor,
                f"ledger: the anchor hash {anchor} is not in the chain: the ledger was "
                "truncated or rewritten after that hash was printed"))
    return VerifyResult(not problems, head, len(entries), n_records, tuple(problems),
                        tuple(notes))


def _check_ledger(connection: sa.Connection, problems: list[ChainProblem],
                  notes: list[str]) -> tuple[dict, list, str | None]:
    ledger = tables.ledger
    entries = connection.execute(sa.select(ledger).order_by(ledger.c.seq)).all()
    expected: dict[tuple[str, Any], tuple[str, int, int | None, str | None]] = {}
    previous_hash, previous_seq, expected_seq = GENESIS_HASH, 0, 1
    adopted: dict[str, int] = {}
    for entry in entries:
        seq = int(entry.seq)
        gap = seq != expected_seq
        if gap:
            missing = (f"entry {expected_seq}" if seq == expected_seq + 1
                       else f"entries {expected_seq} to {seq - 1}")
            where = (f"the ledger starts at entry {seq}" if previous_seq == 0
                     else f"seq jumps from {previous_seq} to {seq}")
            problems.append(ChainProblem(
                "entry_removed", "ledger", str(expected_seq),
                f"ledger: {missing} removed ({where})", seq=expected_seq))
        recomputed = entry_hash(seq=seq, recorded_at=entry.recorded_at, kind=entry.kind,
                                table_name=entry.table_name, run_id=entry.run_id,
                                records=entry.records, prev_hash=entry.prev_hash)
        if recomputed != entry.hash:
            problems.append(ChainProblem(
                "entry_changed", "ledger", str(seq),
                f"ledger: entry {seq} ({entry.table_name}) changed: its hash does not match "
                "its content", entry.run_id, seq=seq))
        elif entry.prev_hash != previous_hash and not gap:
            problems.append(ChainProblem(
                "entry_out_of_order", "ledger", str(seq),
                f"ledger: entry {seq} ({entry.table_name}) does not follow entry "
                f"{previous_seq}: an entry was removed, inserted or reordered", entry.run_id,
                seq=seq))
        previous_hash, previous_seq, expected_seq = entry.hash, seq, seq + 1
        try:
            records = json.loads(entry.records)
        except ValueError:
            continue  # reported above: the hash covers the text
        if entry.kind == "adopted":
            day = f"{entry.recorded_at:%Y-%m-%d %H:%M} UTC"
            adopted[day] = adopted.get(day, 0) + len(records)
        for key, case_id, digest in records:
            slot = (entry.table_name, _hashable(key))
            if slot in expected:
                problems.append(ChainProblem(
                    "recorded_twice", entry.table_name, json.dumps(key),
                    f"{_describe(entry.table_name, key, entry.run_id, case_id)}: recorded "
                    f"twice (ledger entries {expected[slot][1]} and {seq})", entry.run_id,
                    case_id, seq))
            expected[slot] = (digest, seq, entry.run_id, case_id)
    for day, count in adopted.items():
        notes.append(f"{count} records written before the hash chain existed were adopted "
                     f"into it on {day}; their integrity before that date is not evidenced")
    return expected, entries, entries[-1].hash if entries else None


def _check_table(connection: sa.Connection, table_name: str, expected: dict,
                 problems: list[ChainProblem]) -> None:
    table = CHAINED[table_name]
    for row in connection.execute(sa.select(table)):
        mapping = row._mapping
        [(key, case_id, digest)] = chain_rows(table_name, [mapping])
        run_id = mapping["id"] if table_name in ("runs", "run_finish") else mapping.get("run_id")
        slot = (table_name, _hashable(key))
        recorded = expected.pop(slot, None)
        where = _describe(table_name, key, run_id, case_id)
        if recorded is None:
            if table_name == "run_finish" and mapping["status"] == "running" and all(
                    mapping[c] is None for c in RUN_FINISH_COLUMNS[1:]):
                continue  # not finished yet
            problems.append(ChainProblem(
                "not_in_ledger", table_name, json.dumps(key),
                f"{where}: not in the ledger (written behind the store's back)",
                run_id, case_id))
        elif recorded[0] != digest:
            problems.append(ChainProblem(
                "content_changed", table_name, json.dumps(key),
                f"{where}: content changed since it was recorded (ledger entry "
                f"{recorded[1]})", run_id, case_id, recorded[1]))
