"""Specification of the ``subgroup_bias`` cohort check, fed a CohortInput built by hand.

Expected values come from :func:`checks.bias.subgroup_analysis` on the same table (itself
cross-checked against fairlearn and scipy in test_bias.py) and from the construction.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from checks.base import CohortInput
from checks.bias import SubgroupBiasCheck, adjust_across, subgroup_analysis
from checks.registry import get_check
from qa.errors import QAInputError

TOLERANCE_HU = 45.0


def _input(n: int = 40, seed: int = 1, obese_extra_hu: float = 25.0) -> CohortInput:
    """``n`` cases measured by check id ``hu_body``; MAE + 25 HU from BMI 30; per-case
    verdict TOLERANCE above 45 HU."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    bmi = np.round(rng.uniform(19.0, 38.0, n), 1)
    mae = 30.0 + np.where(bmi >= 30, obese_extra_hu, 0.0) + rng.normal(0.0, 5.0, n)
    measurements = pd.DataFrame({
        "case_id": ids * 2, "check_id": "hu_body", "check": "hu_accuracy",
        "metric": ["mae_hu"] * n + ["me_hu"] * n, "label": "",
        "value": np.concatenate([mae, mae / 3]), "unit": "HU"})
    cases = pd.DataFrame({"case_id": ids, "sex": (["F", "M"] * n)[:n], "bmi": bmi})
    verdicts = pd.DataFrame({"case_id": ids, "check_id": "hu_body", "metric": "mae_hu",
                             "label": "", "value": mae,
                             "level": np.where(mae > TOLERANCE_HU, "TOLERANCE", "OK")})
    return CohortInput(measurements, cases, verdicts,
                       {"sex": {"values": ["F", "M"]}, "bmi": {"min": 12, "max": 70}})


def _check(**options) -> SubgroupBiasCheck:
    options = {"metric": "hu_body.mae_hu", "by": ["bmi"], "n_bootstrap": 400, **options}
    return SubgroupBiasCheck(SubgroupBiasCheck.Options(**options))


def _values(output) -> dict[tuple[str, str], float]:
    return {(m.metric, m.label): m.value for m in output.measurements}


def test_registered_under_subgroup_bias_as_a_cohort_check():
    cls = get_check("subgroup_bias")
    assert cls is SubgroupBiasCheck and cls.scope == "cohort"


def test_measurements_equal_the_pure_analysis_on_the_joined_table():
    data = _input()
    bins = {"bmi": {"edges": [0, 30, 100], "labels": ["<30", ">=30"]}}
    output = _check(bins=bins).run_cohort(data)
    table = data.cases.assign(mae_hu=data.measurements.query("metric == 'mae_hu'")
                              ["value"].to_numpy())
    table["failed"] = table["mae_hu"] > TOLERANCE_HU
    expected = adjust_across([subgroup_analysis(table, "mae_hu", "bmi", bins=bins,
                                                failed="failed", n_bootstrap=400)])[0]
    values = _values(output)
    assert values[("gap_worst_to_overall", "bmi")] == pytest.approx(
        expected.gaps["gap_worst_to_overall"])
    assert expected.gaps["worst_group"] == ">=30"
    p_values = expected.tests.set_index("outcome")["p_adjusted"]
    assert values[("p_adjusted", "bmi")] == pytest.approx(p_values["value"])
    assert values[("p_adjusted_failures", "bmi")] == pytest.approx(p_values["failures"])
    assert values[("n_groups_insufficient", "bmi")] == 0.0
    units = {(m.metric, m.label): m.unit for m in output.measurements}
    assert units[("gap_worst_to_overall", "bmi")] == "HU"
    assert units[("p_adjusted", "bmi")] == "1"
    groups = output.details["analyses"][0]["groups"]
    obese = next(g for g in groups if g["group"] == ">=30")
    assert obese["failures"] == int(table.loc[table.bmi >= 30, "failed"].sum())
    assert output.details["failure_mode"] == "subgroup underperformance"
    json.dumps(output.details, allow_nan=False)


def test_findings_flag_the_worse_group_as_significant_after_holm():
    output = _check(bins={"bmi": {"edges": [0, 30, 100], "labels": ["<30", ">=30"]}}) \
        .run_cohort(_input())
    finding = next(f for f in output.details["findings"] if f["group"] == ">=30")
    assert finding["status"] == "significant" and finding["test"] == "mann_whitney"
    assert finding["ci_low"] > 0 and finding["p_adjusted"] < 0.05


