"""Geometry of :mod:`qa.io.rtstruct`: contours grouped by plane, the slab of each plane, and
their rasterisation on the reference grid.

The conventions (slabs centred on the contour planes, gaps, single planes, even-odd
filling of voxel centres) are stated in :mod:`qa.io.rtstruct`'s docstring; this module
implements them. Private: the names keep their leading underscore.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from qa.volume import Volume

#: Contours of one slice whose planes differ by less than this are the same plane (mm).
_SAME_PLANE_MM = 0.05


@dataclass
class _Roi:
    number: int
    name: str
    frame_uid: str = ""
    interpreted_type: str = ""
    contours: list[tuple[str, np.ndarray]] = field(default_factory=list)

    @property
    def point_only(self) -> bool:
        return bool(self.contours) and all(t != "CLOSED_PLANAR" for t, _ in self.contours)


@dataclass
class _Plane:
    """The contours of one ROI in one plane parallel to the reference slices."""

    u_mm: float  # position along the reference slice axis, from slice 0's centre
    z_mm: float  # mean patient z (LPS) of its points, for messages
    contours: list[np.ndarray] = field(default_factory=list)  # (N, 2) fractional (row, col)


def _planes(roi: _Roi, reference: Volume) -> tuple[list[_Plane], list[str]]:
    """The ROI's CLOSED_PLANAR contours grouped by plane (ascending ``u_mm``), and notes on
    the contours left out (other types, malformed, not parallel to the reference slices)."""
    step_mm = reference.spacing[0]
    notes: list[str] = []
    other_kinds = sorted({kind for kind, _ in roi.contours if kind != "CLOSED_PLANAR"})
    if other_kinds:
        notes.append(f"contours of type {', '.join(other_kinds)} ignored (only CLOSED_PLANAR "
                     f"is rasterised)")
    found: list[tuple[float, float, np.ndarray]] = []
    for number, (kind, values) in enumerate(roi.contours, start=1):
        if kind != "CLOSED_PLANAR":
            continue
        if values.size < 9 or values.size % 3:
            notes.append(f"contour {number}: fewer than 3 points or malformed ContourData; "
                         f"skipped")
            continue
        points_lps = values.reshape(-1, 3)
        index = reference.world_to_index(points_lps[:, ::-1])
        if np.ptp(index[:, 0]) * step_mm > max(2 * _SAME_PLANE_MM, 1e-3 * step_mm):
            notes.append(f"contour {number} (plane z = {points_lps[:, 2].mean():.2f} mm) is "
                         f"not parallel to the reference slices; skipped")
            continue
        found.append((float(index[:, 0].mean() * step_mm), float(points_lps[:, 2].mean()),
                      index[:, 1:]))
    planes: list[_Plane] = []
    for u_mm, z_mm, rows_cols in sorted(found, key=lambda item: item[0]):
        if not planes or u_mm - planes[-1].u_mm > _SAME_PLANE_MM:
            planes.append(_Plane(u_mm, z_mm))
        planes[-1].contours.append(rows_cols)
    return planes, notes


def _typical_spacing_mm(positions_mm: Sequence[float]) -> float | None:
    """Median distance between consecutive distinct planes, or None with fewer than two."""
    u = np.sort(np.asarray(positions_mm, float))
    steps = np.diff(u)
    steps = steps[steps > _SAME_PLANE_MM]  # planes of different ROIs on one image slice
    return float(np.median(steps)) if steps.size else None


def _slabs(planes: list[_Plane], fallback_mm: float,
           tolerance_mm: float | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Lower and upper half-thickness (mm) of the slab each plane represents, and gap notes.

    Between two planes whose distance is no gap, the boundary is their midpoint (local
    spacing). A distance more than 1.5 x the larger neighbouring distance is a gap (missing
    contours); an ROI with only two planes compares with ``fallback_mm`` (the structure
    set's typical plane spacing). At a gap or at the ends a plane extends by half its own
    spacing: the distance to its neighbour on the other side, else ``fallback_mm``. No
    slab reaches past the midpoint to its neighbour; ``tolerance_mm`` caps all of them.
    """
    u = np.array([p.u_mm for p in planes])
    d = np.diff(u)
    gap = np.zeros(d.size, bool)
    for i in range(d.size):
        neighbours = d[[j for j in (i - 1, i + 1) if 0 <= j < d.size]]
        reference_mm = float(neighbours.max()) if neighbours.size else fallback_mm
        gap[i] = d[i] > 1.5 * reference_mm + 1e-6
    below = np.empty(u.size)
    above = np.empty(u.size)
    for i in range(u.size):
        left = d[i - 1] if i > 0 and not gap[i - 1] else None
        right = d[i] if i < d.size and not gap[i] else None
        own_mm = right if right is not None else left if left is not None else fallback_mm
        below[i] = 0.5 * (left if left is not None else min(own_mm, d[i - 1] if i else own_mm))
        above[i] = 0.5 * (right if right is not None else
                          min(own_mm, d[i] if i < d.size else own_mm))
    if tolerance_mm is not None:
        below, above = np.minimum(below, tolerance_mm), np.minimum(above, tolerance_mm)
    notes = [f"no contour between the planes z = {planes[i].z_mm:.2f} mm and z = "
             f"{planes[i + 1].z_mm:.2f} mm ({d[i]:.2f} mm apart, more than 1.5 x the "
             f"neighbouring plane spacing): missing contours? Each plane fills only its own "
             f"slab; the {d[i] - above[i] - below[i + 1]:.2f} mm between them is left empty"
             for i in np.flatnonzero(gap)]
    return below, above, notes


