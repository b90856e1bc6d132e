"""Specification of the ``qa`` command: exit codes, stdout for scripts, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from qa.cli import main
from qa.exitcodes import ExitCode
from tests.cohort_builders import write_precomputed_cohort


@pytest.fixture()
def store_url(tmp_path):
    return f"sqlite:///{tmp_path / 'qa.db'}"


def test_run_exits_with_the_worst_level_and_writes_the_report(tmp_path, store_url, capsys):
    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 10.0, "B": 75.0})
    report = tmp_path / "report.html"
    code = main(["run", str(protocol), "--store", store_url, "--report", str(report)])
    assert code == ExitCode.TOLERANCE
    out = capsys.readouterr().out
    assert str(report.resolve()) in out
    assert report.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")


def test_run_exits_zero_when_everything_is_within_tolerance(tmp_path, store_url):
    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 10.0, "B": -15.0})
    assert main(["run", str(protocol), "--store", store_url]) == ExitCode.OK


def test_runs_export_and_report_read_the_store(tmp_path, store_url, capsys):
    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 10.0, "B": 95.0})
    assert main(["run", str(protocol), "--store", store_url]) == ExitCode.ACTION
    capsys.readouterr()

    assert main(["runs", "--store", store_url]) == 0
    listing = capsys.readouterr().out
    assert "sCT HU accuracy" in listing and "complete" in listing

    out_dir = tmp_path / "export"
    assert main(["export", "1", "--store", store_url, "--out", str(out_dir)]) == 0
    files = capsys.readouterr().out.split()
    measurements = pd.read_csv(next(f for f in files if "measurements" in f))
    mae = measurements[(measurements.metric == "mae_hu") & measurements.label.isna()]
    assert mae.value.round(3).tolist() == [10.0, 95.0]

    html = tmp_path / "again.html"
    assert main(["report", "1", "--store", store_url, "--out", str(html), "--lang", "fr"]) == 0
    assert html.exists()


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("name: x\nkind: commissioning\n  bad: [", "line"),
        ("name: x\nkind: commissioning\nmodel: {name: m, version: '1', adapter: precomputed, "
         "output: sct}\ncases: cases.csv\nchecks:\n  - check: no_such_check\n",
         "no_such_check"),
        ("name: x\nkind: commissioning\nmodel: {name: m, version: '1', adapter: precomputed, "
         "output: sct}\ncases: cases.csv\nchecks:\n  - check: hu_accuracy\n    reference: ct\n"
         "    evaluated: sct\n    tolerances:\n      mae_hu: {tolerance: {max: 90}, "
         "action: {max: 70}}\n", "mae_hu"),
    ],
    ids=["malformed-yaml", "unknown-check", "bounds-in-wrong-order"],
)
def test_a_bad_protocol_stops_before_anything_is_stored(tmp_path, store_url, capsys,
                                                        yaml_text, expected):
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(yaml_text, encoding="utf-8")
    code = main(["run", str(protocol), "--store", store_url])
    assert code == ExitCode.NOT_STARTED
    err = capsys.readouterr().err
    assert str(protocol) in err and expected in err
    assert main(["runs", "--store", store_url]) == 0
    assert "no runs" in capsys.readouterr().err


def test_unknown_run_id_is_a_clear_error(store_url, capsys):
    assert main(["report", "42", "--store", store_url]) == ExitCode.NOT_STARTED
    assert "42" in capsys.readouterr().err


def test_python_dash_m_qa_is_the_same_command():
    done = subprocess.run([sys.executable, "-m", "qa", "--help"], capture_output=True,
                          text=True, check=True)
    assert "exit codes" in done.stdout and "qa run" not in done.stderr


def test_an_unusable_store_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    url = f"sqlite:///{blocker / 'qa.db'}"
    assert main(["runs", "--store", url]) == ExitCode.NOT_STARTED
    assert "qa runs: error:" in capsys.readouterr().err
