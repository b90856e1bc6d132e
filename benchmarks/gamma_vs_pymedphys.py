"""Gamma: checks.gamma versus pymedphys.gamma, side by side in one run, same machine.

Standard case (issue #3): grid 80 x 120 x 120 at 2.5 mm, a smooth dose, evaluated = reference
shifted 1 mm, x 1.02, + 0.5 % noise; global normalisation, 10 % cutoff, max_gamma 2;
pymedphys at its default interp_fraction = 10. Prints both times, the ratio, the pass
rates and the peak memory of each (tracemalloc for numpy, psutil-free RSS from
resource). ``--quick`` uses a 32 x 48 x 48 grid. Both sides are compiled before any
timing (pymedphys's interpolation is numba-compiled too: its first call in a fresh
environment takes seconds more); ours is the fastest of ``--repeat`` runs, pymedphys's of
``--peer-repeat``.

Run: ``.venv/bin/python benchmarks/gamma_vs_pymedphys.py [--quick]`` (pymedphys and numba
must be installed).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from checks.gamma import gamma_index  # noqa: E402
from qa.volume import Volume  # noqa: E402

CASES = [("3%/3mm", 3.0, 3.0, False), ("3%/2mm", 3.0, 2.0, False),
         ("2%/2mm", 2.0, 2.0, False), ("1%/1mm", 1.0, 1.0, False),
         ("local 2%/2mm", 2.0, 2.0, True)]


def standard_case(shape: tuple[int, int, int], seed: int = 0) -> tuple[Volume, Volume]:
    """Smooth dose peaked in the middle, and its shifted, scaled, noisy copy (Gy)."""
    rng = np.random.default_rng(seed)
    spacing = 2.5
    zz, yy, xx = np.meshgrid(*[(np.arange(n) - n / 2) * spacing for n in shape], indexing="ij")
    r2 = (zz / (shape[0] * spacing / 6)) ** 2 + (yy / (shape[1] * spacing / 6)) ** 2 \
        + (xx / (shape[2] * spacing / 6)) ** 2
    dose = 60.0 * np.exp(-r2) + 4.0 * ndimage.gaussian_filter(rng.random(shape), 3)
    ref = Volume(dose, (spacing,) * 3)
    shifted = ndimage.shift(dose, (1.0 / spacing, 0.0, 0.0), order=1, mode="nearest")
    ev_arr = shifted * 1.02 + rng.normal(0.0, 0.005 * dose.max(), shape)
    return ref, ref.with_array(np.clip(ev_arr, 0.0, None))


def _load() -> str:
    """1-minute load average (the machine is shared; timings depend on it)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 x 48 x 48 grid")
    parser.add_argument("--skip-pymedphys", action="store_true")
    parser.add_argument("--only", nargs="+", metavar="LABEL",
                        help="criteria to run, e.g. 2%%/2mm 1%%/1mm (default: all five)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="our runs per criterion; the fastest is reported (default 3)")
    parser.add_argument("--peer-repeat", type=int, default=1,
                        help="pymedphys runs per criterion, the fastest reported (default 1: "
                        "it takes seconds to a minute per call)")
    args = parser.parse_args(argv)
    shape = (32, 48, 48) if args.quick else (80, 120, 120)
    ref, ev = standard_case(shape)
    print(f"grid {shape} at 2.5 mm; points >= 10 %: "
          f"{int((ref.array >= 0.1 * ref.array.max()).sum())}; load average at start "
          f"{_load()} (other jobs slow our two threads more than pymedphys's one)")
    gamma_index(ref, ev, 3.0, 3.0)  # compile the kernel once (cached afterwards)
    if not args.skip_pymedphys:
        # pymedphys's interpolation is numba-compiled too (cached on disk after the first
        # call in an environment): warm it up on a small case so that no timing below
        # includes a compilation
        import pymedphys

        small_ref, small_ev = standard_case((16, 24, 24))
        small_axes = small_ref.axis_coordinates_mm()
        pymedphys.gamma(small_axes, small_ref.array, small_axes, small_ev.array, 3.0, 3.0,
                        lower_percent_dose_cutoff=10, interp_fraction=10, max_gamma=2.0)
    print(f"{'criterion':>14} {'pymedphys_s':>12} {'ours_s':>8} {'ratio':>7} "
          f"{'pass_pm_%':>10} {'pass_ours_%':>11} {'max(ours-pm)':>13}")
    for label, dose_pct, dta, local in CASES:
        if args.only and label not in args.only:
            continue
        t_ours = math.inf
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            ours = gamma_index(ref, ev, dose_pct, dta, local=local, lower_cutoff_percent=10,
                               max_gamma=2.0)
            t_ours = min(t_ours, time.perf_counter() - t0)
        rss_ours = _peak_rss_mb()
        if args.skip_pymedphys:
            print(f"{label:>14} {'-':>12} {t_ours:8.2f} {'-':>7} {'-':>10} "
                  f"{ours.pass_rate_percent:11.2f}")
            continue
        import pymedphys

        axes = ref.axis_coordinates_mm()
        t_pm = math.inf
        for _ in range(max(1, args.peer_repeat)):
            t0 = time.perf_counter()
            theirs = pymedphys.gamma(axes, ref.array, axes, ev.array, dose_pct, dta,
                                     lower_percent_dose_cutoff=10, interp_fraction=10,
                                     max_gamma=2.0, local_gamma=local)
            t_pm = min(t_pm, time.perf_counter() - t0)
        both = ~np.isnan(theirs) & ~np.isnan(ours.gamma)
        pass_pm = 100.0 * np.mean(theirs[both] <= 1.0)
        excess = float(np.max(ours.gamma[both] - theirs[both]))
        print(f"{label:>14} {t_pm:12.2f} {t_ours:8.2f} {t_pm / t_ours:6.1f}x {pass_pm:10.2f} "
              f"{ours.pass_rate_percent:11.2f} {excess:13.4f}")
    print(f"peak RSS of the process: {_peak_rss_mb():.0f} MB (ours alone up to the first "
          f"pymedphys call: {rss_ours:.0f} MB); load average at end {_load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
