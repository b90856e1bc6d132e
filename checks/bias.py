"""Subgroup bias: does a model work equally well for every group of patients?

Public API: :func:`subgroup_analysis` (groups by one attribute or an intersection),
:func:`trend_analysis` (Spearman trend of the metric along a continuous attribute),
:func:`adjust_across` (one multiple-comparison family over several analyses), their result
records :class:`SubgroupResult` and :class:`TrendResult`, the default bins
:data:`DEFAULT_BINS`, and the cohort check :class:`SubgroupBiasCheck` (``subgroup_bias``).

Conventions: one row per case; ``value`` is a per-case metric (e.g. ``mae_hu``); groups below
``min_group_size`` cases are described (n, mean, CI) but never tested; a blank attribute is
its own group ``"missing"``. "Worst" follows ``better``: for ``"lower"`` (errors) the group
with the highest mean. Every random draw comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from checks import _bias_groups as grouping
from checks import _bias_stats as bstats
from checks import _bias_tables as tables
from checks._bias_groups import DEFAULT_BINS, MISSING_LABEL, Bins
from qa.jsonsafe import json_safe

__all__ = ["DEFAULT_BINS", "MISSING_LABEL", "Bins", "SubgroupResult", "TrendResult",
           "subgroup_analysis", "trend_analysis", "adjust_across", "SubgroupBiasCheck"]

logger = logging.getLogger(__name__)

TEST_COLUMNS = tables.TEST_COLUMNS
_BOOTSTRAP_METHOD = "percentile bootstrap, resampling cases within each group"


@dataclass(frozen=True)
class SubgroupResult:
    """Per-group values and between-group tests of one metric over one grouping.

    ``groups`` (one row per group, display order): group, n, sufficient, mean, median,
    ci_low, ci_high (bootstrap CI of the mean), diff_to_overall (+ diff_ci_low/high),
    ratio_to_overall (+ ratio_ci_low/high), failures, failure_rate, failure_ci_low/high
    (Clopper-Pearson; NaN when no failure flags were given). ``tests``: columns
    :data:`TEST_COLUMNS`. ``gaps``: worst / best sufficient group and the gaps (metric
    units; positive = worse, see :func:`subgroup_analysis`), with bootstrap CIs, and the
    fairlearn-style spreads over sufficient groups. ``excluded``: cases whose value was NaN.
    """

    value: str
    factor: str
    by: tuple[str, ...]
    unit: str
    better: str
    overall: dict[str, float]
    groups: pd.DataFrame
    tests: pd.DataFrame
    gaps: dict[str, Any]
    settings: dict[str, Any]
    excluded: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (non-finite floats become ``None``)."""
        return _json_clean({
            "value": self.value, "factor": self.factor, "by": list(self.by), "unit": self.unit,
            "better": self.better, "overall": self.overall,
            "groups": self.groups.to_dict(orient="records"),
            "tests": self.tests.to_dict(orient="records"), "gaps": self.gaps,
            "settings": self.settings, "excluded": list(self.excluded),
            "warnings": list(self.warnings)})


