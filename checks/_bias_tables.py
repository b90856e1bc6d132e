"""Tables of the subgroup bias analysis (private): between-group tests and gaps.

Helpers of :func:`checks.bias.subgroup_analysis`; see its Notes for the conventions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from checks import _bias_stats as bstats

__all__ = ["TEST_COLUMNS", "value_tests", "failure_tests", "tests_frame", "gaps"]

#: Columns of every tests table.
TEST_COLUMNS = ("factor", "outcome", "test", "comparison", "statistic_name", "statistic",
                "p_value", "p_adjusted", "effect_size_name", "effect_size", "n")


def value_tests(factor: str, names: list[str], samples: list[np.ndarray],
                warnings: list[str]) -> list[dict]:
    """Mann-Whitney (two groups) or Kruskal-Wallis then Dunn (more) on the metric values."""
    if len(samples) < 2:
        return []
    if np.ptp(np.concatenate(samples)) == 0:
        warnings.append(f"every tested case of {factor!r} has the same value: there is no "
                        "difference to test.")
        return []
    n = int(sum(len(s) for s in samples))
    if len(samples) == 2:
        res = stats.mannwhitneyu(samples[0], samples[1], alternative="two-sided")
        return [{"factor": factor, "outcome": "value", "test": "mann_whitney",
                 "comparison": f"{names[0]} vs {names[1]}", "statistic_name": "U",
                 "statistic": float(res.statistic), "p_value": float(res.pvalue),
                 "effect_size_name": "cliffs_delta",
                 "effect_size": bstats.cliffs_delta(samples[0], samples[1]), "n": n}]
    res = stats.kruskal(*samples)
    tests = [{"factor": factor, "outcome": "value", "test": "kruskal_wallis",
              "comparison": "all groups", "statistic_name": "H",
              "statistic": float(res.statistic), "p_value": float(res.pvalue),
              "effect_size_name": "epsilon_squared",
              "effect_size": float(res.statistic) / (n - 1), "n": n}]
    for i, j, z, p in bstats.dunn_test(samples):
        tests.append({"factor": factor, "outcome": "value", "test": "dunn",
                      "comparison": f"{names[i]} vs {names[j]}", "statistic_name": "z",
                      "statistic": z, "p_value": p, "effect_size_name": "cliffs_delta",
                      "effect_size": bstats.cliffs_delta(samples[i], samples[j]),
                      "n": len(samples[i]) + len(samples[j])})
    return tests


def failure_tests(factor: str, names: list[str], flags: list[np.ndarray], n_resamples: int,
                   rng: np.random.Generator, warnings: list[str]) -> list[dict]:
    if len(flags) < 2:
        return []
    failures = [int(f.sum()) for f in flags]
    sizes = [int(f.size) for f in flags]
    if sum(failures) in (0, sum(sizes)):
        warnings.append(f"failure rates of {factor!r} not tested: "
                        f"{'no case' if sum(failures) == 0 else 'every case'} failed.")
        return []
    statistic, p_value, name = bstats.fisher_failures(failures, sizes, n_resamples, rng)
    comparison = f"{names[0]} vs {names[1]}" if len(names) == 2 else "all groups"
    return [{"factor": factor, "outcome": "failures", "test": "fisher_exact",
             "comparison": comparison, "statistic_name": name, "statistic": statistic,
             "p_value": p_value, "effect_size_name": "", "effect_size": math.nan,
             "n": sum(sizes)}]


def tests_frame(tests: list[dict], correction: str) -> pd.DataFrame:
    frame = pd.DataFrame(tests, columns=[c for c in TEST_COLUMNS if c != "p_adjusted"])
    frame.insert(TEST_COLUMNS.index("p_adjusted"), "p_adjusted",
                 bstats.adjust_p_values(frame["p_value"].to_numpy(dtype=float), correction))
    return frame


def gaps(groups: pd.DataFrame, sufficient: list[int], overall: float, better: str,
          boot: bstats.BootstrapMeans, level: float) -> dict[str, Any]:
    keys = ("worst_group", "best_group", "gap_worst_to_overall", "gap_worst_to_overall_ci",
            "gap_worst_to_best", "gap_worst_to_best_ci", "ratio_worst_to_overall",
            "ratio_worst_to_overall_ci", "difference_between_groups", "ratio_between_groups",
            "difference_to_overall", "ratio_to_overall")
    out: dict[str, Any] = dict.fromkeys(keys)
    if not sufficient:
        return out
    means = groups["mean"].to_numpy(dtype=float)
    score = {"lower": means, "higher": -means, "zero": np.abs(means)}[better]
    worst = max(sufficient, key=lambda j: score[j])
    best = min(sufficient, key=lambda j: score[j])

    def signed(a: np.ndarray | float, b: np.ndarray | float) -> Any:
        if better == "zero":
            return np.abs(a) - np.abs(b)
        return a - b if better == "lower" else b - a

    g, o = boot.group_means, boot.overall_means
    chosen = means[sufficient]
    with np.errstate(divide="ignore", invalid="ignore"):
        out.update(
            worst_group=groups["group"].iloc[worst], best_group=groups["group"].iloc[best],
            gap_worst_to_overall=float(signed(means[worst], overall)),
            gap_worst_to_overall_ci=bstats.percentile_interval(signed(g[:, worst], o), level),
            ratio_worst_to_overall=float(means[worst] / overall) if overall else math.nan,
            ratio_worst_to_overall_ci=bstats.percentile_interval(g[:, worst] / o, level),
            difference_between_groups=float(chosen.max() - chosen.min()),
            ratio_between_groups=float(chosen.min() / chosen.max()) if chosen.max() else math.nan,
            difference_to_overall=float(np.max(np.abs(chosen - overall))),
            ratio_to_overall=float(np.min(np.minimum(chosen / overall, overall / chosen))),
        )
    if len(sufficient) >= 2:
        out["gap_worst_to_best"] = float(signed(means[worst], means[best]))
        out["gap_worst_to_best_ci"] = bstats.percentile_interval(
            signed(g[:, worst], g[:, best]), level)
    return out
