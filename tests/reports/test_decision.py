"""Specification of the decision the report proposes (reports._decision.decide).

Each test builds the stored rows of a run by hand and states the outcome the documented rule
gives (docs/report.md, "Decision rule"): not approved / approved with conditions / approved,
with the reasons in rule order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pytest

from reports._decision import MAX_ERRORED_CASE_PERCENT, SEVERE_RISK_SEVERITY, decide

COMPLETE = {"status": "complete", "protocol_kind": "commissioning"}
CASES = pd.DataFrame({"case_id": [f"c{i:02d}" for i in range(20)], "status": ["ok"] * 20})
NO_ERRORS = pd.DataFrame(columns=["case_id", "check_id", "message"])
PASSED = pd.DataFrame([{"scope": "case_table", "success": True}])


def _verdict(case_id, level, statistic="value", metric="mae_hu", label="", message="m"):
    return {"case_id": case_id, "check_id": "hu", "metric": metric, "label": label,
            "statistic": statistic, "level": level, "message": message}


def _frame(rows):
    return pd.DataFrame(rows, columns=list(_verdict(None, "OK")))


ALL_OK = _frame([_verdict(c, "OK") for c in CASES.case_id]
                + [_verdict(None, "OK", "mean"), _verdict(None, "OK", "pass_rate")])


@dataclass
class Evidence:
    n_failures: int


@dataclass
class Row:
    mode_id: str
    priority: str
    severity: int
    evidence: Evidence
    title: str = "a failure mode"
    rpn: int | None = 100


@dataclass
class Assessment:
    rows: list[Row] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


LOW_RISK = Assessment([Row("m1", "low", 3, Evidence(0))],
                      {"high": 0, "medium": 0, "low": 1, "not_assessed": 0})


def _decide(verdicts=ALL_OK, validations=PASSED, errors=NO_ERRORS, cases=CASES, risk=LOW_RISK,
            run=COMPLETE):
    return decide(run, verdicts, validations, errors, cases, risk)


def test_everything_ok_and_low_risk_is_approved_without_reasons():
    decision = _decide()
    assert decision.outcome == "approved"
    assert decision.reasons == ()


def test_a_cohort_action_blocks_and_names_the_verdict():
    verdicts = _frame([*ALL_OK.to_dict("records")[:-1],
                       _verdict(None, "ACTION", "pass_rate", message="pass_rate (17 of 20 OK)")])
    decision = _decide(verdicts)
    assert decision.outcome == "not_approved"
    (reason,) = decision.reasons
    assert (reason.code, reason.blocking, reason.anchor) == ("cohort_action", True, "verdicts")
    assert reason.values["statistic"] == "pass_rate"
    assert reason.values["message"] == "pass_rate (17 of 20 OK)"


def test_cohort_tolerance_gives_conditions():
    verdicts = _frame([*ALL_OK.to_dict("records")[:-2], _verdict(None, "TOLERANCE", "mean"),
                       _verdict(None, "OK", "pass_rate")])
    decision = _decide(verdicts)
    assert decision.outcome == "approved_with_conditions"
    assert [r.code for r in decision.reasons] == ["cohort_tolerance"]


def test_a_case_at_action_blocks_unless_a_pass_rate_allows_it():
    one_action = [_verdict("c00", "ACTION")] + [_verdict(c, "OK") for c in CASES.case_id[1:]]
    # no cohort pass rate graded for mae_hu: the protocol allows no case at ACTION
    decision = _decide(_frame([*one_action, _verdict(None, "OK", "mean")]))
    assert decision.outcome == "not_approved"
    assert [r.code for r in decision.reasons] == ["cases_action_not_allowed"]
    assert decision.reasons[0].values["n"] == 1
    # a pass rate is graded (and OK: 19 of 20 within the levels): the case is listed for review
    decision = _decide(_frame([*one_action, _verdict(None, "OK", "pass_rate")]))
    assert decision.outcome == "approved_with_conditions"
    assert [r.code for r in decision.reasons] == ["cases_action"]


def test_failed_validation_and_run_level_errors_block():
    failed = pd.DataFrame([{"scope": "image_metadata", "success": False}])
    errors = pd.DataFrame([{"case_id": None, "check_id": "bias", "message": "too few cases"}])
    decision = _decide(validations=failed, errors=errors)
    assert decision.outcome == "not_approved"
    assert [(r.code, r.values) for r in decision.reasons] == [
        ("validation_failed", {"scope": "image_metadata"}), ("run_errors", {"n": 1})]


@pytest.mark.parametrize(("n_failed", "outcome", "code"), [
    (2, "approved_with_conditions", "errored_cases"),     # 2 of 20 = 10 %: at the limit
    (3, "not_approved", "errored_cases_over"),            # 15 % > 10 %
])
def test_errored_cases_condition_up_to_the_limit_then_block(n_failed, outcome, code):
    assert MAX_ERRORED_CASE_PERCENT == 10.0
    cases = CASES.assign(status=["error"] * n_failed + ["ok"] * (20 - n_failed))
    decision = _decide(cases=cases)
    assert decision.outcome == outcome
    (reason,) = decision.reasons
    assert reason.code == code
    assert reason.values["n"] == n_failed and reason.values["total"] == 20
    assert reason.values["percent"] == pytest.approx(100.0 * n_failed / 20)


def test_an_incomplete_run_or_no_verdict_blocks():
    decision = _decide(verdicts=_frame([]), run={"status": "incomplete"})
    assert decision.outcome == "not_approved"
    assert [r.code for r in decision.reasons] == ["no_verdicts", "run_not_complete"]


def test_a_severe_high_risk_with_failures_blocks_and_without_failures_is_a_condition():
    severe = Row("sct-bone", "high", SEVERE_RISK_SEVERITY, Evidence(n_failures=2))
    quiet = Row("wrong-site", "high", 9, Evidence(n_failures=0))
    mild = Row("drift", "high", SEVERE_RISK_SEVERITY - 1, Evidence(n_failures=4))
    risk = Assessment([severe, quiet, mild],
                      {"high": 3, "medium": 2, "low": 0, "not_assessed": 1})
    decision = _decide(risk=risk)
    assert decision.outcome == "not_approved"
    assert [(r.code, r.values["mode"]) for r in decision.reasons if "mode" in r.values] == [
        ("severe_risk", "sct-bone"), ("high_risk", "wrong-site"), ("high_risk", "drift")]
    assert [r.code for r in decision.reasons][-2:] == ["medium_risks", "risks_not_assessed"]
    assert [r.mode_id for r in decision.remaining_risks] == ["sct-bone", "wrong-site", "drift"]


def test_no_risk_register_is_a_condition():
    decision = _decide(risk=None)
    assert decision.outcome == "approved_with_conditions"
    assert [r.code for r in decision.reasons] == ["no_risk_register"]


def test_blocking_reasons_come_first():
    verdicts = _frame([*ALL_OK.to_dict("records")[:-2], _verdict(None, "TOLERANCE", "mean"),
                       _verdict(None, "ACTION", "pass_rate")])
    decision = _decide(verdicts)
    assert [r.blocking for r in decision.reasons] == [True, False]


def test_input_drift_is_graded_by_its_verdicts_not_as_a_failed_validation():
    drift_scope = pd.DataFrame([{"scope": "case_table", "success": True},
                                {"scope": "input_drift", "success": False}])
    drift = _frame([*ALL_OK.to_dict("records"),
                    {**_verdict(None, "TOLERANCE", "value", metric="input_drift", label="bmi"),
                     "check_id": "drift"}])
    decision = _decide(drift, validations=drift_scope)
    assert decision.outcome == "approved_with_conditions"
    assert [(r.code, r.values["check"]) for r in decision.reasons] == [
        ("cohort_tolerance", "drift")]
