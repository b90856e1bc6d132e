"""Added path length (Vaassen et al. 2020): contour length to be drawn, slice by slice.

For every axial slice (constant z index), the sub-pixel contours of the reference and the
predicted mask are traced (0.5 level of the slice smoothed in-plane by the same Gaussian as
the 3-D surfaces; the segments :func:`skimage.measure.find_contours` would join into
polylines, found for all slices at once by a compiled marching squares), in mm. Each
segment is judged at its midpoint (exact distances, compiled search): a reference segment
farther than the tolerance from every predicted segment of the same slice must be drawn by
the editor (added path length); a predicted segment farther than the tolerance from the
reference must be erased (removed path length). Lengths are true path lengths in mm, not
pixel counts.

Reference: Vaassen F. et al., "Evaluation of measures for assessing time-saving of automatic
organ-at-risk segmentation in radiotherapy", Phys Imaging Radiat Oncol 2020;13:1-6,
doi:10.1016/j.phro.2019.12.001.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from checks._contour_numba import marching_squares_segments, segments_within
from checks._gaussian_numba import gaussian_filter_zero

__all__ = ["PathLengths", "added_path_length"]



@dataclass(frozen=True)
class PathLengths:
    """Result of :func:`added_path_length` (all lengths in mm)."""

    added_mm: float
    removed_mm: float
    reference_length_mm: float
    predicted_length_mm: float
    added_per_slice_mm: tuple[float, ...]


def added_path_length(reference: np.ndarray, predicted: np.ndarray,
                      spacing_mm: tuple[float, float, float], tolerance_mm: float,
                      *, sigma_voxels: float) -> PathLengths:
    """Added and removed contour length between two (z, y, x) boolean masks.

    Parameters
    ----------
    reference, predicted : (Z, Y, X) bool ndarray
        Same grid; axis 0 is the axial (slice) axis.
    spacing_mm : (3,) floats
        Voxel size (z, y, x) in mm; only y and x enter the lengths.
    tolerance_mm : float
        A contour segment within this in-plane distance (<=) of the other contour is kept.
    sigma_voxels : float
        In-plane Gaussian smoothing before tracing (0: contour through pixel edges'
        midpoints, as :func:`skimage.measure.find_contours` on the raw mask).

    Returns
    -------
    PathLengths
        ``added_per_slice_mm`` has one value per slice of the given arrays. When the
        predicted slice has no contour the whole reference contour of that slice is added;
        when the reference has none, the whole predicted contour is removed.
    """
    spacing_yx = np.asarray(spacing_mm[1:], dtype=float)
    ref_seg = _slice_segments(reference, spacing_yx, sigma_voxels)
    pred_seg = _slice_segments(predicted, spacing_yx, sigma_voxels)
    ref_mid, ref_len = _midpoints(*ref_seg)
    pred_mid, pred_len = _midpoints(*pred_seg)
    added = ~segments_within(ref_mid, *pred_seg, tolerance_mm)
    removed = ~segments_within(pred_mid, *ref_seg, tolerance_mm)
    per_slice = np.zeros(reference.shape[0])
    if len(ref_mid):
        np.add.at(per_slice, ref_mid[:, 0].astype(int), ref_len * added)
    return PathLengths(
        added_mm=float(np.sum(ref_len[added])),
        removed_mm=float(np.sum(pred_len[removed])),
        reference_length_mm=float(ref_len.sum()),
        predicted_length_mm=float(pred_len.sum()),
        added_per_slice_mm=tuple(float(v) for v in per_slice),
    )


def _slice_segments(mask: np.ndarray, spacing_yx: np.ndarray, sigma_voxels: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every contour segment of every slice: (S,) slice index, (S, 2) start and end (y, x) mm.

    The segments :func:`skimage.measure.find_contours` joins into polylines (0.5 level of each
    slice, padded by 3 pixels, smoothed in-plane when ``sigma_voxels`` > 0), degenerate
    zero-length ones left out as it does; found for all slices at once by
    :func:`checks._contour_numba.marching_squares_segments`.
    """
    stack = np.pad(mask.astype(np.float32), ((0, 0), (3, 3), (3, 3)))
    if sigma_voxels > 0:  # sigma 0 along z: each slice smoothed on its own
        stack = gaussian_filter_zero(stack, (0.0, sigma_voxels, sigma_voxels), 3.0)
    z, start, end = marching_squares_segments(stack, 0.5)
    keep = (start[:, 0] != end[:, 0]) | (start[:, 1] != end[:, 1])  # not np.any(axis=1): slow
    return z[keep], (start[keep] - 3.0) * spacing_yx, (end[keep] - 3.0) * spacing_yx


def _midpoints(z: np.ndarray, start: np.ndarray, end: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints (slice index, y_mm, x_mm) and lengths (mm) of the segments."""
    step = end - start
    mids = np.column_stack([z.astype(float), 0.5 * (start + end)])
    return mids, np.hypot(step[:, 0], step[:, 1])
