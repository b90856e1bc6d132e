"""Specification of the ``qa`` command: exit codes, stdout for scripts, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from checks.base import Measurement
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


def test_run_writes_a_pdf_report_when_the_path_ends_in_pdf(tmp_path, store_url, capsys):
    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 10.0, "B": 75.0})
    report = tmp_path / "report.pdf"
    code = main(["run", str(protocol), "--store", store_url, "--report", str(report)])
    assert code == ExitCode.TOLERANCE
    assert str(report.resolve()) in capsys.readouterr().out
    assert report.read_bytes().startswith(b"%PDF-")


def test_a_pdf_that_cannot_be_printed_keeps_the_run_and_its_exit_code(tmp_path, store_url,
                                                                       capsys, monkeypatch):
    monkeypatch.setenv("QA_CHROMIUM", "no-such-browser")
    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 10.0, "B": 75.0})
    code = main(["run", str(protocol), "--store", store_url, "--report",
                 str(tmp_path / "report.pdf")])
    assert code == ExitCode.TOLERANCE
    err = capsys.readouterr().err
    assert "the run is stored but its PDF report was not written" in err
    assert "qa report 1 --format pdf" in err
    assert not (tmp_path / "report.pdf").exists()


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


def test_run_writes_junit_and_json_for_ci(tmp_path, store_url):
    import json
    import xml.etree.ElementTree as ET

    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 10.0, "B": 95.0})
    junit, summary = tmp_path / "ci" / "qa.xml", tmp_path / "ci" / "qa.json"
    code = main(["run", str(protocol), "--store", store_url, "--junit", str(junit),
                 "--json", str(summary)])
    assert code == ExitCode.ACTION
    root = ET.parse(junit).getroot()
    # 2 cases x hu_accuracy + 1 cohort mean + 2 validations; B (95 HU) fails at ACTION
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "0")
    data = json.loads(summary.read_text(encoding="utf-8"))
    assert data["exit_code"] == 20 and data["status"] == "complete"
    assert data["verdicts"] == {"OK": 2, "TOLERANCE": 0, "ACTION": 1}
    assert [(v["case_id"], v["level"]) for v in data["not_ok"]] == [("B", "ACTION")]
    assert data["junit"] == str(junit.resolve()) and data["errors"] == []
    assert data["protocol"]["name"] == "sCT HU accuracy — test"


def test_a_run_that_cannot_start_still_writes_its_ci_files(tmp_path, store_url, capsys):
    import json
    import xml.etree.ElementTree as ET

    protocol = tmp_path / "protocol.yaml"
    protocol.write_text("name: x\nkind: commissioning\n  bad: [", encoding="utf-8")
    junit, summary = tmp_path / "qa.xml", tmp_path / "qa.json"
    code = main(["run", str(protocol), "--store", store_url, "--junit", str(junit),
                 "--json", str(summary)])
    assert code == ExitCode.NOT_STARTED
    data = json.loads(summary.read_text(encoding="utf-8"))
    assert data["exit_code"] == 40 and data["run_id"] is None
    assert "malformed YAML" in data["error"]
    assert ET.parse(junit).getroot().get("errors") == "1"


def _complete_run(store_url: str, version: str = "2.1", exit_code: int = 0) -> int:
    from qa.store import Store

    with Store(store_url) as store:
        run_id = store.create_run(
            protocol_name="sCT monthly", protocol_kind="periodic", protocol_hash="a" * 64,
            protocol_text="name: sCT monthly\n", dataset_hash="b" * 64,
            case_table_path="cases.csv",
            model={"name": "mr2ct", "version": version, "adapter": "torch",
                   "sha256": "c" * 64},
            software_version="0.1.0", operator="cron", hostname="qa-host")
        store.add_verdicts(run_id, [{"check_id": "hu", "metric": "mae_hu", "level": "OK",
                                     "statistic": "mean", "value": 52.5},
                                    {"check_id": "hu", "metric": "mae_hu", "level": "ACTION",
                                     "statistic": "p95", "value": 95.0}])
        store.add_measurements(run_id, None, "bias", "subgroup_bias",
                               [Measurement("mae_hu", 7.5, "HU", "sex")])
        store.finish_run(run_id, "complete", exit_code=exit_code)
    return run_id


def test_baseline_set_keeps_the_previous_one_and_list_shows_both(store_url, capsys):
    first, second = _complete_run(store_url), _complete_run(store_url, "2.2")
    assert main(["baseline", "set", str(first), "--reason", "commissioned",
                 "--operator", "physicist A", "--store", store_url]) == 0
    assert capsys.readouterr().out.strip() == (
        f"baseline 1: run {first} of 'sCT monthly', model mr2ct 2.1")
    assert main(["baseline", "set", str(second), "--reason", "v2.2 re-commissioned",
                 "--store", store_url]) == 0
    assert "(replaces baseline 1, kept)" in capsys.readouterr().out
    assert main(["baseline", "list", "--store", store_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "commissioned" in lines[1] and "physicist A" in lines[1]
    assert lines[2].rstrip().endswith("yes") and not lines[1].rstrip().endswith("yes")


def test_baseline_set_refuses_a_blank_reason_and_a_missing_reason(store_url, capsys):
    run_id = _complete_run(store_url)
    assert main(["baseline", "set", str(run_id), "--reason", " ", "--store",
                 store_url]) == ExitCode.NOT_STARTED
    assert "a baseline needs a reason" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["baseline", "set", str(run_id), "--store", store_url])
    assert exit_info.value.code == ExitCode.USAGE
    assert "--reason" in capsys.readouterr().err


def test_history_lists_runs_with_their_cohort_statistics(store_url, capsys):
    first = _complete_run(store_url)
    _complete_run(store_url, "2.2", exit_code=20)
    assert main(["baseline", "set", str(first), "--reason", "r", "--store", store_url]) == 0
    capsys.readouterr()
    assert main(["history", "--protocol", "sCT monthly", "--metric", "mae_hu",
                 "--store", store_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["run_id", "started_at", "protocol"]
    assert header[-3:] == ["hu.mean(mae_hu)", "hu.p95(mae_hu)", "bias.value(mae_hu[sex])"]
    assert len(lines) == 3
    assert "52.5 OK" in lines[1] and "95 ACTION" in lines[1] and "active" in lines[1]
    assert lines[1].split()[-1] == "7.5"  # an ungraded cohort result: the value alone
    assert "mr2ct 2.2" in lines[2] and " 20 " in lines[2]
    assert main(["history", "--protocol", "other", "--store", store_url]) == 0
    assert "no runs of protocol 'other'" in capsys.readouterr().err
    assert main(["history", "--metric", "mae_hu[]", "--store", store_url]) == ExitCode.USAGE
    assert "write metric, metric[label]" in capsys.readouterr().err
