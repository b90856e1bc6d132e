"""Speed of the ``checks.noise`` NPS and TTF against the micro-CT Image Quality Toolbox.

Usage::

    .venv/bin/python benchmarks/bench_noise.py                 # 20 slices of 512 x 512
    .venv/bin/python benchmarks/bench_noise.py --slices 5 --repeat 3

Workloads (deterministic, ``numpy.random.default_rng(0)``):

* NPS: 5 square ROIs of 64 pixels on every slice of a noisy 512 × 512 stack (0.5 mm
  pixels); ours = ``nps_2d`` + ``radial_nps``; peer = ``microct_iq_toolbox.api.nps``.
* TTF: two 20 mm inserts (+100 / −100 HU, Gaussian blur 0.6 mm, noise 5 HU) on the same
  stack; ours = ``ttf_from_disc`` twice; peer = ``microct_iq_toolbox.api.ttf`` (both inserts
  in one call).

Prints the best of ``--repeat`` wall times and ours / peer (below 1 = ours is faster).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from checks.noise import nps_2d, radial_nps, ttf_from_disc

PIXEL_MM = 0.5
SIZE = 512
ROI = 64
ROI_CORNERS = ((100, 100), (100, 348), (348, 100), (348, 348), (224, 224))
INSERTS_MM = ((128.0, 64.0, 100.0), (128.0, 192.0, -100.0))  # y, x, contrast


def _stack(n_slices: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    coords = np.arange(SIZE) * PIXEL_MM
    base = np.zeros((SIZE, SIZE))
    for cy, cx, contrast in INSERTS_MM:
        r = np.hypot(coords[:, None] - cy, coords[None, :] - cx)
        base += np.where(r <= 10.0, contrast, 0.0)
    base = ndimage.gaussian_filter(base, 0.6 / PIXEL_MM)
    noise = ndimage.gaussian_filter(rng.normal(0.0, 10.0, (n_slices, SIZE, SIZE)),
                                    (0, 0.8, 0.8))
    return base + noise


def _best(func: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from microct_iq_toolbox import api

    stack = _stack(args.slices)
    rois = np.concatenate([stack[:, y:y + ROI, x:x + ROI] for y, x in ROI_CORNERS])
    bounds = [[y, y + ROI, x, x + ROI] for y, x in ROI_CORNERS]

    def ours_nps():
        return radial_nps(nps_2d(rois, PIXEL_MM))

    def peer_nps():
        return api.nps(stack, bounds, PIXEL_MM)

    def ours_ttf():
        return [ttf_from_disc(stack, PIXEL_MM, (cy, cx), 10.0) for cy, cx, _ in INSERTS_MM]

    centres = [[int(round(cy / PIXEL_MM)), int(round(cx / PIXEL_MM))] for cy, cx, _ in INSERTS_MM]

    def peer_ttf():
        return api.ttf(stack, centres, 40, PIXEL_MM, materials=["plus", "minus"])

    print(f"{args.slices} slices of {SIZE} x {SIZE}, best of {args.repeat}")
    print(f"{'workload':<8} {'ours (s)':>10} {'peer (s)':>10} {'ours/peer':>10}")
    for name, ours, theirs in (("NPS", ours_nps, peer_nps), ("TTF", ours_ttf, peer_ttf)):
        t_ours, t_peer = _best(ours, args.repeat), _best(theirs, args.repeat)
        print(f"{name:<8} {t_ours:>10.3f} {t_peer:>10.3f} {t_ours / t_peer:>10.2f}")


if __name__ == "__main__":
    main()
