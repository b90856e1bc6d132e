"""Statistics of the subgroup bias analysis (private; the public API is :mod:`checks.bias`).

Pure functions on numpy arrays: stratified bootstrap of group means, Clopper-Pearson
intervals, Cliff's delta, Dunn's post-hoc test, Spearman's rho with a confidence interval,
Holm and Benjamini-Hochberg adjustment, Fisher's exact test on an R x 2 table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "BootstrapMeans", "bootstrap_group_means", "clopper_pearson", "cliffs_delta",
    "dunn_test", "spearman_with_ci", "adjust_p_values", "fisher_failures",
]


@dataclass(frozen=True)
class BootstrapMeans:
    """Bootstrap replicates of group means, shape ``(n_bootstrap, n_groups)``, and of the
    overall mean, shape ``(n_bootstrap,)``."""

    group_means: np.ndarray
    overall_means: np.ndarray


def bootstrap_group_means(values_by_group: Sequence[np.ndarray], n_bootstrap: int,
                          rng: np.random.Generator) -> BootstrapMeans:
    """Stratified bootstrap: resample each group with replacement at its own size.

    The overall mean of a replicate is the mean of all resampled values (group means
    weighted by group size), so differences and ratios of a group to the overall value,
    or between groups, are computed replicate by replicate from one joint distribution
    (Efron & Tibshirani 1993, ch. 13, percentile method).
    """
    sizes = np.array([len(v) for v in values_by_group], dtype=float)
    means = np.empty((n_bootstrap, len(values_by_group)))
    for j, values in enumerate(values_by_group):
        idx = rng.integers(0, len(values), size=(n_bootstrap, len(values)))
        means[:, j] = values[idx].mean(axis=1)
    overall = means @ sizes / sizes.sum()
    return BootstrapMeans(means, overall)


def percentile_interval(replicates: np.ndarray, confidence_level: float) -> tuple[float, float]:
    """Percentile bootstrap interval (linear interpolation between order statistics)."""
    alpha = 1.0 - confidence_level
    finite = replicates[np.isfinite(replicates)]
    if finite.size < replicates.size or finite.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def clopper_pearson(k: int, n: int, confidence_level: float) -> tuple[float, float]:
    """Exact (Clopper-Pearson 1934) interval of a binomial proportion k / n.

    Lower = Beta(alpha/2; k, n-k+1) quantile (0 when k = 0), upper = Beta(1-alpha/2; k+1,
    n-k) quantile (1 when k = n). Clopper & Pearson, Biometrika 26(4):404-413 (1934),
    doi:10.1093/biomet/26.4.404. NaN for n = 0.
    """
    if n == 0:
        return math.nan, math.nan
    alpha = 1.0 - confidence_level
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def cliffs_delta(x: np.ndarray, y: np.ndarray) -> float:
    """Cliff's delta = P(X > Y) - P(X < Y) over all pairs, in [-1, 1].

    Cliff, Psychol Bull 114(3):494-509 (1993), doi:10.1037/0033-2909.114.3.494. Computed
    from the Mann-Whitney U of ``x`` (ties count 1/2): delta = 2 U / (n_x n_y) - 1.
    """
    u = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").statistic
    return float(2.0 * u / (len(x) * len(y)) - 1.0)


def dunn_test(values_by_group: Sequence[np.ndarray]) -> list[tuple[int, int, float, float]]:
    """Dunn's (1964) pairwise test after Kruskal-Wallis, with the tie correction.

    Ranks are taken over all groups together (average ranks for ties). For groups i, j::

        z_ij = (Rbar_i - Rbar_j) / sqrt((N (N + 1) / 12 - T / (12 (N - 1))) (1/n_i + 1/n_j))

    with T = sum over tie groups of (t^3 - t); two-sided p = 2 (1 - Phi(|z|)), not adjusted.
    Dunn, Technometrics 6(3):241-252 (1964), doi:10.1080/00401706.1964.10490181 (tie term
    as in scikit-posthocs ``posthoc_dunn`` and Zar, Biostatistical Analysis, 5th ed.).

    Returns
    -------
    list of (i, j, z, p) for i < j.
    """
    pooled = np.concatenate(values_by_group)
    ranks = stats.rankdata(pooled)
    n_total = pooled.size
    _, tie_counts = np.unique(pooled, return_counts=True)
    ties = float(np.sum(tie_counts.astype(float) ** 3 - tie_counts))
    variance_unit = n_total * (n_total + 1) / 12.0 - ties / (12.0 * (n_total - 1))
    bounds = np.cumsum([0] + [len(v) for v in values_by_group])
    mean_ranks = [ranks[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    out = []
    for i in range(len(values_by_group)):
        for j in range(i + 1, len(values_by_group)):
            se = math.sqrt(variance_unit * (1 / len(values_by_group[i])
                                            + 1 / len(values_by_group[j])))
            z = (mean_ranks[i] - mean_ranks[j]) / se if se > 0 else 0.0
            out.append((i, j, float(z), float(2.0 * stats.norm.sf(abs(z)))))
    return out


def spearman_with_ci(x: np.ndarray, y: np.ndarray,
                     confidence_level: float) -> tuple[float, float, float, float]:
    """Spearman's rho, its two-sided p-value (scipy) and a Fisher-z interval.

    The interval uses the Bonett & Wright (2000) variance of atanh(rho):
    (1 + rho^2 / 2) / (n - 3); Psychometrika 65(1):23-28, doi:10.1007/BF02294183.
    Needs n >= 4 (NaN interval otherwise).

    Returns
    -------
    (rho, p_value, ci_low, ci_high)
    """
    result = stats.spearmanr(x, y)
    rho, p_value = float(result.statistic), float(result.pvalue)
    n = len(x)
    if n < 4 or not math.isfinite(rho):
        return rho, p_value, math.nan, math.nan
    z_crit = float(stats.norm.ppf(0.5 + confidence_level / 2))
    clipped = min(max(rho, -0.999999), 0.999999)
    half_width = z_crit * math.sqrt((1 + rho**2 / 2) / (n - 3))
    return (rho, p_value, math.tanh(math.atanh(clipped) - half_width),
            math.tanh(math.atanh(clipped) + half_width))


def adjust_p_values(p_values: Sequence[float], method: str) -> np.ndarray:
    """Adjust a family of p-values for multiple comparisons; NaN entries stay NaN and do
    not count in the family size.

    ``"holm"``: step-down, p_(i) -> max_{k <= i} min(1, (m - k + 1) p_(k)) (Holm, Scand J
    Stat 6(2):65-70, 1979). ``"bh"``: step-up false discovery rate, p_(i) -> min_{k >= i}
    min(1, m p_(k) / k) (Benjamini & Hochberg, J R Stat Soc B 57(1):289-300, 1995,
    doi:10.1111/j.2517-6161.1995.tb02031.x). ``"none"``: unchanged.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    keep = np.flatnonzero(np.isfinite(p))
    m = keep.size
    if m == 0:
        return out
    order = keep[np.argsort(p[keep], kind="stable")]
    sorted_p = p[order]
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * sorted_p))
    elif method == "bh":
        scaled = m * sorted_p / np.arange(1, m + 1)
        adjusted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    elif method == "none":
        adjusted = sorted_p
    else:
        raise ValueError(f"correction must be 'holm', 'bh' or 'none', got {method!r}.")
    out[order] = adjusted
    return out


def fisher_failures(failures: Sequence[int], sizes: Sequence[int], n_resamples: int,
                    rng: np.random.Generator) -> tuple[float, float, str]:
    """Fisher's exact test of equal failure rates across groups (table groups x {fail, pass}).

    Two groups: scipy's exact two-sided test; statistic = the sample odds ratio. More groups:
    the Freeman-Halton extension, p-value by Monte Carlo over tables with the observed
    margins (``scipy.stats.fisher_exact`` with ``MonteCarloMethod(n_resamples, rng)``);
    statistic = probability of the observed table. Freeman & Halton, Biometrika
    38(1/2):141-149 (1951), doi:10.2307/2332323.

    Returns
    -------
    (statistic, p_value, statistic_name)
    """
    table = np.array([[f, n - f] for f, n in zip(failures, sizes, strict=True)], dtype=np.int64)
    if table.shape[0] == 2:
        result = stats.fisher_exact(table)
        return float(result.statistic), float(result.pvalue), "odds_ratio"
    method = stats.MonteCarloMethod(n_resamples=n_resamples, rng=rng)
    result = stats.fisher_exact(table, method=method)
    return float(result.statistic), float(result.pvalue), "table_probability"