def test_small_group_is_reported_as_insufficient_data():
    output = _check(min_group_size=25, bins={"bmi": {"edges": [0, 30, 100],
                                                     "labels": ["<30", ">=30"]}}) \
        .run_cohort(_input())
    values = _values(output)
    assert math.isnan(values[("p_adjusted", "bmi")])
    statuses = {f["group"]: f["status"] for f in output.details["findings"]}
    assert "insufficient" in statuses.values()


def test_every_p_value_of_the_check_is_one_holm_family():
    output = _check(by=["sex", "bmi", ["sex", "bmi"]], trend=["bmi"], min_group_size=3) \
        .run_cohort(_input())
    tests = [t for a in output.details["analyses"] + output.details["trends"]
             for t in a["tests"]]
    raw = np.array([t["p_value"] for t in tests])
    from checks._bias_stats import adjust_p_values
    assert [t["p_adjusted"] for t in tests] == pytest.approx(adjust_p_values(raw, "holm"))
    labels = {m.label for m in output.measurements}
    assert labels == {"sex", "bmi", "sex × bmi"}
    keys = [(m.metric, m.label) for m in output.measurements]
    assert len(keys) == len(set(keys))  # every gradable key is unique
    trend = output.details["trends"][0]
    assert _values(output)[("rho_trend", "bmi")] == pytest.approx(trend["rho"])
    assert _values(output)[("p_adjusted_trend", "bmi")] == trend["tests"][0]["p_adjusted"]


def test_failure_level_action_counts_only_action_verdicts():
    output = _check(failure_level="action").run_cohort(_input())
    assert all(g["failures"] == 0 for g in output.details["analyses"][0]["groups"])
    assert any("not tested" in w for w in output.details["analyses"][0]["warnings"])


def test_pooled_runs_keep_the_latest_measurement_of_a_case():
    data = _input()
    older = data.measurements.assign(run_id=1, value=999.0)
    pooled = pd.concat([older, data.measurements.assign(run_id=2)], ignore_index=True)
    verdicts = pd.concat([data.verdicts.assign(run_id=1, level="ACTION"),
                          data.verdicts.assign(run_id=2)], ignore_index=True)
    output = _check().run_cohort(CohortInput(pooled, data.cases, verdicts))
    latest = _check().run_cohort(data)
    assert _values(output) == pytest.approx(_values(latest), nan_ok=True)
    assert output.details["analyses"] == latest.details["analyses"]  # failures too
    assert any("replaced by the latest run" in n for n in output.details["notes"])


def test_metric_named_by_check_name_when_it_runs_once():
    output = _check(metric="hu_accuracy.mae_hu").run_cohort(_input())
    assert ("gap_worst_to_overall", "bmi") in _values(output)


# -- bad input ------------------------------------------------------------------------------

def test_metric_with_no_measurements_names_what_was_measured():
    with pytest.raises(QAInputError, match=r"metric 'hu_body.dice' has no measurements in this "
                                           r"run; measured: hu_body.mae_hu, hu_body.me_hu"):
        _check(metric="hu_body.dice").run_cohort(_input())
    data = _input()
    empty = CohortInput(data.measurements.iloc[:0], data.cases, data.verdicts)
    with pytest.raises(QAInputError, match="the run holds no per-case measurement"):
        _check().run_cohort(empty)


def test_attribute_missing_from_case_table():
    with pytest.raises(QAInputError, match=r"check 'subgroup_bias': hu_body.mae_hu: "
                                           r"attribute\(s\) 'scanner' missing from the case "
                                           "table"):
        _check(by=["scanner"]).run_cohort(_input())


def test_all_cases_in_one_group():
    data = _input()
    one = CohortInput(data.measurements, data.cases.assign(sex="F"), data.verdicts)
    with pytest.raises(QAInputError, match=r"all 40 case\(s\) fall in one group of 'sex'"):
        _check(by=["sex"]).run_cohort(one)


def test_nan_values_are_excluded_and_listed_or_refused():
    data = _input()
    measured = data.measurements.copy()
    measured.loc[[0, 5], "value"] = np.nan
    nan_input = CohortInput(measured, data.cases, data.verdicts)
    output = _check().run_cohort(nan_input)
    assert output.details["excluded_cases"] == ["P000", "P005"]
    with pytest.raises(QAInputError, match=r"NaN or not a finite number for 2 of 40 case\(s\): "
                                           r"P000, P005"):
        _check(nan_policy="raise").run_cohort(nan_input)


def test_case_missing_from_case_table_is_a_missing_group_not_dropped():
    data = _input()
    output = _check(by=["sex"]).run_cohort(CohortInput(data.measurements, data.cases.iloc[1:],
                                                       data.verdicts))
    groups = {g["group"]: g["n"] for g in output.details["analyses"][0]["groups"]}
    assert groups["missing"] == 1 and sum(groups.values()) == 40


