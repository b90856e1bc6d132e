"""Sub-voxel surfaces of binary masks and exact point-to-surface distances (default method).

A mask's boundary is estimated as the 0.5 iso-surface of the mask lightly smoothed by a
Gaussian (sigma in voxels per axis), triangulated by marching cubes (Lewiner et al. 2003,
doi:10.1080/10867651.2003.10487582) with the voxel spacing, so every triangle carries its
area in mm^2. Distances from one surface to the other are exact Euclidean distances from
each mesh vertex to the nearest point of the other triangle mesh (closest point on a
triangle: Ericson, *Real-Time Collision Detection*, 2005, sec. 5.1.5), found through a
uniform grid of the triangles searched ring by ring until the nearest triangle is proven
examined (:mod:`checks._surface_numba`). Each vertex stands for a third of the area of its
triangles (vertex quadrature).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from checks._gaussian_numba import gaussian_filter_zero
from checks._mesh_numba import curvature_and_normals, mesh_areas, mixed_cell_mask
from checks._surface_numba import point_mesh_distances

logger = logging.getLogger(__name__)

__all__ = ["TriangleSurface", "mask_surface", "distances_to_surface"]

#: Gaussian sigma (in voxels) applied before the 0.5 iso-surface is extracted.
SMOOTHING_SIGMA_VOXELS = 1.0
#: Zero voxels around the mask's bounding box for the curvature field. The smoothed mask
#: stays under 0.5 outside the box (one voxel out it is at most (1 - g(0)) / 2 < 0.5 for a
#: normalised Gaussian g), so the surface's cells have corners at most one voxel outside;
#: the curvature stencils reach three voxels further and must not touch the array's edge.
_PAD_VOXELS = 4
#: Of which kept for the field that is triangulated (its 0.5 level is within one voxel).
_MESH_PAD_VOXELS = 2


@dataclass(frozen=True)
class TriangleSurface:
    """A triangulated surface in mm, in the (z, y, x) frame of the mask grid with the origin
    at the centre of voxel [0, 0, 0] of that grid.

    ``triangles_mm`` (M, 3, 3) vertex coordinates; ``centroids_mm`` (M, 3); ``points_mm``
    (V, 3) the mesh vertices and ``point_areas_mm2`` (V,) the area each stands for (a third
    of the area of every triangle it belongs to: the quadrature of surface integrals).
    """

    triangles_mm: np.ndarray
    points_mm: np.ndarray
    point_areas_mm2: np.ndarray

    @property
    def centroids_mm(self) -> np.ndarray:
        return self.triangles_mm.mean(axis=1)

    @property
    def area_mm2(self) -> float:
        return float(self.point_areas_mm2.sum())

    @property
    def n_triangles(self) -> int:
        return int(self.triangles_mm.shape[0])


def mask_surface(mask: np.ndarray, spacing_mm: tuple[float, float, float],
                 *, sigma_voxels: float = SMOOTHING_SIGMA_VOXELS) -> TriangleSurface:
    """Triangulated sub-voxel boundary of a boolean (z, y, x) ``mask``.

    Parameters
    ----------
    mask : (Z, Y, X) bool ndarray
        Non-empty mask (the caller handles empty masks).
    spacing_mm : (3,) floats
        Voxel size (z, y, x) in mm.
    sigma_voxels : float
        Gaussian smoothing applied to the 0/1 mask before extracting its 0.5 level, in
        voxels along each axis. 0 gives the classic voxelised (staircase-cut) surface.

    Returns
    -------
    TriangleSurface
        Coordinates in mm with the centre of voxel [0, 0, 0] at the origin.
    """
    from skimage.measure import marching_cubes  # lazy: import cost only when used

    pad = _PAD_VOXELS
    # the mask's own bounding box plus zeros: "constant" filtering gives the same field values
    # as on any larger zero-padded array, and every stencil used below stays inside it
    occupied = [np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))
                for a in range(3)]
    lo = [int(idx[0]) for idx in occupied]
    hi = [int(idx[-1]) + 1 for idx in occupied]
    # float32: marching cubes works on float32 fields; the smoothing is done in float32 too.
    # "constant" filtering of a zero-padded box gives the values of any larger one.
    raw = np.pad(mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32), pad)
    inner = pad - _MESH_PAD_VOXELS
    field, sigma_voxels = _smoothed(raw[inner:-inner, inner:-inner, inner:-inner],
                                    sigma_voxels)
    # only the cells the 0.5 level crosses (same triangles, a third of the time), in voxel
    # units: a vertex lies on a cell edge, two of its coordinates are whole numbers, so the
    # curvature below interpolates between two nodes instead of eight. Degenerate triangles
    # (two corners at one point) have zero area and are dropped by mesh_areas.
    verts, faces, _normals, _values = marching_cubes(field, level=0.5, allow_degenerate=True,
                                                     mask=mixed_cell_mask(field, 0.5))
    coords = verts.astype(np.float64)
    spacing = tuple(float(s) for s in spacing_mm)
    verts = coords * np.asarray(spacing)
    if np.any(np.asarray(sigma_voxels) > 0):
        # curvature and normals from a smoother copy: the staircase would make them noisy
        smoother = gaussian_filter_zero(raw, 2.0 * np.asarray(sigma_voxels, float), 3.0)
        verts = verts + _curvature_shift_mm(smoother, coords + inner, spacing, sigma_voxels)
    verts = verts + np.asarray(spacing) * (np.asarray(lo) - _MESH_PAD_VOXELS)
    tri, points, point_areas = mesh_areas(verts, np.ascontiguousarray(faces, dtype=np.int64))
    return TriangleSurface(triangles_mm=tri, points_mm=points, point_areas_mm2=point_areas)


def _smoothed(raw: np.ndarray, sigma_voxels) -> tuple[np.ndarray, float]:
    """The mask smoothed by the largest of sigma, sigma / 2, 0 that keeps its shape.

    Smoothing erases structures thinner than about two voxels (a lone voxel peaks at 0.06,
    a one-voxel rod at 0.15, a one-voxel sheet at 0.38, under the 0.5 level). A sigma is
    kept when the 0.5 level encloses the mask's voxel count within 10 % and no mask voxel
    falls under 0.2; otherwise the next smaller one is tried (0: no smoothing, the classic
    marching-cubes surface of the binary mask).
    """
    inside = raw > 0.5
    n_inside = int(np.count_nonzero(inside))
    base = np.asarray(sigma_voxels, float)
    for factor in (1.0, 0.5):
        sigma = base * factor
        if not np.any(sigma > 0):
            break
        field = gaussian_filter_zero(raw, sigma, 3.0)
        kept = int(np.count_nonzero(field >= 0.5))
        if abs(kept - n_inside) <= 0.1 * n_inside and float(field[inside].min()) >= 0.2:
            return field, sigma
    logger.debug("mask too thin to smooth: surface of the binary mask used")
    return raw, 0.0


def _curvature_shift_mm(field: np.ndarray, coords: np.ndarray, spacing: tuple[float, ...],
                        sigma_voxels) -> np.ndarray:
    """Displacement (V, 3) mm that undoes the shrinkage of smoothing on curved surfaces.

    The 0.5 level of a Gaussian-smoothed indicator lies ``sigma_n^2 * H`` inside a surface
    of mean curvature ``H = (k1 + k2) / 2`` (sphere: sigma^2 / R; to second order in
    sigma / R), ``sigma_n`` being the Gaussian's width along the normal. ``H`` and the
    normal come from the smoothed field (``2H = div n``, ``n = -grad f / |grad f|``),
    interpolated trilinearly at the vertices (``coords``: (V, 3) positions in voxel units
    of ``field``); the shift is capped at a quarter voxel.
    """
    spacing_arr = np.asarray(spacing)
    # only at the vertices (compiled; same finite differences and trilinear interpolation)
    mean_curv, n_v = curvature_and_normals(field, coords, spacing)
    sigma_mm = np.broadcast_to(np.asarray(sigma_voxels, float), (3,)) * spacing_arr
    scaled = n_v * sigma_mm
    # (a^2 + b^2) + c^2, the order of np.sum over the three columns, without its slow
    # reduction over rows of three values
    sigma_n2 = (scaled[:, 0] * scaled[:, 0] + scaled[:, 1] * scaled[:, 1]
                + scaled[:, 2] * scaled[:, 2])
    cap = 0.25 * float(spacing_arr.min())
    shift = np.clip(sigma_n2 * mean_curv, -cap, cap)
    return n_v * shift[:, None]


def distances_to_surface(points_mm: np.ndarray, surface: TriangleSurface) -> np.ndarray:
    """Exact Euclidean distance (mm) from each point to the nearest point of ``surface``.

    Compiled search over a uniform grid of the triangles that proves the nearest triangle
    was examined (:func:`checks._surface_numba.point_mesh_distances`).

    Parameters
    ----------
    points_mm : (N, 3) float ndarray
    surface : TriangleSurface
        Non-empty.

    Returns
    -------
    (N,) float ndarray
    """
    return point_mesh_distances(points_mm, surface.triangles_mm)
