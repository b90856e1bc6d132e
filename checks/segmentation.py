"""Segmentation agreement for auto-contouring: overlap, surface distances, surface Dice, APL.

Public API: :func:`compare_masks` (one structure, two boolean :class:`qa.volume.Volume`
masks on one grid) returning a frozen :class:`SegmentationResult`, and the engine check
:class:`SegmentationCheck` (``segmentation``: several structures per case, names matched
after normalisation and aliases).

Two surface methods:

``"exact"`` (default)
    Each mask's boundary is a sub-voxel triangle mesh (0.5 level of the mask smoothed by a
    Gaussian of ``SMOOTHING_SIGMA_VOXELS``, less for structures thinner than two voxels,
    with the smoothing's curvature shrinkage put back; marching cubes with the spacing);
    distances are exact point-to-mesh distances from every mesh vertex (weighted by a third
    of its triangles' area) to the other mesh (:mod:`checks._surface_mesh`).
    Converges to the continuous shapes' values as the voxels shrink (tests: spheres,
    shifted and scaled, with a false-positive island, at 1 mm and 2.5 x 0.98 x 0.98 mm).
``"deepmind"``
    Surfels on the voxel-corner grid and distance transforms, reproducing DeepMind's
    ``surface-distance`` 0.1 (Nikolov et al. 2021) to rounding, for comparability with
    published numbers.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Literal

import numba
import numpy as np

from checks._apl import added_path_length
from checks._mask_numba import planes_touched
from checks._surface_deepmind import deepmind_surface_distances
from checks._surface_mesh import SMOOTHING_SIGMA_VOXELS, distances_to_surface, mask_surface
from qa.volume import Volume, require_same_grid, resample_like, same_grid

logger = logging.getLogger(__name__)

__all__ = ["SegmentationResult", "compare_masks", "weighted_percentile", "METHODS",
           "SegmentationCheck"]

METHODS = ("exact", "deepmind")
EmptyFlag = Literal["none", "both", "reference", "predicted"]
#: Voxels kept around the union bounding box when cropping (room for the smoothing).
_CROP_MARGIN_VOXELS = 3
#: Rough peak of the temporaries of one exact surface (``mask_surface``), in bytes per
#: voxel of the cropped box: tracemalloc peaks of 40-46 B per voxel were measured on
#: ellipsoids of 6 Mvoxels (float32 fields, crossed-cell mask, curvature field).
_SURFACE_BYTES_PER_VOXEL = 48
#: The two exact surfaces are built side by side (two threads) only while their estimated
#: temporaries together stay under this; larger masks (a body contour: 31 Mvoxels, about
#: 1.4 GB for the pair) are built one after the other. Same values either way.
CONCURRENT_SURFACES_MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class SegmentationResult:
    """Agreement of a predicted mask with a reference mask (one structure).

    Distances in mm, areas in mm^2, volumes in cm^3, ratios in [0, 1]. Undefined values
    are NaN, never a silent perfect score; ``empty`` says why (see :func:`compare_masks`).
    """

    method: str
    tolerance_mm: float
    empty: EmptyFlag
    dice: float
    jaccard: float
    hd_mm: float
    hd95_mm: float
    hd95_pooled_mm: float
    hd95_ref_to_pred_mm: float
    hd95_pred_to_ref_mm: float
    assd_mm: float
    masd_mm: float
    mean_distance_ref_to_pred_mm: float
    mean_distance_pred_to_ref_mm: float
    surface_dice: float
    surface_overlap_ref: float
    surface_overlap_pred: float
    apl_mm: float
    removed_path_length_mm: float
    reference_contour_length_mm: float
    surface_area_ref_mm2: float
    surface_area_pred_mm2: float
    volume_ref_cm3: float
    volume_pred_cm3: float
    volume_diff_percent: float
    centroid_distance_mm: float
    n_voxels_ref: int
    n_voxels_pred: int

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain dict (JSON-ready once NaN is handled by the caller)."""
        return asdict(self)


