"""JUnit XML of a run, for CI servers (Jenkins, GitLab CI, GitHub Actions test reporters).

Built from the store only (like the report), so it can be written for any stored run. One
``<testsuite>`` per run, named after the protocol, with these ``<testcase>`` elements, in
this order:

* one per case-level check x case (``classname`` ``<protocol>.<check_id>``, ``name`` the case
  id), in protocol order then case-table order, followed by the per-case comparisons with
  the baseline of a periodic run (check id ``baseline.<check_id>``);
* one per cohort verdict (``classname`` ``<protocol>.<check_id>.cohort``, ``name``
  ``<statistic>(<metric>[<label>])``, e.g. ``mean(mae_hu)``, ``value(model_fingerprint)``);
* one per cohort check that could not be run (``name`` ``run``), and one per run-level error
  (``classname`` ``<protocol>.run``);
* one per data validation (``classname`` ``<protocol>.validation``, ``name`` its scope).

Outcomes: ``<error>`` when the case could not be checked (an error recorded for the case and
this check or for the case as a whole, or no result at all while the case has errors); else
``<failure type="TOLERANCE|ACTION">`` with the verdict messages when the worst verdict is not
OK, or when a data validation failed; else a pass.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from qa.store import Store

__all__ = ["junit_xml", "write_junit", "not_started_junit_xml"]

_RANK = {"OK": 0, "TOLERANCE": 1, "ACTION": 2}


def junit_xml(store: Store, run_id: int) -> str:
    """The JUnit XML text of run ``run_id`` (UTF-8, with an XML declaration)."""
    run = store.run(run_id)
    protocol = run["protocol_name"]
    suite = ET.Element("testsuite", name=protocol, timestamp=_iso(run["started_at"]),
                       hostname=str(run["hostname"]))
    props = ET.SubElement(suite, "properties")
    for name, value in (("run_id", run_id), ("run_uid", run["uid"]),
                        ("protocol_kind", run["protocol_kind"]),
                        ("model", f"{run['model_name']} {run['model_version']}"),
                        ("model_sha256", run["model_sha256"] or ""),
                        ("exit_code", "" if run["exit_code"] is None else run["exit_code"]),
                        ("status", run["status"])):
        ET.SubElement(props, "property", name=name, value=str(value))

    cases = store.cases(run_id)
    measured = store.measurements(run_id)
    verdicts = store.verdicts(run_id)
    errors = store.errors(run_id)
    case_checks, cohort_checks = _check_ids(run["protocol_text"])
    # per-case results the engine adds (comparison with the baseline: baseline.<check_id>)
    extra = verdicts.loc[verdicts["case_id"].notna(), "check_id"]
    compared = [c for c in dict.fromkeys(extra) if c not in case_checks]
    case_errors = errors[errors["case_id"].notna()]
    for check_id in case_checks:
        for case_id, status in zip(cases["case_id"], cases["status"], strict=True):
            testcase = _testcase(suite, f"{protocol}.{check_id}", case_id)
            mine = case_errors[(case_errors["case_id"] == case_id)
                               & (case_errors["check_id"].isna()
                                  | (case_errors["check_id"] == check_id))]
            got = verdicts[(verdicts["case_id"] == case_id) & (verdicts["check_id"] == check_id)]
            has_result = bool(((measured["case_id"] == case_id)
                               & (measured["check_id"] == check_id)).any())
            if len(mine):
                _error(testcase, "; ".join(mine["message"]))
            elif not has_result and status == "error":
                others = case_errors[case_errors["case_id"] == case_id]["message"]
                _error(testcase, "not checked: the case has errors: " + "; ".join(others))
            else:
                _grade(testcase, got)

    for check_id in compared:  # only the cases that were compared
        mine = verdicts[verdicts["check_id"] == check_id]
        for case_id in dict.fromkeys(mine["case_id"]):
            _grade(_testcase(suite, f"{protocol}.{check_id}", case_id),
                   mine[mine["case_id"] == case_id])

    cohort = verdicts[verdicts["case_id"].isna()]
    for row in cohort.itertuples(index=False):
        key = f"{row.metric}[{row.label}]" if row.label else row.metric
        testcase = _testcase(suite, f"{protocol}.{row.check_id}.cohort",
                             f"{row.statistic}({key})")
        _grade(testcase, pd.DataFrame([row._asdict()]))
    run_errors = errors[errors["case_id"].isna()]
    for check_id in cohort_checks:
        failed = run_errors[run_errors["check_id"] == check_id]
        if len(failed):
            _error(_testcase(suite, f"{protocol}.{check_id}.cohort", "run"),
                   "; ".join(failed["message"]))
    for message in run_errors[run_errors["check_id"].isna()
                              | ~run_errors["check_id"].isin(cohort_checks)]["message"]:
        _error(_testcase(suite, f"{protocol}.run", "run"), message)
    for row in store.validations(run_id).itertuples(index=False):
        testcase = _testcase(suite, f"{protocol}.validation", row.scope)
        if not row.success:
            failed = [_expectation_text(r) for r in (row.result or {}).get("results", [])
                      if isinstance(r, dict) and not r.get("success", True)]
            _failure(testcase, "TOLERANCE", f"data validation {row.scope} failed"
                     + (f": {'; '.join(failed)}" if failed else ""))

    testcases = suite.findall("testcase")
    suite.set("tests", str(len(testcases)))
    suite.set("failures", str(sum(t.find("failure") is not None for t in testcases)))
    suite.set("errors", str(sum(t.find("error") is not None for t in testcases)))
    suite.set("skipped", "0")
    suite.set("time", _seconds(run["started_at"], run["finished_at"]))
    root = ET.Element("testsuites", name=f"ALARA-QA run {run_id}")
    root.append(suite)
    for name in ("tests", "failures", "errors", "time"):
        root.set(name, suite.get(name))
    return _text(root)


def not_started_junit_xml(protocol: str, message: str) -> str:
    """JUnit XML for a run that could not start: one test case in error, so a CI server
    shows the failure instead of a missing file."""
    root = ET.Element("testsuites", name="ALARA-QA run (not started)", tests="1", failures="0",
                      errors="1", time="0")
    suite = ET.SubElement(root, "testsuite", name=protocol, tests="1", failures="0", errors="1",
                          skipped="0", time="0")
    _error(_testcase(suite, f"{protocol}.run", "start"), message)
    return _text(root)


def write_junit(text: str, path: str | Path) -> Path:
    """Write JUnit XML text to ``path`` (parent folders created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _check_ids(protocol_text: str) -> tuple[list[str], list[str]]:
    """Case-level and cohort-level check ids of the stored protocol, in protocol order."""
    from checks.registry import get_check

    data = yaml.safe_load(protocol_text) or {}
    case_level, cohort_level = [], []
    for item in data.get("checks") or []:
        if not isinstance(item, dict) or not isinstance(item.get("check"), str):
            continue
        check_id = str(item.get("id", item["check"]))
        try:
            scope = getattr(get_check(item["check"]), "scope", "case")
        except (KeyError, ImportError, AttributeError):
            scope = "case"
        (cohort_level if scope == "cohort" else case_level).append(check_id)
    return case_level, cohort_level


def _expectation_text(result: dict[str, Any]) -> str:
    """``description (cases: A, B)`` of a failed expectation of :mod:`qa.validation`."""
    text = str(result.get("description") or result.get("expectation_type") or "expectation")
    cases = result.get("unexpected_case_ids") or []
    return f"{text} (cases: {', '.join(map(str, cases))})" if cases else text


def _testcase(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=classname, name=str(name), time="0")


def _grade(testcase: ET.Element, verdicts: pd.DataFrame) -> None:
    bad = verdicts[verdicts["level"] != "OK"]
    if bad.empty:
        return
    worst = max(bad["level"], key=_RANK.__getitem__)
    _failure(testcase, worst, "; ".join(bad["message"]))


def _failure(testcase: ET.Element, level: str, message: str) -> None:
    element = ET.SubElement(testcase, "failure", type=level, message=_line(message))
    element.text = message


def _error(testcase: ET.Element, message: str) -> None:
    element = ET.SubElement(testcase, "error", type="ERROR", message=_line(message))
    element.text = message


def _line(message: str) -> str:
    line = " ".join(str(message).split())
    return line if len(line) <= 500 else line[:497] + "..."


def _iso(value: Any) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%dT%H:%M:%S")


def _seconds(start: Any, end: Any) -> str:
    if end is None or (isinstance(end, float) and math.isnan(end)):
        return "0"
    return f"{(pd.Timestamp(end) - pd.Timestamp(start)).total_seconds():.3f}"


def _text(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