@dataclass(frozen=True)
class TrendResult:
    """Spearman trend of ``value`` along a continuous ``attribute`` (rho with its CI).

    ``tests`` has one row (columns :data:`TEST_COLUMNS`); ``n_missing`` cases had a blank
    attribute and are not in the correlation (they are counted, not hidden).
    """

    value: str
    attribute: str
    n: int
    n_missing: int
    rho: float
    ci_low: float
    ci_high: float
    tests: pd.DataFrame
    settings: dict[str, Any]
    excluded: tuple[str, ...] = ()

    @property
    def factor(self) -> str:
        return self.attribute

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (non-finite floats become ``None``)."""
        return _json_clean({
            "value": self.value, "attribute": self.attribute, "n": self.n,
            "n_missing": self.n_missing, "rho": self.rho, "ci_low": self.ci_low,
            "ci_high": self.ci_high, "tests": self.tests.to_dict(orient="records"),
            "settings": self.settings, "excluded": list(self.excluded)})


def subgroup_analysis(
    data: pd.DataFrame,
    value: str,
    by: str | Sequence[str],
    *,
    bins: Mapping[str, Any] | None = None,
    failed: str | None = None,
    min_group_size: int = 10,
    better: Literal["lower", "higher", "zero"] = "lower",
    correction: Literal["holm", "bh", "none"] = "holm",
    n_bootstrap: int = 2000,
    confidence_level: float = 0.95,
    seed: int = 0,
    n_resamples: int = 9999,
    nan_policy: Literal["raise", "omit"] = "raise",
    case_column: str = "case_id",
    unit: str = "",
) -> SubgroupResult:
    """Compare a per-case metric between groups of patients.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per case: the metric column ``value``, the attribute columns, optionally a
        boolean ``failed`` column and ``case_column`` (used to name excluded cases).
    value : str
        The metric column (e.g. ``"mae_hu"``), in ``unit``.
    by : str or sequence of str
        One attribute, or several for intersectional groups (``["sex", "age"]`` gives
        ``"F × 65-74"`` ...), as in fairlearn's ``MetricFrame(sensitive_features=...)``.
    bins : mapping attribute -> {"edges": [...], "labels": [...]} or Bins, optional
        Half-open bins ``[a, b)`` for continuous attributes. ``bmi`` and ``age`` default to
        :data:`DEFAULT_BINS` (WHO BMI classes, age bands); any other numeric attribute
        needs bins (or use :func:`trend_analysis`).
    failed : str, optional
        Boolean column: the case failed (per-case verdict at or above the chosen level).
        Gives per-group failure rates with Clopper-Pearson intervals and Fisher's test.
    min_group_size : int
        Groups with fewer cases are reported as insufficient data: no test, not "worst".
    better : {"lower", "higher", "zero"}
        Direction of the metric; sets which group is worst and the sign of the gaps.
    correction : {"holm", "bh", "none"}
        Adjustment over the tests of this analysis (use :func:`adjust_across` for a family
        spanning several analyses).
    n_bootstrap, confidence_level, seed : int, float, int
        Bootstrap resamples, interval level, seed of ``numpy.random.default_rng``.
    n_resamples : int
        Monte Carlo tables for Fisher's test with more than two groups.
    nan_policy : {"raise", "omit"}
        Non-finite metric values: error naming the cases, or exclude and list them.

    Returns
    -------
    SubgroupResult

    Raises
    ------
    ValueError
        Column missing, no rows, NaN values (``nan_policy="raise"``), all cases in one
        group, bad bins or options. Messages name the column, cases or option.

    Notes
    -----
    * Group CIs: percentile bootstrap of the mean, resampling cases within each group
      (stratified); the overall value of a replicate is the mean of all its cases, so
      differences (group - overall) and ratios (group / overall) get CIs from the same
      replicates (Efron & Tibshirani, An Introduction to the Bootstrap, 1993).
    * Between sufficient groups: two groups, Mann-Whitney U (scipy, two-sided) with Cliff's
      delta; more, Kruskal-Wallis H with epsilon^2 = H / (N - 1) (Tomczak & Tomczak 2014),
      then Dunn's pairwise z (Dunn 1964, tie-corrected) with Cliff's delta per pair.
      Failure rates: Fisher's exact test (Freeman-Halton by Monte Carlo beyond two groups).
    * Gaps among sufficient groups, positive = worse. ``better="lower"``: worst = highest
      mean, gap_worst_to_overall = worst - overall, gap_worst_to_best = worst - best;
      ``"higher"``: the mirror; ``"zero"``: worst = largest |mean|, gaps of |mean|.
      ``difference_between_groups`` (max - min), ``ratio_between_groups`` (min / max),
      ``difference_to_overall`` (max |g - overall|) and ``ratio_to_overall``
      (min of min(g/o, o/g)) follow fairlearn ``MetricFrame.difference()/ratio()``.

    Examples
    --------
    >>> import pandas as pd
    >>> cases = pd.DataFrame({"sex": ["F"] * 10 + ["M"] * 10,
    ...                       "mae_hu": [30.0] * 10 + [40.0] * 10})
    >>> r = subgroup_analysis(cases, "mae_hu", "sex", unit="HU", n_bootstrap=200)
    >>> r.groups[["group", "n", "mean", "diff_to_overall"]].values.tolist()
    [['F', 10, 30.0, -5.0], ['M', 10, 40.0, 5.0]]
    >>> r.gaps["worst_group"], r.gaps["gap_worst_to_overall"], r.gaps["gap_worst_to_best"]
    ('M', 5.0, 10.0)
    >>> r.tests[["test", "comparison"]].values.tolist()
    [['mann_whitney', 'F vs M']]
    """
    by_list = [by] if isinstance(by, str) else list(by)
    if not by_list or not all(isinstance(b, str) for b in by_list):
        raise ValueError(f"by must be an attribute name or a list of them, got {by!r}.")
    options = _check_options(min_group_size, better, correction, n_bootstrap,
                             confidence_level, n_resamples)
    factor = grouping.INTERSECTION_SEPARATOR.join(by_list)
    bin_specs = _bins_for(by_list, bins)
    table = grouping.check_columns(data, value, by_list + ([failed] if failed else []))
    table, excluded = grouping.clean_values(table, value, case_column, nan_policy)
    labels, order = grouping.group_labels(table, by_list, bin_specs)
    if len(order_present := [g for g in order if (labels == g).any()]) < 2:
        raise ValueError(
            f"all {len(table)} case(s) fall in one group of {factor!r} "
            f"({order_present[0]!r}): there is nothing to compare. Add cases from other "
            "groups, or choose another attribute or bins.")
    rng = np.random.default_rng(seed)
    values = table[value].to_numpy(dtype=float)
    flags = None if failed is None else _flags(table[failed], failed)
    groups = [g for g in order if g in set(labels)]
    members = [np.flatnonzero((labels == g).to_numpy()) for g in groups]
    samples = [values[m] for m in members]
    boot = bstats.bootstrap_group_means(samples, n_bootstrap, rng)
    level = confidence_level
    overall_mean = float(values.mean())
    rows = []
    for j, (name, sample) in enumerate(zip(groups, samples, strict=True)):
        mean = float(sample.mean())
        diff_ci = bstats.percentile_interval(boot.group_means[:, j] - boot.overall_means, level)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio_ci = bstats.percentile_interval(boot.group_means[:, j] / boot.overall_means,
                                                  level)
        row = {"group": name, "n": len(sample), "sufficient": len(sample) >= min_group_size,
               "mean": mean, "median": float(np.median(sample)),
               "ci_low": bstats.percentile_interval(boot.group_means[:, j], level)[0],
               "ci_high": bstats.percentile_interval(boot.group_means[:, j], level)[1],
               "diff_to_overall": mean - overall_mean,
               "diff_ci_low": diff_ci[0], "diff_ci_high": diff_ci[1],
               "ratio_to_overall": mean / overall_mean if overall_mean != 0 else math.nan,
               "ratio_ci_low": ratio_ci[0], "ratio_ci_high": ratio_ci[1]}
        row.update(_failure_columns(None if flags is None else flags[members[j]], level))
        rows.append(row)
    group_table = pd.DataFrame(rows)
    overall_ci = bstats.percentile_interval(boot.overall_means, level)
    overall = {"n": len(values), "mean": overall_mean, "median": float(np.median(values)),
               "ci_low": overall_ci[0], "ci_high": overall_ci[1]}
    overall.update(_failure_columns(flags, level))
    sufficient = [j for j, row in enumerate(rows) if row["sufficient"]]
    warnings = []
    if len(sufficient) < 2:
        warnings.append(f"fewer than two groups of {factor!r} have >= {min_group_size} cases: "
                        "no between-group test (insufficient data).")
    tests = tables.value_tests(factor, [groups[j] for j in sufficient],
                               [samples[j] for j in sufficient], warnings)
    if flags is not None:
        tests += tables.failure_tests(factor, [groups[j] for j in sufficient],
                                      [flags[members[j]] for j in sufficient], n_resamples,
                                      rng, warnings)
    tests_frame = tables.tests_frame(tests, correction)
    gaps = tables.gaps(group_table, sufficient, overall_mean, better, boot, level)
    settings = {**options, "seed": seed, "bootstrap_method": _BOOTSTRAP_METHOD,
                "failure_interval": "Clopper-Pearson exact", "nan_policy": nan_policy}
    for note in warnings:
        logger.info("subgroup_analysis(%s by %s): %s", value, factor, note)
    return SubgroupResult(value=value, factor=factor, by=tuple(by_list), unit=unit,
                          better=better, overall=overall, groups=group_table,
                          tests=tests_frame, gaps=gaps, settings=settings, excluded=excluded,
                          warnings=tuple(warnings))


def trend_analysis(data: pd.DataFrame, value: str, attribute: str, *,
                   confidence_level: float = 0.95, correction: str = "holm",
                   nan_policy: Literal["raise", "omit"] = "raise",
                   case_column: str = "case_id") -> TrendResult:
    """Spearman rank correlation of ``value`` with a continuous ``attribute``.

    rho and its two-sided p-value from ``scipy.stats.spearmanr``; CI from Fisher's z with
    the Bonett-Wright (2000) variance (1 + rho^2/2) / (n - 3), doi:10.1007/BF02294183.
    Cases with a blank attribute are counted in ``n_missing`` and left out of rho.

    Raises
    ------
    ValueError
        Column missing or not numeric, no rows, NaN values (``nan_policy="raise"``),
        fewer than 3 cases with the attribute, or a constant attribute.
    """
    table = grouping.check_columns(data, value, [attribute])
    table, excluded = grouping.clean_values(table, value, case_column, nan_policy)
    x = pd.to_numeric(table[attribute], errors="coerce")
    bad_text = x.isna() & table[attribute].notna()
    if bad_text.any():
        raise ValueError(f"trend attribute {attribute!r} must be numeric; got "
                         f"{sorted(set(table[attribute][bad_text].astype(str)))[:5]}.")
    keep = x.notna().to_numpy()
    xs, ys = x.to_numpy(dtype=float)[keep], table[value].to_numpy(dtype=float)[keep]
    if xs.size < 3 or np.unique(xs).size < 2:
        raise ValueError(f"trend of {value!r} along {attribute!r} needs at least 3 cases with "
                         f"at least two distinct values; got {xs.size} case(s) with "
                         f"{np.unique(xs).size} distinct value(s).")
    rho, p_value, low, high = bstats.spearman_with_ci(xs, ys, confidence_level)
    tests = tables.tests_frame([{"factor": attribute, "outcome": "trend", "test": "spearman",
                           "comparison": f"{value} vs {attribute}", "statistic_name": "rho",
                           "statistic": rho, "p_value": p_value, "effect_size_name": "rho",
                           "effect_size": rho, "n": int(xs.size)}], correction)
    return TrendResult(value=value, attribute=attribute, n=int(xs.size),
                       n_missing=int((~keep).sum()), rho=rho, ci_low=low, ci_high=high,
                       tests=tests, excluded=excluded,
                       settings={"confidence_level": confidence_level, "correction": correction,
                                 "interval": "Fisher z, Bonett-Wright variance"})


def adjust_across(results: Sequence[SubgroupResult | TrendResult],
                  correction: Literal["holm", "bh", "none"] = "holm") -> list[Any]:
    """Re-adjust p-values over every test of several analyses as one family.

    Returns copies of ``results`` whose ``tests.p_adjusted`` come from
    ``correction`` applied to the concatenated raw p-values (NaN p-values are not counted).
    """
    sizes = [len(r.tests) for r in results]
    if not results or sum(sizes) == 0:
        return list(results)
    raw = np.concatenate([r.tests["p_value"].to_numpy(dtype=float) for r in results])
    adjusted = bstats.adjust_p_values(raw, correction)
    out, start = [], 0
    for result, size in zip(results, sizes, strict=True):
        tests = result.tests.copy()
        tests["p_adjusted"] = adjusted[start:start + size]
        start += size
        out.append(replace(result, tests=tests,
                           settings={**result.settings, "correction": correction,
                                     "family_size": int(np.isfinite(raw).sum())}))
    return out


# -- helpers ---------------------------------------------------------------------------------

def _check_options(min_group_size: Any, better: str, correction: str, n_bootstrap: Any,
                   confidence_level: Any, n_resamples: Any) -> dict[str, Any]:
    def positive_int(name: str, x: Any, low: int) -> None:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {x!r}.")

    positive_int("min_group_size", min_group_size, 2)
    positive_int("n_bootstrap", n_bootstrap, 100)
    positive_int("n_resamples", n_resamples, 100)
    if better not in ("lower", "higher", "zero"):
        raise ValueError(f"better must be 'lower', 'higher' or 'zero', got {better!r}.")
    if correction not in ("holm", "bh", "none"):
        raise ValueError(f"correction must be 'holm', 'bh' or 'none', got {correction!r}.")
    if not isinstance(confidence_level, float) or not 0.5 <= confidence_level < 1:
        raise ValueError(f"confidence_level must be a float in [0.5, 1), got "
                         f"{confidence_level!r}.")
    return {"min_group_size": int(min_group_size), "better": better, "correction": correction,
            "n_bootstrap": int(n_bootstrap), "confidence_level": confidence_level,
            "n_resamples": int(n_resamples)}


def _bins_for(by: list[str], bins: Mapping[str, Any] | None) -> dict[str, Bins]:
    given = dict(bins or {})
    out = {a: grouping.normalise_bins(a, spec) for a, spec in given.items() if a in by}
    for attribute in by:
        if attribute not in out and attribute in DEFAULT_BINS:
            out[attribute] = DEFAULT_BINS[attribute]
    return out


def _flags(column: pd.Series, name: str) -> np.ndarray:
    if column.isna().any() or not all(isinstance(v, (bool, np.bool_)) for v in column):
        raise ValueError(f"failure column {name!r} must hold True/False for every case, got "
                         f"{sorted(set(map(repr, column)))[:5]}.")
    return column.to_numpy(dtype=bool)


def _failure_columns(flags: np.ndarray | None, level: float) -> dict[str, float]:
    if flags is None:
        return {"failures": math.nan, "failure_rate": math.nan, "failure_ci_low": math.nan,
                "failure_ci_high": math.nan}
    k, n = int(flags.sum()), int(flags.size)
    low, high = bstats.clopper_pearson(k, n, level)
    return {"failures": k, "failure_rate": k / n, "failure_ci_low": low, "failure_ci_high": high}


def _json_clean(obj: Any) -> Any:
    return json_safe(obj, fallback=str)


# The engine class lives in a private module that uses the functions above.
from checks._bias_check import SubgroupBiasCheck  # noqa: E402