def compare_masks(reference: Volume, predicted: Volume, tolerance_mm: float = 2.0, *,
                  method: Literal["exact", "deepmind"] = "exact",
                  percentile: float = 95.0, resample: bool = False,
                  apl_tolerance_mm: float | None = None) -> SegmentationResult:
    """Overlap, surface-distance, surface-Dice and path-length agreement of two masks.

    Parameters
    ----------
    reference, predicted : Volume
        Boolean masks (or 0/1 integers) on the same grid; anisotropic spacing is used as
        given. Any other value raises.
    tolerance_mm : float
        Surface-Dice tolerance tau in mm (a surface element within tau, ``<=``, of the
        other surface counts as agreeing; Nikolov et al. 2021).
    method : {"exact", "deepmind"}
        Surface representation (see the module docstring).
    percentile : float
        Percentile of the robust Hausdorff distance (95 for HD95).
    resample : bool
        When the grids differ: False (default) raises :class:`qa.volume.GridMismatchError`;
        True resamples ``predicted`` onto ``reference``'s grid (nearest neighbour).
    apl_tolerance_mm : float, optional
        Tolerance of the added path length; defaults to ``tolerance_mm``.

    Returns
    -------
    SegmentationResult

    Notes
    -----
    *Overlap*: Dice = 2|R∩P| / (|R| + |P|), Jaccard = |R∩P| / |R∪P| on voxel counts; volumes
    = voxel count x voxel volume; volume difference = 100 (V_pred - V_ref) / V_ref.

    *Distances*: ``d_RP`` = distance from each reference surface element to the predicted
    surface, weighted by the element's area (and ``d_PR`` the other way).
    ``hd_mm`` = max of both; ``hd95_mm`` = max of the two directed area-weighted 95th
    percentiles (DeepMind, MONAI convention); ``hd95_pooled_mm`` = 95th percentile of both
    sets pooled (medpy / seg-metrics convention; it ignores a false-positive island that is
    under 5 % of the total area, the directed one does not); ``assd_mm`` = area-weighted
    mean of both sets pooled; ``masd_mm`` = mean of the two directed means. Percentiles use
    the lower inverted-CDF rule on the area-weighted distribution (the smallest distance
    whose cumulative area fraction reaches the percentile), as ``surface-distance``.

    *Surface Dice* = (area of R within tau of P + area of P within tau of R) /
    (area of R + area of P).

    *Added path length* (Vaassen et al. 2020): see :mod:`checks._apl`; computed on axial
    slices (axis 0) with true path lengths, identical for both methods.

    *Empty masks* (``empty`` flag): both empty -> every overlap and distance metric NaN,
    volumes 0, APL 0; reference empty (or predicted empty) -> Dice = Jaccard = surface
    Dice = 0, distances NaN (the distance to a missing surface is undefined), APL = the
    whole reference contour (predicted empty) or 0 with the predicted contour all removed
    (reference empty), centroid distance NaN, volume difference NaN when the reference is
    empty. NaN is graded ACTION by the engine.

    The work is done on the union bounding box plus a 3-voxel margin (masks touching the
    grid edge are closed there), in two threads (surfaces, distance searches and APL side
    by side; the results do not depend on the threads), or in the calling thread alone when
    its numba thread count is 1 (``numba.set_num_threads(1)``, as the engine's process-pool
    workers set it). The two surfaces of a large box
    (``CONCURRENT_SURFACES_MAX_BYTES``) are built one after the other to bound the memory.

    References
    ----------
    .. [1] Nikolov S. et al., "Clinically applicable segmentation of head and neck anatomy
       for radiotherapy", J Med Internet Res 2021;23(7):e26151, doi:10.2196/26151.
    .. [2] Vaassen F. et al., Phys Imaging Radiat Oncol 2020;13:1-6,
       doi:10.1016/j.phro.2019.12.001.
    .. [3] Taha A.A., Hanbury A., "Metrics for evaluating 3D medical image segmentation",
       BMC Med Imaging 2015;15:29, doi:10.1186/s12880-015-0068-x.

    Examples
    --------
    >>> import numpy as np
    >>> from qa.volume import Volume
    >>> a = np.zeros((20, 20, 20), bool); a[5:15, 5:15, 5:15] = True
    >>> r = compare_masks(Volume(a, (1, 1, 1)), Volume(a.copy(), (1, 1, 1)))
    >>> r.dice, round(r.hd95_mm, 9), r.surface_dice, r.empty
    (1.0, 0.0, 1.0, 'none')
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    if not (isinstance(tolerance_mm, int | float) and math.isfinite(tolerance_mm)
            and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite number >= 0 mm, got {tolerance_mm!r}.")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {percentile!r}.")
    apl_tol = tolerance_mm if apl_tolerance_mm is None else float(apl_tolerance_mm)
    ref = _binary(reference, "reference")
    if not same_grid(reference, predicted):
        if not resample:
            require_same_grid(reference, predicted, ("reference", "predicted"))
        predicted = resample_like(predicted.with_array(_binary(predicted, "predicted")),
                                  reference, method="nearest")
    pred = _binary(predicted, "predicted")
    spacing = reference.spacing
    voxel_cm3 = reference.voxel_volume_mm3 / 1000.0
    box = _union_box(ref, pred)
    if box is None:
        return _empty_result(method, tolerance_mm, "both", 0.0, 0.0, 0.0, 0, 0)
    ref, pred = ref[box], pred[box]  # every mask voxel is inside the box
    n_ref, n_pred = int(np.count_nonzero(ref)), int(np.count_nonzero(pred))
    empty: EmptyFlag = ("reference" if n_ref == 0 else "predicted" if n_pred == 0
                        else "none")
    # two threads (this one and one worker; the compiled kernels release the GIL, results
    # do not depend on the threads): the worker does the added path length, then the
    # reference surface, then one directed search; this thread the predicted surface, the
    # overlap and centroid, then the other search. The two surfaces are staggered so that
    # their marching cubes (which hold the GIL) do not overlap.
    with _helper_thread() as pool:
        apl_job = pool.submit(added_path_length, ref, pred, spacing, apl_tol,
                              sigma_voxels=SMOOTHING_SIGMA_VOXELS if method == "exact"
                              else 0.0)
        if empty != "none":
            apl = apl_job.result()
            return _empty_result(method, tolerance_mm, empty, apl.added_mm, apl.removed_mm,
                                 apl.reference_length_mm, n_ref, n_pred, voxel_cm3)
        d_rp, a_r, d_pr, a_p, inter, centroid_mm = _surface_distances(
            ref, pred, spacing, method, pool, reference)
        apl = apl_job.result()
    pooled_d, pooled_a = np.concatenate([d_rp, d_pr]), np.concatenate([a_r, a_p])
    # one sort of the pooled distances serves the three percentiles
    order = np.argsort(pooled_d)
    sorted_d, sorted_a = pooled_d[order], pooled_a[order]
    from_ref = order < len(d_rp)
    p_rp = _sorted_percentile(sorted_d[from_ref], sorted_a[from_ref], percentile)
    p_pr = _sorted_percentile(sorted_d[~from_ref], sorted_a[~from_ref], percentile)
    mean_rp = float(np.sum(d_rp * a_r) / a_r.sum())
    mean_pr = float(np.sum(d_pr * a_p) / a_p.sum())
    within_r = float(a_r[d_rp <= tolerance_mm].sum())
    within_p = float(a_p[d_pr <= tolerance_mm].sum())
    return SegmentationResult(
        method=method, tolerance_mm=float(tolerance_mm), empty="none",
        dice=2.0 * inter / (n_ref + n_pred), jaccard=inter / (n_ref + n_pred - inter),
        hd_mm=float(max(d_rp.max(), d_pr.max())), hd95_mm=max(p_rp, p_pr),
        hd95_pooled_mm=_sorted_percentile(sorted_d, sorted_a, percentile),
        hd95_ref_to_pred_mm=p_rp, hd95_pred_to_ref_mm=p_pr,
        assd_mm=float(np.sum(pooled_d * pooled_a) / pooled_a.sum()),
        masd_mm=0.5 * (mean_rp + mean_pr),
        mean_distance_ref_to_pred_mm=mean_rp, mean_distance_pred_to_ref_mm=mean_pr,
        surface_dice=(within_r + within_p) / float(a_r.sum() + a_p.sum()),
        surface_overlap_ref=within_r / float(a_r.sum()),
        surface_overlap_pred=within_p / float(a_p.sum()),
        apl_mm=apl.added_mm, removed_path_length_mm=apl.removed_mm,
        reference_contour_length_mm=apl.reference_length_mm,
        surface_area_ref_mm2=float(a_r.sum()), surface_area_pred_mm2=float(a_p.sum()),
        volume_ref_cm3=n_ref * voxel_cm3, volume_pred_cm3=n_pred * voxel_cm3,
        volume_diff_percent=100.0 * (n_pred - n_ref) / n_ref,
        centroid_distance_mm=centroid_mm, n_voxels_ref=n_ref, n_voxels_pred=n_pred,
    )


def weighted_percentile(values: np.ndarray, weights: np.ndarray, percent: float) -> float:
    """Area-weighted percentile, lower inverted-CDF rule (as ``surface-distance``).

    The smallest value whose cumulative weight fraction (values sorted ascending) is
    >= ``percent / 100``; NaN for empty input. The order of tied values does not change the
    result (they are one value), so a plain sort is used.

    Examples
    --------
    >>> weighted_percentile(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 2.0]), 50)
    2.0
    """
    if len(values) == 0:
        return math.nan
    order = np.argsort(values)
    return _sorted_percentile(values[order], weights[order], percent)


def _sorted_percentile(sorted_values: np.ndarray, weights: np.ndarray, percent: float) -> float:
    """:func:`weighted_percentile` of values already sorted ascending (NaN if empty)."""
    if len(sorted_values) == 0:
        return math.nan
    cumulative = np.cumsum(weights) / np.sum(weights)
    idx = int(np.searchsorted(cumulative, percent / 100.0))
    return float(sorted_values[min(idx, len(sorted_values) - 1)])


# -- helpers -----------------------------------------------------------------------------

def _binary(volume: Volume, name: str) -> np.ndarray:
    array = np.asarray(volume.array)
    if array.dtype == bool:
        return array
    if array.dtype.kind in "iuf":
        values = np.unique(array)
        if np.all(np.isin(values, (0, 1))):
            return array.astype(bool)
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if len(values) > 6 else "")
        raise ValueError(
            f"{name} mask is not binary: it holds values {shown}. Pass one structure as a "
            "boolean mask (e.g. labels == 3), or read a label map with its label table.")
    raise ValueError(f"{name} mask has dtype {array.dtype}; expected bool or 0/1 integers.")


def _union_box(ref: np.ndarray, pred: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The union's bounding box plus ``_CROP_MARGIN_VOXELS`` (clipped to the grid), or None
    when both masks are empty."""
    # the z planes touched (one compiled pass over both masks), then one (y, x) projection
    # of that slab only: no full-size union array (the masks can be whole CT grids)
    planes = planes_touched(ref, pred)
    z = np.flatnonzero(planes)
    if len(z) == 0:
        return None
    slab = slice(int(z[0]), int(z[-1]) + 1)
    plane = ref[slab].any(axis=0) | pred[slab].any(axis=0)
    box = []
    for profile in (planes, plane.any(axis=1), plane.any(axis=0)):
        idx = np.flatnonzero(profile)
        box.append(slice(max(int(idx[0]) - _CROP_MARGIN_VOXELS, 0),
                         int(idx[-1]) + 1 + _CROP_MARGIN_VOXELS))
    return box[0], box[1], box[2]


