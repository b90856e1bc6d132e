"""Specification of checks.bias: subgroup analysis of a per-case metric.

Independent references, run in the test on the same inputs: fairlearn 0.15 ``MetricFrame``
(group means, overall, ``difference()``, ``ratio()``), scipy 1.17 (Mann-Whitney, Kruskal-Wallis,
Fisher, Spearman, ``binomtest(...).proportion_ci``, ``false_discovery_control``),
scikit-posthocs 0.17 ``posthoc_dunn`` (Dunn 1964 with ties), statsmodels ``multipletests``
(Holm). Hand-computed cases are worked next to the expected numbers.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from checks import _bias_stats as bstats
from checks.bias import (
    DEFAULT_BINS,
    MISSING_LABEL,
    SubgroupResult,
    adjust_across,
    subgroup_analysis,
    trend_analysis,
)

FAST = {"n_bootstrap": 400}


def _cohort(seed: int = 3, n: int = 90) -> pd.DataFrame:
    """Cases with sex, BMI and an MAE that is 20 HU higher from BMI 30 on."""
    rng = np.random.default_rng(seed)
    bmi = np.round(rng.uniform(19.0, 38.0, n), 1)
    mae = 30.0 + np.where(bmi >= 30, 20.0, 0.0) + rng.normal(0.0, 6.0, n)
    return pd.DataFrame({"case_id": [f"P{i:03d}" for i in range(n)],
                         "sex": rng.permutation(np.array(["F", "M"] * (n // 2))),
                         "bmi": bmi, "mae_hu": mae, "failed": mae > 45.0})


# -- group values: fairlearn MetricFrame ---------------------------------------------------

@pytest.mark.parametrize("by", ["sex", ["sex", "bmi"]])
def test_group_means_differences_and_ratios_equal_fairlearn(by):
    fairlearn_metrics = pytest.importorskip(
        "fairlearn.metrics", reason="fairlearn is the reference for group values")
    data = _cohort()
    result = subgroup_analysis(data, "mae_hu", by, min_group_size=2, **FAST)
    features = data[[by] if isinstance(by, str) else by].copy()
    if not isinstance(by, str):
        features["bmi"] = pd.cut(features["bmi"], [0, 18.5, 25, 30, np.inf], right=False,
                                 labels=list(DEFAULT_BINS["bmi"].labels)).astype(str)
    frame = fairlearn_metrics.MetricFrame(
        metrics=lambda y_true, y_pred: float(np.mean(y_pred)), y_true=np.zeros(len(data)),
        y_pred=data["mae_hu"].to_numpy(), sensitive_features=features)
    by_group = frame.by_group
    if isinstance(by_group.index, pd.MultiIndex):
        by_group.index = [" × ".join(map(str, key)) for key in by_group.index]
    ours = result.groups.set_index("group")["mean"]
    assert ours.sort_index().to_numpy() == pytest.approx(by_group.sort_index().to_numpy(),
                                                         rel=1e-12)
    assert result.overall["mean"] == pytest.approx(frame.overall, rel=1e-12)
    gaps = result.gaps
    assert gaps["difference_between_groups"] == pytest.approx(frame.difference(), rel=1e-12)
    assert gaps["ratio_between_groups"] == pytest.approx(frame.ratio(), rel=1e-12)
    assert gaps["difference_to_overall"] == pytest.approx(
        frame.difference(method="to_overall"), rel=1e-12)
    assert gaps["ratio_to_overall"] == pytest.approx(frame.ratio(method="to_overall"),
                                                     rel=1e-12)


def test_per_group_n_median_and_difference_ratio_columns():
    data = _cohort()
    result = subgroup_analysis(data, "mae_hu", "sex", **FAST)
    for row in result.groups.itertuples():
        values = data.loc[data["sex"] == row.group, "mae_hu"]
        assert row.n == len(values)
        assert row.median == pytest.approx(values.median())
        assert row.diff_to_overall == pytest.approx(values.mean() - data["mae_hu"].mean())
        assert row.ratio_to_overall == pytest.approx(values.mean() / data["mae_hu"].mean())
        assert row.ci_low < row.mean < row.ci_high
        assert row.diff_ci_low < row.diff_to_overall < row.diff_ci_high


# -- tests between groups: scipy and scikit-posthocs ---------------------------------------

def test_two_groups_mann_whitney_equals_scipy_and_cliffs_delta_is_pairwise():
    data = _cohort()
    result = subgroup_analysis(data, "mae_hu", "sex", **FAST)
    row = result.tests.query("outcome == 'value'").iloc[0]
    f = data.loc[data["sex"] == "F", "mae_hu"].to_numpy()
    m = data.loc[data["sex"] == "M", "mae_hu"].to_numpy()
    expected = stats.mannwhitneyu(f, m, alternative="two-sided")
    assert (row.test, row.comparison) == ("mann_whitney", "F vs M")
    assert row.statistic == expected.statistic
    assert row.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    brute = np.mean(np.sign(f[:, None] - m[None, :]))  # P(X > Y) - P(X < Y) over all pairs
    assert row.effect_size == pytest.approx(brute, rel=1e-12)


def test_more_groups_kruskal_wallis_equals_scipy_and_dunn_equals_scikit_posthocs():
    sp = pytest.importorskip("scikit_posthocs", reason="reference for Dunn's test")
    data = _cohort()
    data["mae_hu"] = np.round(data["mae_hu"] / 4.0)  # integer-valued: many ties
    result = subgroup_analysis(data, "mae_hu", "bmi", min_group_size=5, **FAST)
    groups = [g for g in result.groups["group"] if g in set(result.groups.query("sufficient")
                                                            ["group"])]
    labels = pd.cut(data["bmi"], [0, 18.5, 25, 30, np.inf], right=False,
                    labels=list(DEFAULT_BINS["bmi"].labels)).astype(str)
    samples = [data.loc[labels == g, "mae_hu"].to_numpy() for g in groups]
    kw = result.tests.query("test == 'kruskal_wallis'").iloc[0]
    assert kw.p_value == pytest.approx(stats.kruskal(*samples).pvalue, rel=1e-12)
    assert kw.effect_size == pytest.approx(kw.statistic / (sum(map(len, samples)) - 1))
    reference = sp.posthoc_dunn(pd.DataFrame({"v": data["mae_hu"], "g": labels}),
                                val_col="v", group_col="g", p_adjust=None)
    dunn = result.tests.query("test == 'dunn'")
    assert len(dunn) == 3
    for row in dunn.itertuples():
        a, b = row.comparison.split(" vs ")
        assert row.p_value == pytest.approx(reference.loc[a, b], rel=1e-10)


def test_failure_rates_clopper_pearson_and_fisher_equal_scipy():
    data = _cohort()
    result = subgroup_analysis(data, "mae_hu", "sex", failed="failed", **FAST)
    table = []
    for row in result.groups.itertuples():
        flags = data.loc[data["sex"] == row.group, "failed"]
        ci = stats.binomtest(int(flags.sum()), len(flags)).proportion_ci(0.95, method="exact")
        assert (row.failures, row.failure_rate) == (flags.sum(), flags.mean())
        assert (row.failure_ci_low, row.failure_ci_high) == pytest.approx(
            (ci.low, ci.high), rel=1e-9)
        table.append([flags.sum(), len(flags) - flags.sum()])
    fisher = result.tests.query("outcome == 'failures'").iloc[0]
    assert fisher.p_value == pytest.approx(stats.fisher_exact(table).pvalue, rel=1e-12)


def test_clopper_pearson_edges_are_analytic():
    # k = 0: lower 0, upper 1 - (alpha/2)^(1/n); k = n mirrors it.
    assert bstats.clopper_pearson(0, 10, 0.95) == pytest.approx((0.0, 1 - 0.025 ** 0.1))
    assert bstats.clopper_pearson(10, 10, 0.95) == pytest.approx((0.025 ** 0.1, 1.0))
    assert all(math.isnan(v) for v in bstats.clopper_pearson(0, 0, 0.95))


def test_fisher_with_three_groups_is_seeded_monte_carlo_freeman_halton():
    failures, sizes = [1, 2, 9], [12, 12, 12]
    p1 = bstats.fisher_failures(failures, sizes, 2000, np.random.default_rng(5))[1]
    p2 = bstats.fisher_failures(failures, sizes, 2000, np.random.default_rng(5))[1]
    table = np.array([[f, n - f] for f, n in zip(failures, sizes, strict=True)])
    expected = stats.fisher_exact(table, method=stats.MonteCarloMethod(
        n_resamples=2000, rng=np.random.default_rng(5))).pvalue
    assert p1 == p2 == pytest.approx(expected)
    # Chi-square approximation of the same table, for orders of magnitude only.
    assert p1 < 0.01 and stats.chi2_contingency(table).pvalue < 0.01


# -- multiple comparisons -------------------------------------------------------------------

def test_holm_and_bh_hand_computed():
    p = [0.01, 0.04, 0.03, 0.005, math.nan]
    # Holm, m = 4, sorted 0.005 0.01 0.03 0.04 -> 4x, 3x, 2x, 1x = 0.02 0.03 0.06 0.04,
    # running max -> 0.02 0.03 0.06 0.06.
    assert bstats.adjust_p_values(p, "holm")[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: m p_(k) / k = 0.02 0.02 0.04 0.04, running min from the top -> unchanged.
    assert bstats.adjust_p_values(p, "bh")[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert math.isnan(bstats.adjust_p_values(p, "holm")[4])
    with pytest.raises(ValueError, match="correction must be 'holm', 'bh' or 'none', got 'x'"):
        bstats.adjust_p_values(p, "x")


def test_holm_and_bh_equal_statsmodels_and_scipy_on_random_p_values():
    multitest = pytest.importorskip("statsmodels.stats.multitest",
                                    reason="reference for Holm")
    p = np.random.default_rng(0).uniform(0, 0.2, 25)
    assert bstats.adjust_p_values(p, "bh") == pytest.approx(
        stats.false_discovery_control(p, method="bh"), rel=1e-12)
    assert bstats.adjust_p_values(p, "holm") == pytest.approx(
        multitest.multipletests(p, method="holm")[1], rel=1e-12)


def test_adjust_across_makes_one_family_of_every_test():
    data = _cohort()
    results = [subgroup_analysis(data, "mae_hu", "sex", failed="failed", **FAST),
               subgroup_analysis(data, "mae_hu", "bmi", min_group_size=5, **FAST),
               trend_analysis(data, "mae_hu", "bmi")]
    adjusted = adjust_across(results, "bh")
    raw = np.concatenate([r.tests["p_value"].to_numpy() for r in results])
    got = np.concatenate([r.tests["p_adjusted"].to_numpy() for r in adjusted])
    assert got == pytest.approx(stats.false_discovery_control(raw), rel=1e-12)
    assert adjusted[0].settings["family_size"] == len(raw)


# -- trend ----------------------------------------------------------------------------------

def test_trend_equals_scipy_spearman_with_bonett_wright_interval():
    data = _cohort()
    data.loc[3, "bmi"] = np.nan
    result = trend_analysis(data, "mae_hu", "bmi")
    keep = data["bmi"].notna()
    reference = stats.spearmanr(data.loc[keep, "bmi"], data.loc[keep, "mae_hu"])
    assert (result.n, result.n_missing) == (89, 1)
    assert result.rho == pytest.approx(reference.statistic, rel=1e-12)
    assert result.tests["p_value"].iloc[0] == pytest.approx(reference.pvalue, rel=1e-12)
    half = 1.959963984540054 * math.sqrt((1 + result.rho**2 / 2) / (89 - 3))
    assert (result.ci_low, result.ci_high) == pytest.approx(
        (math.tanh(math.atanh(result.rho) - half), math.tanh(math.atanh(result.rho) + half)))


# -- grouping rules -------------------------------------------------------------------------

def test_who_bmi_bins_are_half_open_and_missing_is_its_own_group():
    data = pd.DataFrame({"case_id": list("abcdef"), "bmi": [18.4, 18.5, 25.0, 30.0, None, 29.9],
                         "mae_hu": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    result = subgroup_analysis(data, "mae_hu", "bmi", min_group_size=2, **FAST)
    assert dict(zip(result.groups["group"], result.groups["n"], strict=True)) == {
        "underweight <18.5": 1, "normal 18.5-25": 1, "overweight 25-30": 2,
        "obese >=30": 1, MISSING_LABEL: 1}
    assert result.groups.set_index("group").loc[MISSING_LABEL, "mean"] == 5.0


def test_small_groups_are_described_but_not_tested_or_called_worst():
    data = _cohort()
    data.loc[:5, "sex"] = "X"  # 6 cases
    data.loc[:5, "mae_hu"] = 200.0
    result = subgroup_analysis(data, "mae_hu", "sex", min_group_size=10, **FAST)
    row = result.groups.set_index("group").loc["X"]
    assert (row["n"], bool(row["sufficient"])) == (6, False)
    assert row["mean"] == 200.0 and row["diff_ci_low"] > 0
    assert result.tests["comparison"].tolist() == ["F vs M"]
    assert result.gaps["worst_group"] in ("F", "M")


def test_gap_sign_follows_better_and_bootstrap_is_seeded():
    data = _cohort()
    lower = subgroup_analysis(data, "mae_hu", "sex", seed=4, **FAST)
    again = subgroup_analysis(data, "mae_hu", "sex", seed=4, **FAST)
    other = subgroup_analysis(data, "mae_hu", "sex", seed=5, **FAST)
    higher = subgroup_analysis(data, "mae_hu", "sex", better="higher", seed=4, **FAST)
    means = lower.groups.set_index("group")["mean"]
    assert lower.gaps["gap_worst_to_overall"] == pytest.approx(means.max() - data.mae_hu.mean())
    assert higher.gaps["gap_worst_to_overall"] == pytest.approx(data.mae_hu.mean() - means.min())
    assert lower.gaps["gap_worst_to_best"] == pytest.approx(means.max() - means.min())
    assert lower.groups.equals(again.groups)
    assert not lower.groups["ci_low"].equals(other.groups["ci_low"])


@pytest.mark.parametrize("n_groups", [2, 3])
def test_constant_values_give_point_intervals_and_no_test(n_groups):
    data = pd.DataFrame({"site": list("ABC"[:n_groups]) * 10, "mae_hu": 7.0})
    result = subgroup_analysis(data, "mae_hu", "site", **FAST)
    assert result.groups[["ci_low", "ci_high", "diff_ci_low", "diff_ci_high"]].to_numpy() \
        == pytest.approx(np.array([[7.0, 7.0, 0.0, 0.0]] * n_groups))
    assert result.tests.empty
    assert result.warnings == ("every tested case of 'site' has the same value: there is no "
                               "difference to test.",)


def test_to_dict_is_json_and_result_is_frozen():
    result = subgroup_analysis(_cohort(), "mae_hu", "sex", failed="failed", **FAST)
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert '"worst_group"' in text and "Clopper-Pearson" in text
    with pytest.raises(AttributeError):
        result.value = "x"  # type: ignore[misc]
    assert isinstance(result, SubgroupResult)


# -- bad input ------------------------------------------------------------------------------

def test_attribute_missing_from_case_table_is_named():
    with pytest.raises(ValueError, match=r"attribute\(s\) 'scanner' missing from the case "
                                         r"table \(columns: case_id, sex, bmi"):
        subgroup_analysis(_cohort(), "mae_hu", ["sex", "scanner"], **FAST)


def test_metric_with_no_measurements():
    empty = _cohort().iloc[:0]
    with pytest.raises(ValueError, match="metric 'mae_hu' has no measurements"):
        subgroup_analysis(empty, "mae_hu", "sex", **FAST)
    with pytest.raises(ValueError, match="value column 'dice' is not in data"):
        subgroup_analysis(_cohort(), "dice", "sex", **FAST)


def test_all_cases_in_one_group():
    data = _cohort().assign(sex="F")
    with pytest.raises(ValueError, match=r"all 90 case\(s\) fall in one group of 'sex' "
                                         r"\('F'\): there is nothing to compare"):
        subgroup_analysis(data, "mae_hu", "sex", **FAST)


def test_nan_values_are_refused_by_name_or_omitted_and_listed():
    data = _cohort()
    data.loc[[2, 7], "mae_hu"] = np.nan
    with pytest.raises(ValueError, match=r"metric 'mae_hu' is NaN or not a finite number for "
                                         r"2 of 90 case\(s\): P002, P007"):
        subgroup_analysis(data, "mae_hu", "sex", **FAST)
    result = subgroup_analysis(data, "mae_hu", "sex", nan_policy="omit", **FAST)
    assert result.excluded == ("P002", "P007") and result.overall["n"] == 88
    with pytest.raises(ValueError, match="no finite measurement"):
        subgroup_analysis(data.assign(mae_hu=np.nan), "mae_hu", "sex", nan_policy="omit")


def test_numeric_attribute_needs_bins_and_values_must_fit_them():
    data = _cohort().assign(weight_kg=70.0)
    with pytest.raises(ValueError, match="attribute 'weight_kg' is numeric: declare bins"):
        subgroup_analysis(data, "mae_hu", "weight_kg", **FAST)
    with pytest.raises(ValueError, match=r"attribute 'bmi': value\(s\) \[.*\] outside the bins "
                                         r"\[0, 30\)"):
        subgroup_analysis(_cohort(), "mae_hu", "bmi", bins={"bmi": {"edges": [0, 30]}}, **FAST)
    with pytest.raises(ValueError, match=r"bins\['bmi'\].labels must be 2 distinct labels"):
        subgroup_analysis(_cohort(), "mae_hu", "bmi",
                          bins={"bmi": {"edges": [0, 30, 99], "labels": ["a"]}}, **FAST)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="min_group_size must be an integer >= 2, got 1"):
        subgroup_analysis(_cohort(), "mae_hu", "sex", min_group_size=1)
    with pytest.raises(ValueError, match="better must be 'lower', 'higher' or 'zero'"):
        subgroup_analysis(_cohort(), "mae_hu", "sex", better="up")
    with pytest.raises(ValueError, match="failure column 'sex' must hold True/False"):
        subgroup_analysis(_cohort(), "mae_hu", "sex", failed="sex", **FAST)


def test_shifting_every_value_shifts_means_and_keeps_differences_and_p_values():
    data = _cohort()
    base = subgroup_analysis(data, "mae_hu", "bmi", failed="failed", min_group_size=5, seed=1,
                             **FAST)
    shifted = subgroup_analysis(data.assign(mae_hu=data["mae_hu"] + 100.0), "mae_hu", "bmi",
                                failed="failed", min_group_size=5, seed=1, **FAST)
    assert shifted.groups["mean"].to_numpy() == pytest.approx(base.groups["mean"] + 100.0)
    for column in ("diff_to_overall", "diff_ci_low", "diff_ci_high"):
        assert shifted.groups[column].to_numpy() == pytest.approx(base.groups[column])
    assert shifted.tests["p_value"].to_numpy() == pytest.approx(base.tests["p_value"])
    assert shifted.gaps["gap_worst_to_best"] == pytest.approx(base.gaps["gap_worst_to_best"])


def test_docstring_examples_run():
    import doctest

    import checks.bias

    assert doctest.testmod(checks.bias, optionflags=doctest.ELLIPSIS).failed == 0
