"""Specification of the JUnit XML of a run (``qa run --junit``), read back with xml.etree.

Expected outcomes come from the cohort's known answers: the MAE of each case is |offset| HU
(see ``tests/cohort_builders.py``), graded against tolerance 70 HU and action 90 HU.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from qa.junit import junit_xml, not_started_junit_xml
from qa.runner import run_protocol
from qa.store import Store
from tests.cohort_builders import write_precomputed_cohort

_MISSING = {"case_id": "MISSING", "ct": "nowhere/ct.nii.gz", "sct": "A/sct.nii.gz",
            "body": "A/body.nii.gz", "sex": "F", "bmi": "25"}


@pytest.fixture()
def store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as opened:
        yield opened


@pytest.fixture()
def spread_check(monkeypatch):
    import checks.registry
    from tests.qa.test_runner import _Spread

    monkeypatch.setitem(checks.registry._REGISTRY, "mae_spread", "tests.qa.test_runner:_Spread")
    return _Spread


def _outcomes(root: ET.Element) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(classname, name) -> (outcome, type, message) of every test case."""
    out = {}
    for testcase in root.iter("testcase"):
        element = testcase.find("failure")
        if element is None:
            element = testcase.find("error")
        outcome = "pass" if element is None else element.tag
        out[(testcase.get("classname"), testcase.get("name"))] = (
            outcome, "" if element is None else element.get("type"),
            "" if element is None else element.get("message"))
    return out


def test_one_test_case_per_check_and_case_and_per_cohort_verdict(tmp_path, store,
                                                                  spread_check):
    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 10.0, "B": 75.0, "C": 95.0},
                                        extra_rows=[_MISSING])
    protocol.write_text(protocol.read_text(encoding="utf-8") + (
        "  - check: mae_spread\n    options: {fail: true}\n"), encoding="utf-8")
    run_id = run_protocol(protocol, store).run_id

    root = ET.fromstring(junit_xml(store, run_id))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    got = _outcomes(suite)
    name = "sCT HU accuracy — test"
    hu = f"{name}.hu_accuracy"
    assert got[(hu, "A")] == ("pass", "", "")
    assert got[(hu, "B")][:2] == ("failure", "TOLERANCE")
    assert got[(hu, "B")][2] == ("mae_hu = 75 HU > tolerance max 70 HU, within action "
                                 "<= 90 HU (TOLERANCE)")
    assert got[(hu, "C")] == ("failure", "ACTION", "mae_hu = 95 HU > action max 90 HU (ACTION)")
    assert got[(hu, "MISSING")][0] == "error"
    assert "'nowhere/ct.nii.gz' does not exist" in got[(hu, "MISSING")][2]
    # mean of 10, 75, 95 HU = 60 HU <= 65 HU: OK
    assert got[(f"{hu}.cohort", "mean(mae_hu)")] == ("pass", "", "")
    assert got[(f"{name}.mae_spread.cohort", "run")][0] == "error"
    assert "every case has the same sex" in got[(f"{name}.mae_spread.cohort", "run")][2]
    assert got[(f"{name}.validation", "image_metadata")] == ("pass", "", "")
    assert got[(f"{name}.validation", "case_table")][:2] == ("failure", "TOLERANCE")
    assert "(cases: MISSING)" in got[(f"{name}.validation", "case_table")][2]

    # 4 cases x 1 case-level check + 1 cohort verdict + 1 failed cohort check + 2 validations
    assert len(got) == 8
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("8", "3", "2")
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("8", "3", "2")
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["run_id"] == str(run_id) and properties["exit_code"] == "30"


def test_a_cohort_verdict_that_fails_is_a_failure(tmp_path, store):
    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 70.0, "B": 90.0},
                                        cohort_mean=(75, 85))
    run_id = run_protocol(protocol, store).run_id
    got = _outcomes(ET.fromstring(junit_xml(store, run_id)))
    level, kind, message = got[("sCT HU accuracy — test.hu_accuracy.cohort", "mean(mae_hu)")]
    assert (level, kind) == ("failure", "TOLERANCE")
    assert message.startswith("mean of mae_hu over 2 cases = 80 HU > tolerance max 75 HU")


def test_a_run_that_could_not_start_is_one_error():
    root = ET.fromstring(not_started_junit_xml("protocol.yaml", "1 problem in the protocol"))
    (testcase,) = root.iter("testcase")
    assert testcase.find("error").get("message") == "1 problem in the protocol"
    assert (root.get("tests"), root.get("errors")) == ("1", "1")