def test_options_are_validated_with_the_key_named():
    with pytest.raises(ValidationError, match="must be '<check id>.<metric>'"):
        SubgroupBiasCheck.Options(metric="mae_hu")
    with pytest.raises(ValidationError, match="an intersection needs two or more distinct"):
        SubgroupBiasCheck.Options(metric="hu_body.mae_hu", by=[["sex"]])
    with pytest.raises(ValidationError, match="bins"):
        SubgroupBiasCheck.Options(metric="hu_body.mae_hu", bins={"bmi": {"edges": [30, 0]}})
    with pytest.raises(QAInputError, match="options.by and options.trend are both empty"):
        _check(by=[]).run_cohort(_input())


def test_ambiguous_check_name_asks_for_an_id():
    data = _input()
    twice = pd.concat([data.measurements, data.measurements.assign(check_id="hu_bone")])
    with pytest.raises(QAInputError, match=r"check 'hu_accuracy' runs under several ids "
                                           r"\(hu_body, hu_bone\); name one id"):
        _check(metric="hu_accuracy.mae_hu").run_cohort(CohortInput(twice, data.cases,
                                                                   data.verdicts))


# -- in the engine: a precomputed cohort with known MAE per case ----------------------------

_BIAS_CHECK = """\
  - check: subgroup_bias
    id: bias_mae
    options:
      metric: hu_accuracy.mae_hu
      by: [bmi, sex]
      bins:
        bmi: {edges: [0, 30, 100], labels: ["BMI < 30", "BMI >= 30"]}
      min_group_size: 4
    tolerances:
      "gap_worst_to_overall[bmi]": {tolerance: {max: 5}, action: {max: 20}}
      "p_adjusted[bmi]": {tolerance: {min: 0.05}, action: {min: 0.01}}
"""


@pytest.mark.slow  # a whole run (about 10 s on 2 cores: great_expectations import)
def test_engine_run_grades_the_bmi_gap_with_known_answers(tmp_path):
    from qa.runner import run_protocol
    from qa.store import Store
    from tests.cohort_builders import write_precomputed_cohort

    # Case i has BMI 20 + 3 i (cohort_builders): 4 cases below 30 with MAE 30 HU, 8 from
    # 32 on with MAE 60 HU. Overall 50 HU; worst-to-overall gap 10 HU; worst-to-best 30 HU.
    offsets = {f"C{i:02d}": (30.0 if i < 4 else -60.0) for i in range(12)}
    protocol = write_precomputed_cohort(tmp_path / "cohort", offsets)
    protocol.write_text(protocol.read_text(encoding="utf-8") + _BIAS_CHECK, encoding="utf-8")
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = run_protocol(protocol, store).run_id
        measured = store.measurements(run_id)
        verdicts = store.verdicts(run_id)
    mine = measured[measured["check_id"] == "bias_mae"].set_index(["metric", "label"])["value"]
    assert mine[("gap_worst_to_overall", "bmi")] == pytest.approx(10.0, abs=1e-3)
    assert mine[("gap_worst_to_best", "bmi")] == pytest.approx(30.0, abs=1e-3)
    # Holm over the two tests of the check (bmi, sex), from scipy on the stored MAEs.
    from scipy import stats
    mae = measured[(measured["metric"] == "mae_hu") & (measured["label"] == "")] \
        .set_index("case_id")["value"]
    low = [mae[c] for i, c in enumerate(offsets) if i < 4]
    high = [mae[c] for i, c in enumerate(offsets) if i >= 4]
    sexes = [[mae[c] for i, c in enumerate(offsets) if i % 2 == k] for k in (1, 0)]  # F, M
    p_bmi = stats.mannwhitneyu(low, high).pvalue
    p_sex = stats.mannwhitneyu(*sexes).pvalue
    assert mine[("p_adjusted", "bmi")] == pytest.approx(min(1.0, 2 * min(p_bmi, p_sex)))
    assert mine[("p_adjusted", "sex")] == pytest.approx(min(1.0, max(2 * min(p_bmi, p_sex),
                                                                     max(p_bmi, p_sex))))
    # No case reached its per-case tolerance (70 HU): equal failure rates, Fisher p = 1.
    assert mine[("p_adjusted_failures", "bmi")] == 1.0
    graded = verdicts[verdicts["check_id"] == "bias_mae"].set_index(["metric", "label"])
    assert graded.loc[("gap_worst_to_overall", "bmi"), "level"] == "TOLERANCE"
    assert graded.loc[("p_adjusted", "bmi"), "level"] in ("TOLERANCE", "ACTION")
