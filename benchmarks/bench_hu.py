"""Speed and memory of ``checks.hu.hu_metrics`` against the plain SynthRAD/scikit-image way.

Usage::

    .venv/bin/python benchmarks/bench_hu.py                       # 200 x 512 x 512
    .venv/bin/python benchmarks/bench_hu.py --shape 60 256 256 --repeat 3 --workers 2

Builds a deterministic synthetic CT (int16) / sCT (float32) pair with a body mask, then times

* ours: ``hu_metrics`` (MAE, ME, RMSE, PSNR, SSIM, Bland-Altman, tissue classes, error
  histogram), total and split into the voxel statistics and the slab-wise SSIM;
* peer: the SynthRAD2023/2025 evaluation recipe on whole arrays (numpy MAE, skimage PSNR,
  skimage ``structural_similarity(full=True)`` masked mean), as in
  github.com/SynthRAD2023/metrics ``image_metrics.py``.

Memory: tracemalloc peak (Python/numpy allocations, measured in a separate untimed run) and
the process max RSS (``resource.getrusage``) after ours and after the peer. Ratios are
ours / peer (below 1 = ours is faster or smaller).
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.util import crop

from checks import _hu_core
from checks.hu import DEFAULT_ERROR_EDGES_HU, DEFAULT_TISSUE_THRESHOLDS_HU, hu_metrics
from qa.volume import Volume

CLIP_LO, CLIP_HI = -1024.0, 3071.0


def make_pair(shape: tuple[int, int, int], rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CT (int16 HU), sCT (float32 HU) and body mask (bool): elliptic body, lungs, bones."""
    nz, ny, nx = shape
    y, x = np.ogrid[-1:1:ny * 1j, -1:1:nx * 1j]
    body = (y / 0.8) ** 2 + (x / 0.9) ** 2 <= 1.0
    inner = (y / 0.72) ** 2 + (x / 0.82) ** 2 <= 1.0
    lungs = ((y / 0.45) ** 2 + ((np.abs(x) - 0.4) / 0.28) ** 2) <= 1.0
    bone = (y - 0.55) ** 2 + x**2 <= 0.1**2
    plane = np.full((ny, nx), -1000.0, np.float32)
    plane[body] = -100.0  # fat layer
    plane[inner] = 40.0  # soft tissue
    plane[lungs & inner] = -800.0
    plane[bone] = 900.0
    ct = np.empty(shape, np.int16)
    sct = np.empty(shape, np.float32)
    for z in range(nz):  # plane by plane keeps the generator's temporaries small
        noise = rng.standard_normal((ny, nx), dtype=np.float32)
        ct[z] = np.rint(plane + 15.0 * noise).astype(np.int16)
        err = 10.0 + 40.0 * rng.standard_normal((ny, nx), dtype=np.float32)
        sct[z] = np.where(plane > 500, 0.85 * plane, plane) + err
    mask = np.ascontiguousarray(np.broadcast_to(body, shape))
    return ct, sct, mask