def _rasterise(planes: list[_Plane], notes: list[str], reference: Volume,
               tolerance_mm: float | None,
               spacing_mm: float | None) -> tuple[np.ndarray, list[str], int, float]:
    """Mask, warnings, number of contours used and largest plane offset (mm).

    ``spacing_mm`` is the structure set's typical contour plane spacing (None when it has
    fewer than two planes: the reference slice spacing is used instead).
    """
    from skimage.draw import polygon

    n_slices, n_rows, n_cols = reference.shape
    step_mm = reference.spacing[0]
    notes = list(notes)
    mask = np.zeros(reference.shape, dtype=bool)
    if not planes:
        notes.append("no contour was rasterised on the reference grid: the mask is empty")
        return mask, notes, 0, 0.0
    below, above, gap_notes = _slabs(planes, spacing_mm or step_mm, tolerance_mm)
    notes.extend(gap_notes)
    # slabs are half-open, [u - below, u + above): a slice centre on the boundary between
    # two slabs belongs to the upper one only; slabs are ordered and do not overlap
    u = np.array([p.u_mm for p in planes])
    centres_mm = step_mm * np.arange(n_slices)
    nearest = np.clip(np.searchsorted(u - below - 1e-6, centres_mm, side="right") - 1, 0, None)
    offset_mm = centres_mm - u[nearest]
    inside = ((offset_mm >= -below[nearest] - 1e-6)
              & ((offset_mm < above[nearest] - 1e-6) | (np.abs(offset_mm) <= 1e-6)))
    slices_of: dict[int, list[int]] = {}
    for slice_k in np.flatnonzero(inside):
        slices_of.setdefault(int(nearest[slice_k]), []).append(int(slice_k))
    used, clipped = 0, False
    for i, slice_ks in slices_of.items():
        plane_mask = np.zeros((n_rows, n_cols), dtype=bool)
        for rows_cols in planes[i].contours:
            rr, cc = polygon(rows_cols[:, 0], rows_cols[:, 1], shape=(n_rows, n_cols))
            plane_mask[rr, cc] = ~plane_mask[rr, cc]
            clipped |= bool(np.any(rows_cols < -0.5)
                            or np.any(rows_cols[:, 0] > n_rows - 0.5)
                            or np.any(rows_cols[:, 1] > n_cols - 0.5))
        mask[slice_ks] = plane_mask
        used += len(planes[i].contours)
    thinner: list[float] = []
    for i, plane in enumerate(planes):
        if i in slices_of:
            continue
        slice_k = int(np.rint(plane.u_mm / step_mm))
        where = f"contour plane (plane z = {plane.z_mm:.2f} mm)"
        if not 0 <= slice_k < n_slices:
            notes.append(f"{where} lies outside the reference grid's slices; skipped")
        elif tolerance_mm is not None and tolerance_mm < step_mm / 2:
            notes.append(f"{where} lies {abs(plane.u_mm - slice_k * step_mm):.2f} mm from the "
                         f"nearest reference slice centre (tolerance {tolerance_mm:.2f} mm), "
                         f"between slices; skipped")
        else:  # its slab is thinner than a slice and holds no slice centre
            thinner.append(plane.z_mm)
    if thinner:
        span = (f"z = {thinner[0]:.2f} mm" if len(thinner) == 1 else
                f"between z = {min(thinner):.2f} and {max(thinner):.2f} mm")
        notes.append(f"{len(thinner)} contour plane(s) ({span}) not used: the reference slices "
                     f"({step_mm:g} mm) "
                     f"are thicker than the contour spacing, and each slice took only the "
                     f"plane nearest the slice centre")
    if clipped:
        notes.append("contours reach outside the reference grid in-plane; the mask is "
                     "clipped to the grid")
    if used == 0:
        notes.append("no contour was rasterised on the reference grid: the mask is empty")
    max_offset_mm = float(np.abs(offset_mm[inside]).max()) if inside.any() else 0.0
    return mask, notes, used, max_offset_mm