def _surface_distances(ref, pred, spacing, method, pool: Executor, grid: Volume):
    """Directed distances and areas of both surfaces, the overlap voxel count and the
    centroid distance, with ``pool`` (one worker, busy with the path length) as second
    thread."""
    def overlap_and_centroid():
        return int(np.count_nonzero(ref & pred)), _centroid_distance_mm(grid, ref, pred)

    if method == "deepmind":
        inter, centroid_mm = overlap_and_centroid()
        return (*deepmind_surface_distances(ref, pred, spacing), inter, centroid_mm)
    # Large masks: one surface after the other, in this thread, so that their temporaries
    # do not add up.
    if 2 * ref.size * _SURFACE_BYTES_PER_VOXEL <= CONCURRENT_SURFACES_MAX_BYTES:
        job = pool.submit(mask_surface, ref, spacing)  # queued after the path length
        surf_p = mask_surface(pred, spacing)
        inter, centroid_mm = overlap_and_centroid()
        surf_r = job.result()
    else:
        surf_p = mask_surface(pred, spacing)
        surf_r = mask_surface(ref, spacing)
        inter, centroid_mm = overlap_and_centroid()
    job = pool.submit(distances_to_surface, surf_r.points_mm, surf_p)
    d_pr = distances_to_surface(surf_p.points_mm, surf_r)
    d_rp = job.result()
    return d_rp, surf_r.point_areas_mm2, d_pr, surf_p.point_areas_mm2, inter, centroid_mm


