"""Added path length (Vaassen et al. 2020): contour length to be drawn, slice by slice.

For every axial slice (constant z index), the sub-pixel contours of the reference and the
predicted mask are traced (0.5 level of the slice smoothed in-plane by the same Gaussian as
the 3-D surfaces, :func:`skimage.measure.find_contours`) as polylines in mm. Each polyline
segment is judged at its midpoint: a reference segment farther than the tolerance from every
predicted segment of the same slice must be drawn by the editor (added path length); a
predicted segment farther than the tolerance from the reference must be erased (removed
path length). Lengths are true path lengths in mm, not pixel counts.

Reference: Vaassen F. et al., "Evaluation of measures for assessing time-saving of automatic
organ-at-risk segmentation in radiotherapy", Phys Imaging Radiat Oncol 2020;13:1-6,
doi:10.1016/j.phro.2019.12.001.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = ["PathLengths", "added_path_length"]

#: Slices are separated by this many mm in the search tree so that no neighbour search
#: ever crosses from one slice to another.
_SLICE_SEPARATION_MM = 1.0e7


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
    ref_mid, ref_len = _segments(reference, spacing_yx, sigma_voxels)
    pred_mid, pred_len = _segments(predicted, spacing_yx, sigma_voxels)
    ref_seg = _segment_ends(reference, spacing_yx, sigma_voxels)
    pred_seg = _segment_ends(predicted, spacing_yx, sigma_voxels)
    added = _far_mask(ref_mid, pred_seg, tolerance_mm)
    removed = _far_mask(pred_mid, ref_seg, tolerance_mm)
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


def _contours(mask: np.ndarray, spacing_yx: np.ndarray, sigma_voxels: float):
    """Yield (slice index, (P, 2) polyline in mm) for every contour of every slice."""
    from skimage.measure import find_contours

    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    for z in slices:
        plane = np.pad(mask[z].astype(np.float32), 3)
        if sigma_voxels > 0:
            plane = ndimage.gaussian_filter(plane, sigma_voxels, mode="constant", truncate=3.0)
        for line in find_contours(plane, 0.5):
            yield int(z), (line - 3.0) * spacing_yx


def _segment_ends(mask, spacing_yx, sigma_voxels) -> tuple[np.ndarray, np.ndarray]:
    starts, ends = [], []
    for z, line in _contours(mask, spacing_yx, sigma_voxels):
        zcol = np.full((len(line) - 1, 1), z * _SLICE_SEPARATION_MM)
        starts.append(np.hstack([zcol, line[:-1]]))
        ends.append(np.hstack([zcol, line[1:]]))
    if not starts:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.concatenate(starts), np.concatenate(ends)


def _segments(mask, spacing_yx, sigma_voxels) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints (slice index, y_mm, x_mm) and lengths (mm) of all contour segments."""
    mids, lengths = [], []
    for z, line in _contours(mask, spacing_yx, sigma_voxels):
        step = np.diff(line, axis=0)
        lengths.append(np.hypot(step[:, 0], step[:, 1]))
        mids.append(np.column_stack([np.full(len(step), float(z)),
                                     0.5 * (line[:-1] + line[1:])]))
    if not mids:
        return np.zeros((0, 3)), np.zeros(0)
    return np.concatenate(mids), np.concatenate(lengths)


def _far_mask(mid: np.ndarray, other: tuple[np.ndarray, np.ndarray],
              tolerance_mm: float) -> np.ndarray:
    """True where a midpoint is farther than ``tolerance_mm`` from every other segment of its
    slice (exact point-to-segment distances, candidates proven complete as in
    :func:`checks._surface_mesh.distances_to_surface`)."""
    far = np.ones(len(mid), dtype=bool)
    starts, ends = other
    if len(mid) == 0 or len(starts) == 0:
        return far
    points = mid.copy()
    points[:, 0] *= _SLICE_SEPARATION_MM
    centres = 0.5 * (starts + ends)
    half_mm = 0.5 * float(np.max(np.linalg.norm(ends - starts, axis=1)))
    tree = cKDTree(centres)
    # every segment that can lie within the tolerance has its centre within tol + half
    radius = tolerance_mm + half_mm * (1 + 1e-9) + 1e-9
    todo = np.arange(len(points))
    k = min(8, len(centres))
    while todo.size:
        centre_d, idx = tree.query(points[todo], k=k)
        centre_d = centre_d.reshape(len(todo), k)
        idx = idx.reshape(len(todo), k)
        p = np.repeat(points[todo], k, axis=0)
        a, b = starts[idx.ravel()], ends[idx.ravel()]
        ab = b - a
        length2 = np.einsum("ij,ij->i", ab, ab)
        t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.where(length2 > 0, length2, 1.0),
                    0.0, 1.0)
        diff = p - a - ab * t[:, None]
        best = np.sqrt(np.einsum("ij,ij->i", diff, diff)).reshape(len(todo), k).min(axis=1)
        near = best <= tolerance_mm
        far[todo[near]] = False
        settled = near | (centre_d[:, -1] > radius) | (k >= len(centres))
        todo = todo[~settled]
        k = min(4 * k, len(centres))
    return far