def peer(ct: np.ndarray, sct: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """SynthRAD evaluation on whole arrays (float64), as the challenge code does it."""
    m = np.where(mask > 0, 1.0, 0.0)
    gt = ct.astype(np.float64)
    pred = sct.astype(np.float64)
    mae = float(np.sum(np.abs(gt * m - pred * m)) / m.sum())
    gt_c = np.clip(gt, CLIP_LO, CLIP_HI)
    pred_c = np.clip(pred, CLIP_LO, CLIP_HI)
    psnr = float(peak_signal_noise_ratio(gt_c[m == 1], pred_c[m == 1],
                                         data_range=CLIP_HI - CLIP_LO))
    gt_c = np.where(m == 0, CLIP_LO, gt_c) - CLIP_LO
    pred_c = np.where(m == 0, CLIP_LO, pred_c) - CLIP_LO
    _, ssim_map = structural_similarity(gt_c, pred_c, data_range=CLIP_HI - CLIP_LO,
                                        full=True)
    ssim = float(crop(ssim_map, 3)[crop(m, 3).astype(bool)].mean(dtype=np.float64))
    return {"mae_hu": mae, "psnr_db": psnr, "ssim": ssim}


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Best wall time and best process CPU time over ``repeat`` runs, and the last result.

    CPU time (all threads of this process) is the steadier number on a shared machine.
    """
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu, result


def traced_peak_mib(fn: Callable[[], Any]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[200, 512, 512],
                        metavar=("Z", "Y", "X"))
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (best is kept)")
    parser.add_argument("--workers", type=int, default=1, help="SSIM threads for ours")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    shape = tuple(args.shape)

    ct, sct, mask = make_pair(shape, np.random.default_rng(args.seed))
    n_vox = ct.size
    print(f"shape {shape} ({n_vox / 1e6:.1f} Mvoxels), mask {mask.mean():.0%}, "
          f"inputs {(ct.nbytes + sct.nbytes + mask.nbytes) / 2**20:.0f} MiB "
          f"(int16 CT, float32 sCT, bool mask); repeat {args.repeat}, workers {args.workers}")
    rss_inputs = max_rss_mib()
    spacing = (2.0, 1.0, 1.0)
    v_ct, v_sct, v_mask = Volume(ct, spacing), Volume(sct, spacing), Volume(mask, spacing)
    tissues = _hu_core.normalise_thresholds(DEFAULT_TISSUE_THRESHOLDS_HU)
    edges = np.asarray(DEFAULT_ERROR_EDGES_HU)

    def ours() -> Any:
        return hu_metrics(v_ct, v_sct, v_mask, workers=args.workers)

    def ours_stats() -> Any:
        return _hu_core.voxel_statistics(ct, sct, mask, tissues=tissues, clip_lo=CLIP_LO,
                                         clip_hi=CLIP_HI, edges=edges)

    def ours_ssim() -> Any:
        return _hu_core.masked_ssim(ct, sct, mask, clip_lo=CLIP_LO, clip_hi=CLIP_HI,
                                    crop_voxels=3, workers=args.workers)

    t_ours, c_ours, result = timed(ours, args.repeat)
    t_stats, c_stats, _ = timed(ours_stats, args.repeat)
    t_ssim, c_ssim, _ = timed(ours_ssim, args.repeat)
    peak_ours = traced_peak_mib(ours)
    rss_ours = max_rss_mib()
    t_peer, c_peer, ref = timed(lambda: peer(ct, sct, mask), args.repeat)
    peak_peer = traced_peak_mib(lambda: peer(ct, sct, mask))
    rss_peer = max_rss_mib()

    print(f"{'':28s}{'ours':>12s}{'peer':>12s}{'ours/peer':>11s}")
    print(f"{'wall time total [s]':28s}{t_ours:12.2f}{t_peer:12.2f}{t_ours / t_peer:11.2f}")
    print(f"{'CPU time total [s]':28s}{c_ours:12.2f}{c_peer:12.2f}{c_ours / c_peer:11.2f}")
    print(f"{'  voxel statistics [s]':28s}{t_stats:12.2f}  (CPU {c_stats:.2f})")
    print(f"{'  SSIM (slab-wise) [s]':28s}{t_ssim:12.2f}  (CPU {c_ssim:.2f})")
    print(f"{'tracemalloc peak [MiB]':28s}{peak_ours:12.0f}{peak_peer:12.0f}"
          f"{peak_ours / peak_peer:11.2f}")
    print(f"max RSS [MiB]: after inputs {rss_inputs:.0f}, after ours {rss_ours:.0f}, "
          f"after peer {rss_peer:.0f} (process-wide maximum, so only growth is the peer's)")
    print(f"agreement: MAE {result.mae_hu:.6f} vs {ref['mae_hu']:.6f} HU; "
          f"PSNR {result.psnr_db:.6f} vs {ref['psnr_db']:.6f} dB; "
          f"SSIM {result.ssim:.10f} vs {ref['ssim']:.10f}")
    print(f"ours also gives ME {result.me_hu:.2f} HU, RMSE {result.rmse_hu:.2f} HU, "
          f"LoA [{result.bland_altman.loa_lower_hu:.1f}, "
          f"{result.bland_altman.loa_upper_hu:.1f}] HU, "
          + ", ".join(f"{t.name} MAE {t.mae_hu:.1f}" for t in result.tissues))


if __name__ == "__main__":
    main()
