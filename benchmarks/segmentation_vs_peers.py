"""Speed and accuracy of ``checks.segmentation.compare_masks`` against surface-distance and MONAI.

Usage::

    .venv/bin/python benchmarks/segmentation_vs_peers.py            # 160 x 256 x 256
    .venv/bin/python benchmarks/segmentation_vs_peers.py --repeat 3

REFERENCE.md's pair: a ball of radius 30 mm and one of 31.5 mm shifted 2 mm, voxelised
(voxel centre inside) on a 160 x 256 x 256 grid of 2.5 x 0.98 x 0.98 mm, off-centre by a
fraction of a voxel. Exact values (closed form / dense integration): Dice 0.924,
HD95 3.31 mm, ASSD 1.56 mm, surface Dice at 2 mm 0.625. Timed, best of ``--repeat``:

* ours ``method="exact"`` (sub-voxel meshes, exact point-to-mesh distances) and
  ``method="deepmind"``, both with every metric (Dice ... APL, volumes, centroids);
* surface-distance 0.1 (DeepMind): ``compute_surface_distances`` + HD95 + average distance
  + surface Dice + volumetric Dice;
* MONAI: ``compute_hausdorff_distance(percentile=95)``, ``compute_average_surface_distance
  (symmetric=True)``, ``compute_surface_dice(use_subvoxels=True)``, ``compute_dice`` on CPU
  tensors of the whole grid.

Ratios are peer time / our time (above 1 = ours is faster).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from checks.segmentation import compare_masks  # noqa: E402
from qa.volume import Volume  # noqa: E402
from tests.checks._segmentation_analytic import Sphere, exact_metrics  # noqa: E402

SPACING_MM = (2.5, 0.98, 0.98)
TOLERANCE_MM = 2.0


def _best(fn, repeat: int):
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


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
    for method in ("exact", "deepmind"):
        t, r = _best(lambda m=method: compare_masks(va, vb, TOLERANCE_MM, method=m),
                     args.repeat)
        rows.append((f"ours {method}", t, r.dice, r.hd95_mm, r.assd_mm, r.surface_dice))
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
        t, v = _best(peer_sd, args.repeat)
        rows.append(("surface-distance 0.1", t, *v))
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
        t, v = _best(peer_monai, args.repeat)
        rows.append((f"MONAI {__import__('monai').__version__}", t, *v))
    except ImportError:
        print("MONAI not installed: skipped")

    ours_exact = rows[1][1]
    ours_dm = rows[2][1]
    print(f"grid {shape} at {SPACING_MM} mm, r 30 vs 31.5 mm shifted 2 mm, tau {TOLERANCE_MM} mm")
    print(f"{'method':24s} {'time s':>8s} {'/exact':>7s} {'/dm':>7s} {'Dice':>7s} "
          f"{'HD95':>7s} {'ASSD':>7s} {'SDice':>7s}")
    for name, t, dice, hd95, assd, sdice in rows:
        times = ("", "", "") if t is None else (f"{t:8.2f}", f"{t / ours_exact:7.2f}",
                                                 f"{t / ours_dm:7.2f}")
        print(f"{name:24s} {times[0]:>8s} {times[1]:>7s} {times[2]:>7s} {dice:7.4f} "
              f"{hd95:7.3f} {assd:7.3f} {sdice:7.4f}")
    print("ratios: peer time / our time (exact method, deepmind method); >1 = ours faster")


if __name__ == "__main__":
    main()