class _InlineExecutor(Executor):
    """Runs each submitted call at once in the calling thread (a completed future)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # raised by result(), as from a worker thread
            future.set_exception(exc)
        return future


def _helper_thread() -> Executor:
    """One worker thread beside the caller, or none when this thread's numba thread count
    is capped to 1: the engine's process-pool workers share the cores that way
    (:func:`qa.executors.cap_threads`), and a second thread per worker would only compete
    for them. Same values either way."""
    if numba.get_num_threads() < 2:
        return _InlineExecutor()
    return ThreadPoolExecutor(max_workers=1)


def _centroid_distance_mm(grid: Volume, ref: np.ndarray, pred: np.ndarray) -> float:
    c_ref = _centroid_voxels(ref) * np.asarray(grid.spacing)
    c_pred = _centroid_voxels(pred) * np.asarray(grid.spacing)
    return float(np.linalg.norm(c_ref - c_pred))  # rotation-invariant: direction not needed


def _centroid_voxels(mask: np.ndarray) -> np.ndarray:
    """Centre of mass (voxel indices) of a non-empty boolean mask: per axis, the voxel count
    of each index (a projection) times the index, summed in integers, over the voxel count.
    The same numbers as :func:`scipy.ndimage.center_of_mass` (its float sums of whole
    numbers are exact too), without its three full-size float products."""
    total = np.count_nonzero(mask)
    return np.array([
        np.dot(np.count_nonzero(mask, axis=tuple(b for b in range(3) if b != a)),
               np.arange(mask.shape[a])) / total
        for a in range(3)])


def _empty_result(method, tolerance_mm, empty, apl_mm, removed_mm, ref_len_mm, n_ref, n_pred,
                  voxel_cm3: float = 0.0) -> SegmentationResult:
    nan = math.nan
    zero_if_one = 0.0 if empty in ("reference", "predicted") else nan
    return SegmentationResult(
        method=method, tolerance_mm=float(tolerance_mm), empty=empty,
        dice=zero_if_one, jaccard=zero_if_one, hd_mm=nan, hd95_mm=nan, hd95_pooled_mm=nan,
        hd95_ref_to_pred_mm=nan, hd95_pred_to_ref_mm=nan, assd_mm=nan, masd_mm=nan,
        mean_distance_ref_to_pred_mm=nan, mean_distance_pred_to_ref_mm=nan,
        surface_dice=zero_if_one, surface_overlap_ref=zero_if_one,
        surface_overlap_pred=zero_if_one, apl_mm=apl_mm, removed_path_length_mm=removed_mm,
        reference_contour_length_mm=ref_len_mm, surface_area_ref_mm2=nan,
        surface_area_pred_mm2=nan, volume_ref_cm3=n_ref * voxel_cm3,
        volume_pred_cm3=n_pred * voxel_cm3,
        volume_diff_percent=(100.0 * (n_pred - n_ref) / n_ref) if n_ref else nan,
        centroid_distance_mm=nan, n_voxels_ref=n_ref, n_voxels_pred=n_pred,
    )


from checks._segmentation_check import SegmentationCheck  # noqa: E402  (re-export)
