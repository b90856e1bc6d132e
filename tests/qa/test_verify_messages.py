"""Specification of the problem lines of ``qa verify``: structured (a code and its parameters)
so that the report can print them in its language, while ``qa verify`` prints the same English
lines as before they were structured.

``CLI_LINES`` were captured from ``qa verify`` before the change (ALARA-QA 0cb9c14), on the
store :func:`tests.qa.tampering.tamper_every_way` builds; they name one problem of each kind
and each form of record.
"""

from __future__ import annotations

import string

import pytest

from qa.cli import main
from qa.store import Store
from qa.store._verify import MESSAGES_EN, ChainNote, ChainProblem, english
from reports._format import _catalog
from tests.qa.tampering import tamper_every_way

ANCHOR = "f" * 64
CLI_LINES = [
    'ledger: entry 1 removed (the ledger starts at entry 2)',
    'ledger: entry 3 (cases) changed: its hash does not match its content',
    'ledger: entry 4 (cases) changed: its hash does not match its content',
    'ledger: entry 5 (measurements) does not follow entry 4: an entry was removed, inserted '
    'or reordered',
    'ledger: entry 6 (measurements) changed: its hash does not match its content',
    'ledger: entry 10 (errors) changed: its hash does not match its content',
    "errors id 1 (run 1, case 'p03'): recorded twice (ledger entries 9 and 10)",
    'ledger: entries 13 to 14 removed (seq jumps from 12 to 15)',
    'ledger: entry 16 removed (seq jumps from 15 to 17)',
    "runs id 1: not in the ledger (written behind the store's back)",
    "runs id 2: not in the ledger (written behind the store's back)",
    'runs id 1 (the finish: status, finished_at, exit_code, summary): content changed since '
    'it was recorded (ledger entry 12)',
    "cases (run 2, case '<b>p9</b>'): content changed since it was recorded (ledger entry 17)",
    "measurements id 1 (run 1, case 'p02'): content changed since it was recorded (ledger "
    "entry 5)",
    "errors id 2 (run 1): not in the ledger (written behind the store's back)",
    "errors id 3 (run 2, case '<i>p7</i>'): not in the ledger (written behind the store's "
    "back)",
    "baselines id 1 (run 1): not in the ledger (written behind the store's back)",
    "audit_events id 1 (run 1): not in the ledger (written behind the store's back)",
    "verdicts id 1 (run 1, case 'p02'): removed (recorded in ledger entry 7)",
    'ledger: the anchor hash ' + ANCHOR + ' is not in the chain: the ledger was truncated or '
    'rewritten after that hash was printed',
]
#: Messages made of table names and ids only (the store's identifiers are not translated).
SAME_IN_FRENCH = {"subject.cases", "subject.record", "subject.record_where"}
KINDS = {"content_changed", "record_removed", "not_in_ledger", "recorded_twice",
         "entry_removed", "entry_changed", "entry_out_of_order", "anchor_missing"}


@pytest.fixture()
def tampered(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        tamper_every_way(store)
        yield store


def test_qa_verify_prints_the_same_english_lines_as_before(tampered, capsys):
    assert main(["verify", "--store", tampered.url, "--anchor", ANCHOR]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:-1] == CLI_LINES
    assert lines[-1].startswith("chain BROKEN: 20 problems; head ")


def test_each_problem_is_a_code_with_parameters_that_rebuild_its_line(tampered):
    problems = tampered.verify(anchors=[ANCHOR]).problems
    assert {p.kind for p in problems} == KINDS
    for problem in problems:
        assert isinstance(problem, ChainProblem)
        assert problem.text() == problem.text(english) == problem.message == str(problem)
    by_line = {p.message: p for p in problems}
    case = by_line[CLI_LINES[12]]
    assert (case.kind, dict(case.params)) == (
        "content_changed", {"form": "cases", "run": 2, "case": "<b>p9</b>", "seq": 17})
    gap = by_line[CLI_LINES[7]]
    assert (gap.kind, dict(gap.params)) == (
        "entry_removed", {"first": 13, "last": 14, "previous_seq": 12, "seq": 15})
    planted = by_line[CLI_LINES[15]]
    assert dict(planted.params) == {"form": "record", "table": "errors", "id": 3, "run": 2,
                                    "case": "<i>p7</i>"}


def test_another_lookup_builds_every_piece_of_a_line(tampered):
    def marked(name, /, **values):  # each message it gives is bracketed
        return "[" + MESSAGES_EN[name].format(**values) + "]"

    problems = tampered.verify().problems
    problem = next(p for p in problems if p.kind == "content_changed"
                   and p.table == "measurements")
    assert problem.text(marked) == ("[[measurements id 1 ([run 1], [case 'p02'])]: content "
                                    "changed since it was recorded (ledger entry 5)]")
    gap = next(p for p in problems if p.kind == "entry_removed" and p.seq == 13)
    assert gap.text(marked) == "[ledger: [entries 13 to 14] removed ([seq jumps from 12 to 15])]"


def _fields(message: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(message) if name}


def test_the_report_catalogs_hold_every_message_with_the_same_fields():
    english_catalog, french = _catalog("en"), _catalog("fr")
    for name, message in MESSAGES_EN.items():
        assert english_catalog[f"chain.{name}"] == message, name  # the report = qa verify
        assert _fields(french[f"chain.{name}"]) == _fields(message), name
        assert (french[f"chain.{name}"] != message) is (name not in SAME_IN_FRENCH), name


def test_an_adopted_note_is_structured_too():
    note = ChainNote("adopted", english("note.adopted", count=5, day="2026-01-02 00:00 UTC"),
                     {"count": 5, "day": "2026-01-02 00:00 UTC"})
    assert str(note) == note.text() == (
        "5 records written before the hash chain existed were adopted into it on "
        "2026-01-02 00:00 UTC; their integrity before that date is not evidenced")
