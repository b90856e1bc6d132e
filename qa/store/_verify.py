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

Each problem (and each note) is a code with its parameters (:class:`ChainProblem`: ``kind``
and ``params``; :class:`ChainNote`) and the English line ``qa verify`` prints. The line is
built from :data:`MESSAGES_EN` by :meth:`ChainProblem.text`; the report builds the same line
from its message catalogs (``chain.<key>`` in ``reports/locales/*/chain.yaml``, same keys and
fields as :data:`MESSAGES_EN`) by passing its own lookup, so a French report prints French
lines. The parameters are values from the store (table names, record keys, case ids, ledger
positions): whoever prints them as HTML escapes them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from qa.store import _schema as tables
from qa.store._ledger import CHAINED, GENESIS_HASH, RUN_FINISH_COLUMNS, chain_rows, entry_hash

__all__ = ["ChainProblem", "ChainNote", "VerifyResult", "verify_chain", "MESSAGES_EN"]

#: The English message of each key (``{name}``: a parameter; ``!r`` quotes a case id as
#: Python does). ``problem.<kind>`` is a problem's line; ``subject.*`` names the record
#: (``{subject}``); ``part.*`` are the pieces of ``{where}``, ``{missing}`` and ``{gap}``;
#: ``note.*`` the notes. The report's catalogs hold the same keys under ``chain.``.
MESSAGES_EN: Mapping[str, str] = {
    "problem.content_changed":
        "{subject}: content changed since it was recorded (ledger entry {seq})",
    "problem.record_removed": "{subject}: removed (recorded in ledger entry {seq})",
    "problem.not_in_ledger": "{subject}: not in the ledger (written behind the store's back)",
    "problem.recorded_twice": "{subject}: recorded twice (ledger entries {first_seq} and {seq})",
    "problem.entry_removed": "ledger: {missing} removed ({gap})",
    "problem.entry_changed":
        "ledger: entry {seq} ({entry_table}) changed: its hash does not match its content",
    "problem.entry_out_of_order":
        "ledger: entry {seq} ({entry_table}) does not follow entry {previous_seq}: an entry "
        "was removed, inserted or reordered",
    "problem.anchor_missing":
        "ledger: the anchor hash {anchor} is not in the chain: the ledger was truncated or "
        "rewritten after that hash was printed",
    "subject.cases": "cases ({where})",
    "subject.run_finish": "runs id {id} (the finish: {columns})",
    "subject.record": "{table} id {id}",
    "subject.record_where": "{table} id {id} ({where})",
    "part.run": "run {run}",
    "part.case": "case {case!r}",
    "part.entry": "entry {first}",
    "part.entries": "entries {first} to {last}",
    "part.starts_at": "the ledger starts at entry {seq}",
    "part.jumps": "seq jumps from {previous_seq} to {seq}",
    "note.adopted":
        "{count} records written before the hash chain existed were adopted into it on {day}; "
        "their integrity before that date is not evidenced",
}

#: ``lookup(name, **values)``: the message ``name`` (a key of :data:`MESSAGES_EN`) filled with
#: ``values`` (fields never named ``key`` or ``default``, so a catalog's ``t`` can serve).
Lookup = Callable[..., str]


def english(name: str, /, **values: Any) -> str:
    """The :data:`Lookup` of ``qa verify``: :data:`MESSAGES_EN` ``[name]`` filled with
    ``values``."""
    return MESSAGES_EN[name].format(**values)


def _compose(params: Mapping[str, Any], lookup: Lookup) -> dict[str, Any]:
    """``params`` with the composite fields built by ``lookup`` from their parts:
    ``subject`` (the record, from ``form``, ``table``, ``id``, ``run``, ``case``) and, for
    removed ledger entries, ``missing`` and ``gap``."""
    values = dict(params)
    form = values.pop("form", None)
    if form == "cases":
        where = ", ".join([lookup("part.run", run=values["run"]),
                           lookup("part.case", case=values["case"])])
        values["subject"] = lookup("subject.cases", where=where)
    elif form == "run_finish":
        values["subject"] = lookup("subject.run_finish", id=values["id"],
                                   columns=", ".join(RUN_FINISH_COLUMNS))
    elif form == "record":
        parts = [] if values["run"] is None else [lookup("part.run", run=values["run"])]
        if values["case"] is not None:
            parts.append(lookup("part.case", case=values["case"]))
        values["subject"] = (
            lookup("subject.record_where", table=values["table"], id=values["id"],
                   where=", ".join(parts)) if parts
            else lookup("subject.record", table=values["table"], id=values["id"]))
    if "first" in values:  # removed ledger entries
        values["missing"] = (
            lookup("part.entry", first=values["first"]) if values["first"] == values["last"]
            else lookup("part.entries", first=values["first"], last=values["last"]))
        values["gap"] = (
            lookup("part.jumps", previous_seq=values["previous_seq"], seq=values["seq"])
            if values["previous_seq"] else lookup("part.starts_at", seq=values["seq"]))
    return values


@dataclass(frozen=True)
class ChainProblem:
    """One thing wrong with the chain.

    ``kind``: ``content_changed`` | ``record_removed`` | ``not_in_ledger`` |
    ``entry_removed`` | ``entry_changed`` | ``entry_out_of_order`` | ``recorded_twice`` |
    ``anchor_missing``. ``table`` is the ledger's table name (``run_finish`` for the finish
    of a run, ``ledger`` for the ledger itself); ``record`` the key as text; ``message`` the
    English line (``str(problem)``, what ``qa verify`` prints). ``params`` are the fields of
    the message ``problem.<kind>`` of :data:`MESSAGES_EN` (with ``form``, ``table``, ``id``,
    ``run``, ``case`` naming the record, or ``first``, ``last``, ``previous_seq`` for removed
    entries): :meth:`text` builds the line in another language from them.
    """

    kind: str
    table: str
    record: str
    message: str
    run_id: int | None = None
    case_id: str | None = None
    seq: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        return self.message

    def text(self, lookup: Lookup = english) -> str:
        """The problem's line from ``lookup``'s messages (default English: ``message``)."""
        return lookup(f"problem.{self.kind}", **_compose(self.params, lookup))


@dataclass(frozen=True)
class ChainNote:
    """A fact about the chain that is not a problem: ``kind`` (``adopted``: records written
    before the chain existed were adopted into it), ``params`` (``count``, ``day``) and the
    English line ``message``."""

    kind: str
    message: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        return self.message

    def text(self, lookup: Lookup = english) -> str:
        """The note's line from ``lookup``'s messages (default English: ``message``)."""
        return lookup(f"note.{self.kind}", **self.params)


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :meth:`qa.store.Store.verify`.

    ``ok``: no problem; ``head_hash``: the last ledger entry's hash (None for an empty
    store); ``n_entries``, ``n_records``: ledger entries and records they cover;
    ``notes``: facts that are not problems (records adopted from before the chain), as
    English lines; ``note_items``: the same as :class:`ChainNote` records.
    """

    ok: bool
    head_hash: str | None
    n_entries: int
    n_records: int
    problems: tuple[ChainProblem, ...] = ()
    notes: tuple[str, ...] = field(default=())
    note_items: tuple[ChainNote, ...] = field(default=())


def _problem(kind: str, table: str, record: str, params: Mapping[str, Any],
             run_id: int | None = None, case_id: str | None = None,
             seq: int | None = None) -> ChainProblem:
    """A :class:`ChainProblem` whose English ``message`` is built from ``params``."""
    message = english(f"problem.{kind}", **_compose(params, english))
    return ChainProblem(kind, table, record, message, run_id, case_id, seq, dict(params))


def _subject(table: str, key: Any, run_id: int | None, case_id: str | None) -> dict[str, Any]:
    """The parameters naming a record (``{subject}``): a case by its run and case id, the
    finish of a run by the run id, any other record by table and id with its run and case."""
    if table == "cases":
        return {"form": "cases", "run": key[0], "case": key[1]}
    if table == "run_finish":
        return {"form": "run_finish", "id": key}
    return {"form": "record", "table": table, "id": key,
            "run": run_id if table != "runs" else None, "case": case_id}


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
    notes: list[ChainNote] = []
    with _snapshot(engine) as connection, connection.begin():
        expected, entries, head = _check_ledger(connection, problems, notes)
        n_records = len(expected)
        for table_name in CHAINED:
            _check_table(connection, table_name, expected, problems)
    for (table_name, key), (_, seq, run_id, case_id) in sorted(
            expected.items(), key=lambda item: item[1][1]):
        problems.append(_problem(
            "record_removed", table_name, json.dumps(list(key) if isinstance(key, tuple)
                                                     else key),
            {**_subject(table_name, key, run_id, case_id), "seq": seq}, run_id, case_id, seq))
    hashes = {entry.hash for entry in entries}
    for anchor in anchors:
        if anchor not in hashes:
            problems.append(_problem("anchor_missing", "ledger", anchor, {"anchor": anchor}))
    return VerifyResult(not problems, head, len(entries), n_records, tuple(problems),
                        tuple(note.message for note in notes), tuple(notes))


def _check_ledger(connection: sa.Connection, problems: list[ChainProblem],
                  notes: list[ChainNote]) -> tuple[dict, list, str | None]:
    ledger = tables.ledger
    entries = connection.execute(sa.select(ledger).order_by(ledger.c.seq)).all()
    expected: dict[tuple[str, Any], tuple[str, int, int | None, str | None]] = {}
    previous_hash, previous_seq, expected_seq = GENESIS_HASH, 0, 1
    adopted: dict[str, int] = {}
    for entry in entries:
        seq = int(entry.seq)
        gap = seq != expected_seq
        if gap:
            problems.append(_problem(
                "entry_removed", "ledger", str(expected_seq),
                {"first": expected_seq, "last": seq - 1, "previous_seq": previous_seq,
                 "seq": seq}, seq=expected_seq))
        recomputed = entry_hash(seq=seq, recorded_at=entry.recorded_at, kind=entry.kind,
                                table_name=entry.table_name, run_id=entry.run_id,
                                records=entry.records, prev_hash=entry.prev_hash)
        if recomputed != entry.hash:
            problems.append(_problem(
                "entry_changed", "ledger", str(seq),
                {"seq": seq, "entry_table": entry.table_name}, entry.run_id, seq=seq))
        elif entry.prev_hash != previous_hash and not gap:
            problems.append(_problem(
                "entry_out_of_order", "ledger", str(seq),
                {"seq": seq, "entry_table": entry.table_name, "previous_seq": previous_seq},
                entry.run_id, seq=seq))
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
                problems.append(_problem(
                    "recorded_twice", entry.table_name, json.dumps(key),
                    {**_subject(entry.table_name, key, entry.run_id, case_id),
                     "first_seq": expected[slot][1], "seq": seq}, entry.run_id, case_id, seq))
            expected[slot] = (digest, seq, entry.run_id, case_id)
    for day, count in adopted.items():
        params = {"count": count, "day": day}
        notes.append(ChainNote("adopted", english("note.adopted", **params), params))
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
        subject = _subject(table_name, key, run_id, case_id)
        if recorded is None:
            if table_name == "run_finish" and mapping["status"] == "running" and all(
                    mapping[c] is None for c in RUN_FINISH_COLUMNS[1:]):
                continue  # not finished yet
            problems.append(_problem("not_in_ledger", table_name, json.dumps(key), subject,
                                     run_id, case_id))
        elif recorded[0] != digest:
            problems.append(_problem("content_changed", table_name, json.dumps(key),
                                     {**subject, "seq": recorded[1]}, run_id, case_id,
                                     recorded[1]))
