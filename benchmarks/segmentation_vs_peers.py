"""Speed and accuracy of ``checks.segmentation.compare_masks`` against surface-distance and MONAI.

Usage::

    .venv/bin/python benchmarks/segmentation_vs_peers.py            # 160 x 256 x 256
    .venv/bin/python benchmarks/segmentation_vs_peers.py --repeat 3

REFERENCE.md's pair: a ball of radius 30 mm and one of 31.5 mm shifted 2 mm, voxelised
(voxel centre inside) on a 160 x 256 x 256 grid of 2.5 x 0.98 x 0.98 mm, off-centre by a
fraction of a voxel. Exact values (closed form / dense integration): Dice 0.924,
HD95 3.31 mm, ASSD 1.56 mm, surface Dice at 2 mm 0.625. Timed, best of ``--repeat``:

* ours ``method="exact"`` (sub-voxel meshes, exact point-to-mesh distances) and
  ``method="deepmind"``, both with every metric (Dice ... APL, volumes, centroids), and
  ``exact`` once more with numba capped to one thread, hence no helper thread (as in an
  engine worker that shares the cores: the algorithm's own CPU cost);
* surface-distance 0.1 (DeepMind): ``compute_surface_distances`` + HD95 + average distance
  + surface Dice + volumetric Dice;
* MONAI: ``compute_hausdorff_distance(percentile=95)``, ``compute_average_surface_distance
  (symmetric=True)``, ``compute_surface_dice(use_subvoxels=True)``, ``compute_dice`` on CPU
  tensors of the whole grid.

Ratios are peer time / our time (above 1 = ours is faster), for the wall clock and for the
CPU time of the process (all threads; the fairer figure on a loaded machine). The methods
run in interleaved rounds (one call each per round), best of ``--repeat`` rounds each.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from checks.segmentation import compare_masks  # noqa: E402
from qa.volume import Volume  # noqa: E402
from tests.checks._segmentation_analytic import Sphere, exact_metrics  # noqa: E402

SPACING_MM = (2.5, 0.98, 0.98)
ONE_THREAD = "ours exact, 1 thread"
TOLERANCE_MM = 2.0


def _timed(fn):
    """Wall-clock and CPU time (this process, all its threads) of one call, and its value.

    CPU time is the fairer comparison on a shared, loaded machine (other jobs inflate the
    wall clock); it counts every thread, so a parallel method is not flattered by it.
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    value = fn()
    return (time.perf_counter() - start, time.process_time() - start_cpu), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 256, 256))
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    shape = tuple(args.shape)
    centre = np.array(shape) * np.array(SPACING_MM) / 2 + np.array([0.3, 0.17, -0.21])
    ref_s, pred_s = Sphere(tuple(centre), 30.0), Sphere(tuple(centre + [0, 0, 2.0]), 31.5)
    a, b = ref_s.mask(shape, SPACING_MM), pred_s.mask(shape, SPACING_MM)
    exact = exact_metrics([ref_s], [pred_s], TOLERANCE_MM)
    rows = [("exact (analytic)", None, exact.dice, exact.hd95_mm, exact.assd_mm,
             exact.surface_dice)]
    va, vb = Volume(a, SPACING_MM), Volume(b, SPACING_MM)
    small = np.zeros((12, 12, 12), bool)
    small[3:8, 3:8, 3:8] = True
    for method in ("exact", "deepmind"):  # load the compiled kernels before timing
        compare_masks(Volume(small, (1, 1, 1)), Volume(np.roll(small, 1, 0), (1, 1, 1)),
                      method=method)
    candidates = []  # (name, callable returning (dice, hd95, assd, surface dice))
    for method in ("exact", "deepmind"):
        candidates.append((f"ours {method}", lambda m=method: (
            lambda r: (r.dice, r.hd95_mm, r.assd_mm, r.surface_dice))(
                compare_masks(va, vb, TOLERANCE_MM, method=m))))

    def exact_one_thread():
        # as in an engine worker capped to one thread: no helper thread
        previous = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            r = compare_masks(va, vb, TOLERANCE_MM)
        finally:
            numba.set_num_threads(previous)
        return r.dice, r.hd95_mm, r.assd_mm, r.surface_dice
    candidates.append((ONE_THREAD, exact_one_thread))
    try:
        import surface_distance as sd

        def peer_sd():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                d = sd.compute_surface_distances(a, b, SPACING_MM)
                m_ab, m_ba = sd.compute_average_surface_distance(d)
                area_a, area_b = d["surfel_areas_gt"].sum(), d["surfel_areas_pred"].sum()
                return (sd.compute_dice_coefficient(a, b), sd.compute_robust_hausdorff(d, 95),
                        (m_ab * area_a + m_ba * area_b) / (area_a + area_b),
                        sd.compute_surface_dice_at_tolerance(d, TOLERANCE_MM))
        candidates.append(("surface-distance 0.1", peer_sd))
    except ImportError:
        print("surface-distance not installed: skipped")
    try:
        import torch
        from monai.metrics import (
            compute_average_surface_distance,
            compute_dice,
            compute_hausdorff_distance,
            compute_surface_dice,
        )

        ta = torch.from_numpy(a[None, None].astype(np.float32))
        tb = torch.from_numpy(b[None, None].astype(np.float32))

        def peer_monai():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kw = {"include_background": True, "spacing": SPACING_MM}
                return (float(compute_dice(tb, ta, include_background=True)),
                        float(compute_hausdorff_distance(tb, ta, percentile=95, **kw)),
                        float(compute_average_surface_distance(tb, ta, symmetric=True, **kw)),
                        float(compute_surface_dice(tb, ta, [TOLERANCE_MM], use_subvoxels=True,
                                                   **kw)))
        candidates.append((f"MONAI {__import__('monai').__version__}", peer_monai))
    except ImportError:
        print("MONAI not installed: skipped")
    # rounds of one call each, interleaved, best of the rounds per method: a change in the
    # machine's load hits every method alike
    best = {name: [float("inf"), float("inf")] for name, _ in candidates}
    values = {}
    for _ in range(args.repeat):
        for name, fn in candidates:
            t, values[name] = _timed(fn)
            best[name] = [min(best[name][0], t[0]), min(best[name][1], t[1])]
    rows += [(name, tuple(best[name]), *values[name]) for name, _ in candidates]

    ours_exact, ours_dm = rows[1][1], rows[2][1]
    print(f"grid {shape} at {SPACING_MM} mm, r 30 vs 31.5 mm shifted 2 mm, tau {TOLERANCE_MM} mm")
    print(f"{'method':24s} {'wall s':>7s} {'CPU s':>7s} {'/exact':>13s} {'/dm':>13s} "
          f"{'Dice':>7s} {'HD95':>7s} {'ASSD':>7s} {'SDice':>7s}")
    for name, t, dice, hd95, assd, sdice in rows:
        if t is None:
            times = ("", "", "", "")
        else:
            times = (f"{t[0]:7.3f}", f"{t[1]:7.3f}",
                     f"{t[0] / ours_exact[0]:6.2f}/{t[1] / ours_exact[1]:<6.2f}",
                     f"{t[0] / ours_dm[0]:6.2f}/{t[1] / ours_dm[1]:<6.2f}")
        print(f"{name:24s} {times[0]:>7s} {times[1]:>7s} {times[2]:>13s} {times[3]:>13s} "
              f"{dice:7.4f} {hd95:7.3f} {assd:7.3f} {sdice:7.4f}")
    print("ratios: peer time / our time, wall/CPU (exact method, deepmind method); "
          ">1 = ours faster")
    one = best[ONE_THREAD]
    for name, _ in candidates:
        if not name.startswith("ours"):
            print(f"{name} / {ONE_THREAD}: {best[name][0] / one[0]:.2f} wall, "
                  f"{best[name][1] / one[1]:.2f} CPU")


if __name__ == "__main__":
    main()
