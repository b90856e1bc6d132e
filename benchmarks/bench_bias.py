"""Subgroup analysis: time of checks.bias.subgroup_analysis beside fairlearn's MetricFrame.

Both compute per-group means with bootstrap 95 % intervals on the same synthetic cohort
(fairlearn: ``MetricFrame(n_boot=..., ci_quantiles=[0.025, 0.975])``, which resamples the
whole cohort and recomputes every group); ours also runs the tests, Dunn, Fisher and the
differences/ratios to overall with their CIs. Prints seconds and ratios (ours / fairlearn).

Run: ``.venv/bin/python benchmarks/bench_bias.py [--cases N ...] [--boot B] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from checks.bias import subgroup_analysis


def _cohort(n_cases: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    bmi = rng.uniform(17.0, 40.0, n_cases)
    mae = 30.0 + 15.0 * (bmi >= 30) + rng.normal(0.0, 6.0, n_cases)
    return pd.DataFrame({"case_id": [f"P{i}" for i in range(n_cases)], "bmi": bmi,
                         "mae_hu": mae, "failed": mae > 45.0})


def _best_of(repeat: int, function) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from fairlearn.metrics import MetricFrame

    print(f"bootstrap replicates: {args.boot}; best of {args.repeat}; BMI in WHO classes")
    print(f"{'cases':>7} {'ours (s)':>10} {'fairlearn (s)':>14} {'ratio':>7}")
    for n in args.cases:
        data = _cohort(n)
        labels = pd.cut(data["bmi"], [0, 18.5, 25, 30, np.inf], right=False).astype(str)

        def ours(data=data) -> None:
            subgroup_analysis(data, "mae_hu", "bmi", failed="failed", n_bootstrap=args.boot)

        def fairlearn(data=data, labels=labels) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                MetricFrame(metrics=lambda t, p: float(np.mean(p)), y_true=np.zeros(len(data)),
                            y_pred=data["mae_hu"].to_numpy(), sensitive_features=labels,
                            n_boot=args.boot, ci_quantiles=[0.025, 0.975], random_state=0)

        t_ours, t_peer = _best_of(args.repeat, ours), _best_of(args.repeat, fairlearn)
        print(f"{n:>7} {t_ours:>10.3f} {t_peer:>14.3f} {t_ours / t_peer:>7.3f}")


if __name__ == "__main__":
    main()
