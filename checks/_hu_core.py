"""Private core of :mod:`checks.hu`: option checks, grid alignment, slab-wise statistics, SSIM.

:func:`aligned_arrays` brings ct, sct and the mask onto ct's grid (or refuses); the
statistics and SSIM then work on plain numpy arrays. The public wrapper
(:func:`checks.hu.hu_metrics`) builds the result records.

Memory: the volumes are walked in slabs of whole axial planes (about ``_STAT_SLAB_VOXELS``
voxels for the voxel statistics, ``_SSIM_SLAB_VOXELS`` for SSIM), so the float64 temporaries
scale with the slab, not with the volume.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from qa.jsonsafe import json_safe
from qa.volume import GridMismatchError, Volume, require_same_grid, resample_like, same_grid

logger = logging.getLogger(__name__)

#: Voxels per slab for the voxel statistics (float64 temporaries of a few times this size).
_STAT_SLAB_VOXELS = 4_000_000
#: Voxels per slab for SSIM (scikit-image keeps ~15 float64 arrays of this size alive).
_SSIM_SLAB_VOXELS = 8_000_000
#: Side of scikit-image's default uniform SSIM window (``win_size=7``).
SSIM_WINDOW_VOXELS = 7


class HUInputError(ValueError):
    """A ``ValueError`` about one input of ``hu_metrics``: ``input_name`` is ct, sct or mask."""

    def __init__(self, message: str, input_name: str | None = None) -> None:
        super().__init__(message)
        self.input_name = input_name


# -- option normalisation ------------------------------------------------------------------

def normalise_thresholds(
    thresholds_hu: Mapping[str, Sequence[float | None]],
) -> tuple[tuple[str, float, float], ...]:
    """Validate tissue classes and return ``((name, lower_hu, upper_hu), ...)``.

    ``None`` as a bound means unbounded (``-inf`` for lower, ``+inf`` for upper). Classes
    must be given in increasing HU order, each ``lower < upper``, and must not overlap
    (``upper`` of one ``<=`` ``lower`` of the next); gaps are allowed.
    """
    if not isinstance(thresholds_hu, Mapping):
        raise ValueError("tissue_thresholds_hu must be a mapping name -> (lower_hu, upper_hu),"
                         f" got {type(thresholds_hu).__name__}.")
    classes: list[tuple[str, float, float]] = []
    for name, bounds in thresholds_hu.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tissue_thresholds_hu: class names must be non-empty strings, "
                             f"got {name!r}.")
        try:
            lower_raw, upper_raw = bounds
            lower = -math.inf if lower_raw is None else float(lower_raw)
            upper = math.inf if upper_raw is None else float(upper_raw)
        except (TypeError, ValueError):
            raise ValueError(f"tissue_thresholds_hu[{name!r}] must be [lower_hu, upper_hu] "
                             f"(null for unbounded), got {bounds!r}.") from None
        if math.isnan(lower) or math.isnan(upper) or not lower < upper:
            raise ValueError(f"tissue_thresholds_hu[{name!r}] must satisfy lower < upper (HU, "
                             f"half-open [lower, upper)), got [{lower}, {upper}).")
        if classes and lower < classes[-1][2]:
            prev = classes[-1]
            raise ValueError(
                f"tissue classes {prev[0]!r} [{prev[1]}, {prev[2]}) and {name!r} "
                f"[{lower}, {upper}) overlap or are out of order; list the classes in "
                "increasing HU order with each upper bound <= the next lower bound."
            )
        classes.append((name, lower, upper))
    return tuple(classes)


def normalise_clip_range(clip_range_hu: Sequence[float]) -> tuple[float, float]:
    """Validate ``(lower_hu, upper_hu)``: two finite numbers with lower < upper."""
    try:
        lo, hi = (float(v) for v in clip_range_hu)
    except (TypeError, ValueError):
        raise ValueError(f"clip_range_hu must be (lower_hu, upper_hu), "
                         f"got {clip_range_hu!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"clip_range_hu must be finite with lower < upper, got ({lo}, {hi}).")
    return lo, hi


def normalise_edges(edges_hu: Sequence[float]) -> np.ndarray:
    """Validate histogram edges: 1-D, at least 2, finite, strictly increasing."""
    edges = np.asarray(edges_hu, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) \
            or not np.all(np.diff(edges) > 0):
        raise ValueError(
            "histogram_edges_hu must be at least 2 finite, strictly increasing values (HU), "
            f"got {np.asarray(edges_hu).tolist()!r}."
        )
    return edges


# -- voxel statistics ----------------------------------------------------------------------

@dataclass
class VoxelStats:
    """Sums over the evaluated voxels (mutable accumulator, private)."""

    n: int
    sum_abs: float
    sum_err: float
    sum_sq: float
    sum_sq_clipped: float
    mean_err: float  # running mean (Chan et al. merge) for the variance
    m2_err: float  # running sum of squared deviations from the mean
    hist_counts: np.ndarray
    underflow: int
    overflow: int
    tissue_n: np.ndarray
    tissue_sum_abs: np.ndarray
    tissue_sum_err: np.ndarray
    nonfinite_ct: int
    nonfinite_sct: int


def voxel_statistics(
    ct: np.ndarray,
    sct: np.ndarray,
    mask: np.ndarray | None,
    *,
    tissues: tuple[tuple[str, float, float], ...],
    clip_lo: float,
    clip_hi: float,
    edges: np.ndarray,
) -> VoxelStats:
    """Accumulate every voxelwise sum in one pass over axial slabs (float64).

    The variance uses the pairwise merge of Chan, Golub & LeVeque (1983) so that a
    constant error gives an SD of exactly 0.
    """
    n_bins = edges.size - 1
    k = len(tissues)
    acc = VoxelStats(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, np.zeros(n_bins, np.int64), 0, 0,
                     np.zeros(k, np.int64), np.zeros(k), np.zeros(k), 0, 0)
    uniform = bool(np.array_equal(np.linspace(edges[0], edges[-1], n_bins + 1), edges))
    check_ct = not np.issubdtype(ct.dtype, np.integer)
    check_sct = not np.issubdtype(sct.dtype, np.integer)
    for z0, z1 in _slabs(ct.shape, _STAT_SLAB_VOXELS):
        if mask is None:
            c = ct[z0:z1].astype(np.float64).ravel()
            s = sct[z0:z1].astype(np.float64).ravel()
        else:
            m = mask[z0:z1]
            c = ct[z0:z1][m].astype(np.float64, copy=False)
            s = sct[z0:z1][m].astype(np.float64, copy=False)
        n = c.size
        if n == 0:
            continue
        if check_ct:
            acc.nonfinite_ct += n - int(np.count_nonzero(np.isfinite(c)))
        if check_sct:
            acc.nonfinite_sct += n - int(np.count_nonzero(np.isfinite(s)))
        err = s - c
        abs_err = np.abs(err)
        sum_err = float(err.sum())
        mean_b = sum_err / n
        dev = err - mean_b
        m2_b = float(np.dot(dev, dev))
        del dev
        n_a = acc.n
        n_ab = n_a + n
        delta = mean_b - acc.mean_err
        acc.mean_err += delta * n / n_ab
        acc.m2_err += m2_b + delta * delta * n_a * n / n_ab
        acc.n = n_ab
        acc.sum_abs += float(abs_err.sum())
        acc.sum_err += sum_err
        acc.sum_sq += float(np.dot(err, err))
        counts, under, over = _histogram(err, edges, uniform)
        acc.hist_counts += counts
        acc.underflow += under
        acc.overflow += over
        for i, (_, lower, upper) in enumerate(tissues):
            sel = (c >= lower) & (c < upper)
            acc.tissue_n[i] += int(np.count_nonzero(sel))
            acc.tissue_sum_abs[i] += float(abs_err[sel].sum())
            acc.tissue_sum_err[i] += float(err[sel].sum())
        del abs_err, err
        np.clip(c, clip_lo, clip_hi, out=c)
        np.clip(s, clip_lo, clip_hi, out=s)
        s -= c
        acc.sum_sq_clipped += float(np.dot(s, s))
    return acc


# -- SSIM ----------------------------------------------------------------------------------

def masked_ssim(
    ct: np.ndarray,
    sct: np.ndarray,
    mask: np.ndarray | None,
    *,
    clip_lo: float,
    clip_hi: float,
    crop_voxels: int,
    workers: int = 1,
) -> tuple[float, str | None]:
    """SynthRAD masked SSIM, computed slab by slab; returns ``(ssim, warning or None)``.

    Procedure (SynthRAD2023 ``ImageMetrics.ssim``): clip both images to
    ``[clip_lo, clip_hi]``, set voxels outside the mask to ``clip_lo``, subtract
    ``clip_lo``, run ``skimage.metrics.structural_similarity(..., data_range=clip_hi -
    clip_lo, full=True)`` in 3-D (uniform 7-voxel window, sample covariance, K1 = 0.01,
    K2 = 0.03), and average the SSIM map over the mask voxels left after removing
    ``crop_voxels`` voxels at each edge of every axis.

    The map is computed on overlapping axial slabs with a halo of 3 planes (the window
    radius), so each kept plane sees exactly the neighbours it has in the whole volume and
    the true volume edges keep scikit-image's reflect boundary; the result equals the
    whole-volume computation up to floating-point rounding, with bounded memory.
    """
    shape = ct.shape
    if any(n < SSIM_WINDOW_VOXELS for n in shape):
        return math.nan, (f"SSIM not computed (NaN): volume shape {shape} is smaller than the "
                          f"{SSIM_WINDOW_VOXELS}-voxel SSIM window along at least one axis.")
    if any(n <= 2 * crop_voxels for n in shape):
        return math.nan, (f"SSIM not computed (NaN): cropping {crop_voxels} voxels at each "
                          f"edge of a {shape} volume leaves no voxel.")
    z_lo, z_hi = crop_voxels, shape[0] - crop_voxels
    half = SSIM_WINDOW_VOXELS // 2
    plane = shape[1] * shape[2]
    span = z_hi - z_lo
    n_jobs = -(-span // max(1, _SSIM_SLAB_VOXELS // plane - 2 * half))  # ceil division
    bounds = [z_lo + span * i // n_jobs for i in range(n_jobs + 1)]  # balanced cores
    jobs = list(zip(bounds[:-1], bounds[1:], strict=True))

    def one(core: tuple[int, int]) -> tuple[float, int]:
        return _ssim_slab(ct, sct, mask, core, clip_lo=clip_lo, clip_hi=clip_hi,
                          crop_voxels=crop_voxels)

    if workers > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(one, jobs))
    else:
        parts = [one(job) for job in jobs]
    total = math.fsum(p[0] for p in parts)
    count = sum(p[1] for p in parts)
    if count == 0:
        return math.nan, (f"SSIM not computed (NaN): no mask voxel lies inside the volume "
                          f"after cropping {crop_voxels} voxels at each edge.")
    return total / count, None


def _ssim_slab(
    ct: np.ndarray,
    sct: np.ndarray,
    mask: np.ndarray | None,
    core: tuple[int, int],
    *,
    clip_lo: float,
    clip_hi: float,
    crop_voxels: int,
) -> tuple[float, int]:
    """Sum and count of the SSIM map over the masked, cropped planes ``core[0]:core[1]``."""
    from skimage.metrics import structural_similarity

    a, b = core
    depth, ny, nx = ct.shape
    c = crop_voxels
    kept_mask = None if mask is None else mask[a:b, c:ny - c, c:nx - c]
    if kept_mask is not None and not kept_mask.any():
        return 0.0, 0  # nothing of the mask in these planes: skip the filtering
    half = SSIM_WINDOW_VOXELS // 2
    s0, s1 = max(0, a - half), min(depth, b + half)
    if s1 - s0 < SSIM_WINDOW_VOXELS:  # tiny last slab: widen it inside the volume
        s0 = max(0, s1 - SSIM_WINDOW_VOXELS)
        s1 = min(depth, s0 + SSIM_WINDOW_VOXELS)
    m = None if mask is None else mask[s0:s1]
    im_ct = _clip_fill_shift(ct[s0:s1], m, clip_lo, clip_hi)
    im_sct = _clip_fill_shift(sct[s0:s1], m, clip_lo, clip_hi)
    _, ssim_map = structural_similarity(im_ct, im_sct, data_range=clip_hi - clip_lo,
                                        full=True)
    del im_ct, im_sct
    kept = ssim_map[a - s0:b - s0, c:ny - c, c:nx - c]
    if kept_mask is None:
        return float(kept.sum(dtype=np.float64)), int(kept.size)
    return float(kept[kept_mask].sum(dtype=np.float64)), int(np.count_nonzero(kept_mask))


def _clip_fill_shift(
    image: np.ndarray, mask: np.ndarray | None, clip_lo: float, clip_hi: float
) -> np.ndarray:
    """float64 copy clipped to the range, ``clip_lo`` outside the mask, shifted by -clip_lo."""
    out = image.astype(np.float64)
    np.clip(out, clip_lo, clip_hi, out=out)
    if mask is not None:
        np.copyto(out, clip_lo, where=~mask)
    out -= clip_lo
    return out


def _histogram(err: np.ndarray, edges: np.ndarray, uniform: bool) -> tuple[np.ndarray, int, int]:
    """Counts on half-open bins ``[e_i, e_i+1)``, plus underflow and overflow counts.

    Uniform edges (exactly ``linspace``) use numpy's fast uniform-bin path, which corrects
    its arithmetic bin index against the edges; numpy closes its last bin, so values equal
    to the last edge are moved to the overflow. Other edges use ``searchsorted``.
    """
    n_bins = edges.size - 1
    under = int(np.count_nonzero(err < edges[0]))
    over = int(np.count_nonzero(err >= edges[-1]))
    if uniform:
        counts, _ = np.histogram(err, bins=n_bins, range=(edges[0], edges[-1]))
        counts[-1] -= int(np.count_nonzero(err == edges[-1]))
    else:
        idx = np.searchsorted(edges, err, side="right") - 1
        counts = np.bincount(idx[(idx >= 0) & (idx < n_bins)], minlength=n_bins)
    return counts.astype(np.int64, copy=False), under, over


def _slabs(shape: tuple[int, ...], voxels: int) -> Iterator[tuple[int, int]]:
    """``(z0, z1)`` ranges of whole axial planes, about ``voxels`` voxels each."""
    planes = max(1, voxels // max(1, shape[1] * shape[2]))
    for z0 in range(0, shape[0], planes):
        yield z0, min(z0 + planes, shape[0])


# -- input alignment and JSON -------------------------------------------------------------

def aligned_arrays(
    ct: Volume, sct: Volume, mask: Volume | None, *, resample: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    """Arrays of ct, sct and the boolean mask on ct's grid, validated; plus warnings."""
    for name, vol in (("ct", ct), ("sct", sct), ("mask", mask)):
        if not isinstance(vol, Volume) and not (name == "mask" and vol is None):
            raise TypeError(f"{name} must be a qa.volume.Volume, got {type(vol).__name__}.")
        if name != "mask" and (not np.issubdtype(vol.array.dtype, np.number)
                               or vol.array.dtype.kind == "c"):
            raise HUInputError(f"{name} must hold real HU numbers, got dtype "
                               f"{vol.array.dtype}.", name)
    notes: list[str] = []
    mask_arr = None if mask is None else boolean_mask(mask.array)
    if not resample:
        for name, vol in (("sct", sct), ("mask", mask)):
            try:
                if vol is not None:
                    require_same_grid(ct, vol, ("ct", name))
            except GridMismatchError as exc:
                exc.input_name = name  # lets the check name the slot
                raise
        sct_arr = sct.array
    else:
        if mask is not None and not same_grid(mask, ct):
            logger.info("resampling mask onto the ct grid (nearest)")
            mask_arr = resample_like(mask.with_array(mask_arr), ct, method="nearest",
                                     fill_value=False).array
        sct_arr = sct.array
        if not same_grid(sct, ct):
            logger.info("resampling sct onto the ct grid (trilinear)")
            sct_arr = resample_like(sct, ct, method="linear", fill_value=math.nan).array
            covered = resample_like(sct.with_array(np.ones(sct.shape, np.uint8)), ct,
                                    method="nearest", fill_value=0).array.astype(bool)
            wanted = np.ones(ct.shape, bool) if mask_arr is None else mask_arr
            outside = int(np.count_nonzero(wanted & ~covered))
            if outside:
                mask_arr = wanted & covered
                notes.append(f"{outside} voxel(s) of the mask lie outside the sCT grid and "
                             "were excluded.")
                if not mask_arr.any():
                    raise HUInputError("no mask voxel lies inside the sCT grid after "
                                       "resampling: check that sct and ct overlap (origins).",
                                       "sct")
    if mask_arr is not None and not mask_arr.any():
        raise HUInputError("mask 'mask' is empty: no voxel to evaluate; check that the mask "
                           "belongs to this case and covers the body.", "mask")
    return ct.array, sct_arr, mask_arr, notes


def boolean_mask(array: np.ndarray) -> np.ndarray:
    """The mask as bool; only bool or 0/1 numbers are accepted."""
    if array.dtype == bool:
        return array
    if not np.issubdtype(array.dtype, np.number):
        raise HUInputError(f"mask 'mask' must be boolean-like (bool or 0/1), got dtype "
                           f"{array.dtype}.", "mask")
    other = (array != 0) & (array != 1)
    count = int(np.count_nonzero(other))
    if count:
        example = array[other].flat[0].item()
        raise HUInputError(
            f"mask 'mask' must be boolean-like (bool or only 0/1 values), got {count} "
            f"voxel(s) with other values (e.g. {example!r}); binarise it (e.g. label == k) "
            "before the check.", "mask")
    return array.astype(bool)


def json_clean(value: Any) -> Any:
    """Tuples to lists, numpy scalars to Python, non-finite floats to None."""
    return json_safe(value)
