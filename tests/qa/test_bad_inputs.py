"""Specification: every malformed input gives one clear line, and never sinks a run.

Each entry of :mod:`tests.bad_inputs.corpus` must raise the expected error type whose
``str()`` is ONE line naming the file and the field (when the input has one) and saying
what to do; in a run, a bad case is one stored error naming the case while the good cases
are measured; and ``qa run`` prints no traceback.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from qa.cli import main
from qa.dataset import load_cases
from qa.errors import CaseTableError, QAInputError
from qa.exitcodes import ExitCode
from qa.protocol import load_protocol
from qa.runner import run_protocol
from qa.store import Store
from tests.bad_inputs.corpus import (
    ALL_INPUTS,
    PROTOCOL_INPUTS,
    READER_INPUTS,
    TABLE_INPUTS,
    BadInput,
    bad_row,
    read_as,
    write_cohort,
)

#: Words by which a message tells the user what to do.
REMEDY = re.compile(r"\b(export|re-export|fix|give|check|remove|add|use|set|write|move|"
                    r"threshold|keep|save|pair|rename|correct|fill|resample|convert|crop|"
                    r"install|delete|quote|put|widen)\b", re.IGNORECASE)


def assert_one_clear_line(error: QAInputError, entry: BadInput, file: Path) -> None:
    """One line, the diagnosis, the file, the field, and what to do."""
    message = str(error)
    assert "\n" not in message, message
    assert entry.expect in message, message
    assert error.path is not None and error.path.startswith(str(file)), (error.path, file)
    assert str(error.path) in message
    if entry.field is not None:
        assert error.field == entry.field, message
        assert f"field {entry.field}" in message
    assert REMEDY.search(error.message), f"no remedy in: {message}"


def test_the_corpus_covers_every_reader_the_table_and_the_protocol():
    assert len(ALL_INPUTS) >= 30
    assert len({entry.id for entry in ALL_INPUTS}) == len(ALL_INPUTS)
    assert {entry.where for entry in ALL_INPUTS} == {"ct", "sct", "body", "dose_ref",
                                                     "rtstruct", "table", "protocol"}


@pytest.mark.parametrize("entry", [e for e in READER_INPUTS if e.reader_raises],
                         ids=lambda e: e.id)
def test_a_bad_file_is_one_line_naming_file_and_field(entry, tmp_path):
    path = entry.build(tmp_path)
    with pytest.raises(entry.error) as info:
        read_as(entry.where, path)
    assert_one_clear_line(info.value, entry, path)
    assert "case 'C7'" in str(info.value.located(case_id="C7"))


@pytest.mark.parametrize("entry", [e for e in TABLE_INPUTS if not e.stops_run],
                         ids=lambda e: e.id)
def test_a_bad_row_leaves_its_case_out_with_one_line_naming_case_and_column(entry, tmp_path):
    protocol = load_protocol(entry.build(tmp_path / "data"))
    table = load_cases(protocol)
    assert [case.case_id for case in table.cases] == ["G1", "G2"]
    problems = [p for p in table.problems if p.case_id == "BAD"]
    assert problems and len(problems) == len(table.problems)
    for problem in problems:
        assert isinstance(problem, entry.error)
        assert "case 'BAD'" in str(problem)
        assert_one_clear_line(problem, entry, protocol.case_table_path)


@pytest.mark.parametrize("entry", [e for e in TABLE_INPUTS if e.stops_run],
                         ids=lambda e: e.id)
def test_a_broken_table_stops_with_one_line(entry, tmp_path):
    protocol = load_protocol(entry.build(tmp_path / "data"))
    with pytest.raises(CaseTableError) as info:
        load_cases(protocol)
    assert_one_clear_line(info.value, entry, protocol.case_table_path)


@pytest.mark.parametrize("entry", PROTOCOL_INPUTS, ids=lambda e: e.id)
def test_a_bad_protocol_stops_with_one_line(entry, tmp_path):
    path = entry.build(tmp_path / "data")
    with pytest.raises(entry.error) as info:
        load_cases(load_protocol(path))
    named = path.with_name("missing.csv") if entry.id == "cases-not-found" else path
    assert_one_clear_line(info.value, entry, named.resolve())


def _mixed_cohort(folder: Path, entries: list[BadInput]) -> tuple[Path, dict[str, BadInput]]:
    """Good cases G1, G2 and one bad case per entry (id ``B<n>``); returns the protocol."""
    rows, by_case = [], {}
    for n, entry in enumerate(entries):
        case_id = f"B{n:02d}"
        by_case[case_id] = entry
        if entry.where == "table":
            rows.extend(entry.build.rows(folder, case_id))  # type: ignore[attr-defined]
        else:
            target = folder / f"{case_id}-bad"
            target.mkdir(parents=True)
            bad = entry.build(target)
            rows.append(bad_row(folder, case_id, entry.where, str(bad.relative_to(folder))))
    return write_cohort(folder, rows), by_case


CASE_ENTRIES = [e for e in READER_INPUTS if e.where != "rtstruct"] + [
    e for e in TABLE_INPUTS if not e.stops_run]


@pytest.mark.slow  # one run over ~50 cases (every bad input at once): ~15-25 s
def test_a_run_stores_the_good_cases_and_one_error_per_bad_case(tmp_path):
    protocol, by_case = _mixed_cohort(tmp_path / "data", CASE_ENTRIES)
    store = Store(f"sqlite:///{tmp_path / 'qa.db'}")
    try:
        outcome = run_protocol(protocol, store)
        errors = store.errors(outcome.run_id)
        measurements = store.measurements(outcome.run_id)
    finally:
        store.close()
    assert int(outcome.exit_code) == 30
    assert set(measurements.case_id) >= {"G1", "G2"}
    for good in ("G1", "G2"):
        assert set(measurements[measurements.case_id == good].check_id) == {"hu_accuracy",
                                                                           "gamma"}
    assert not set(errors.case_id) & {"G1", "G2"}
    assert set(errors.case_id) == set(by_case)
    for case_id, entry in by_case.items():
        rows = errors[errors.case_id == case_id]
        assert all("\n" not in message for message in rows.message), case_id
        matching = rows[rows.message.str.contains(entry.expect, regex=False)]
        assert len(matching) >= 1, (entry.id, rows.message.tolist())
        if entry.where == "table":
            assert entry.field in set(matching.field), (entry.id, matching.field.tolist())
        else:
            assert set(matching.role) == {entry.where}, (entry.id, matching.role.tolist())
            if entry.field is not None:
                assert entry.field in set(matching.field), (entry.id, matching.field.tolist())


def _qa_run(protocol: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qa", "run", str(protocol), "--store",
         f"sqlite:///{tmp_path / 'cli.db'}"], capture_output=True, text=True, timeout=300,
        cwd=tmp_path, check=False)


@pytest.mark.slow  # one `python -m qa run` subprocess: ~15-40 s of imports on a loaded machine
def test_qa_run_reports_bad_cases_without_a_traceback(tmp_path):
    chosen = ("header-100000-cubed-mha", "series-hu-without-rescale", "rtdose-negative",
              "mask-nan", "path-escaping-with-dotdot", "duplicate-case-id")
    entries = [e for e in CASE_ENTRIES if e.id in chosen]
    protocol, by_case = _mixed_cohort(tmp_path / "data", entries)
    done = _qa_run(protocol, tmp_path)
    assert done.returncode == 30, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    for case_id, entry in by_case.items():
        lines = [line for line in done.stderr.splitlines() if f"'{case_id}'" in line
                 or f"case {case_id}:" in line]
        assert any(entry.expect in line for line in lines), (entry.id, lines)


@pytest.mark.parametrize("entry_id", ["version-as-number", "malformed-yaml",
                                      "table-not-utf8", "table-without-case-id"])
def test_qa_run_that_cannot_start_prints_one_line(entry_id, tmp_path, capsys):
    entry = next(e for e in ALL_INPUTS if e.id == entry_id)
    protocol = entry.build(tmp_path / "data")
    code = main(["run", str(protocol), "--store", f"sqlite:///{tmp_path / 'cli.db'}"])
    assert code == ExitCode.NOT_STARTED
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("qa run: error:")]
    assert len(errors) == 1 and entry.expect in errors[0], err
    assert "Traceback" not in err
