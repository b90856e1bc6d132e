"""Compiled contour kernels of the added path length (numba).

Private module of :mod:`checks._apl`:

* :func:`marching_squares_segments`: the iso-line segments of every axial slice of a stack
  (what :func:`skimage.measure.find_contours` assembles into polylines), with
  scikit-image's edge interpolation and saddle rule (``fully_connected="low"``);
* :func:`segments_within`: whether a point lies within a tolerance of a segment of its own
  slice (exact point-to-segment distances over the segments binned in a grid).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from checks._surface_numba import MAX_CELLS, simplex_box

__all__ = ["marching_squares_segments", "segments_within"]


def marching_squares_segments(stack: np.ndarray, level: float = 0.5
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iso-line segments of every slice ``stack[z]`` of a (Z, Y, X) field.

    Returns ``(z, start, end)``: (S,) slice indices and (S, 2) segment end points in pixel
    units (row, column), the same segments as :func:`skimage.measure.find_contours` with its
    defaults (``fully_connected="low"``, ``positive_orientation="low"``) before it assembles
    them into polylines (degenerate, zero-length segments included).
    """
    field = np.ascontiguousarray(stack)  # float32 values are widened as read: same numbers
    if field.dtype not in (np.float32, np.float64):
        field = field.astype(np.float64)
    return _marching_squares(field, float(level))


@numba.njit(cache=True, nogil=True)
def _row_sides(field, level):
    """(Z, Y, 2) bool: row [z, y] has a value above ``level``; has one at or under it."""
    nz, ny, nx = field.shape
    sides = np.zeros((nz, ny, 2), np.bool_)
    for z in range(nz):
        for r in range(ny):
            above = 0
            for c in range(nx):
                above += field[z, r, c] > level
            sides[z, r, 0] = above > 0
            sides[z, r, 1] = above < nx
    return sides


@numba.njit(cache=True, nogil=True)
def _interp(v1, v2, level):
    return 0.0 if v1 == v2 else (level - v1) / (v2 - v1)


@numba.njit(cache=True, nogil=True)
def _marching_squares(field, level):
    nz, ny, nx = field.shape
    cap = 16
    zs = np.empty(cap, np.int64)
    seg = np.empty((cap, 4))
    n = 0
    sides = _row_sides(field, level)
    for z in range(nz):
        for r0 in range(ny - 1):
            r1 = r0 + 1
            # two rows wholly above, or wholly at or under, the level: no crossed square
            if not ((sides[z, r0, 0] or sides[z, r1, 0]) and (sides[z, r0, 1] or sides[z, r1, 1])):
                continue
            for c0 in range(nx - 1):
                c1 = c0 + 1
                ul = np.float64(field[z, r0, c0])
                ur = np.float64(field[z, r0, c1])
                ll = np.float64(field[z, r1, c0])
                lr = np.float64(field[z, r1, c1])
                code = 0
                if ul > level:
                    code += 1
                if ur > level:
                    code += 2
                if ll > level:
                    code += 4
                if lr > level:
                    code += 8
                if code == 0 or code == 15:
                    continue
                # edge points as scikit-image's _get_contour_segments
                top = (r0, c0 + _interp(ul, ur, level))
                bottom = (r1, c0 + _interp(ll, lr, level))
                left = (r0 + _interp(ul, ll, level), c0)
                right = (r0 + _interp(ur, lr, level), c1)
                npairs = 1
                a1, b1 = top, top
                a2, b2 = top, top
                if code == 1:
                    a1, b1 = top, left
                elif code == 2:
                    a1, b1 = right, top
                elif code == 3:
                    a1, b1 = right, left
                elif code == 4:
                    a1, b1 = left, bottom
                elif code == 5:
                    a1, b1 = top, bottom
                elif code == 6:  # saddle, fully_connected="low": low values not joined
                    npairs = 2
                    a1, b1 = right, top
                    a2, b2 = left, bottom
                elif code == 7:
                    a1, b1 = right, bottom
                elif code == 8:
                    a1, b1 = bottom, right
                elif code == 9:  # saddle
                    npairs = 2
                    a1, b1 = top, left
                    a2, b2 = bottom, right
                elif code == 10:
                    a1, b1 = bottom, top
                elif code == 11:
                    a1, b1 = bottom, left
                elif code == 12:
                    a1, b1 = left, right
                elif code == 13:
                    a1, b1 = top, right
                else:  # 14
                    a1, b1 = left, top
                for pair in range(npairs):
                    if n + 1 >= cap:
                        cap *= 2
                        zs2 = np.empty(cap, np.int64)
                        zs2[:n] = zs[:n]
                        zs = zs2
                        seg2 = np.empty((cap, 4))
                        seg2[:n] = seg[:n]
                        seg = seg2
                    a, b = (a1, b1) if pair == 0 else (a2, b2)
                    zs[n] = z
                    seg[n, 0] = a[0]
                    seg[n, 1] = a[1]
                    seg[n, 2] = b[0]
                    seg[n, 3] = b[1]
                    n += 1
    return zs[:n], seg[:n, :2].copy(), seg[:n, 2:].copy()


def segments_within(points_zyx: np.ndarray, seg_z: np.ndarray, starts_yx: np.ndarray,
                    ends_yx: np.ndarray, tolerance_mm: float) -> np.ndarray:
    """True for each point within ``tolerance_mm`` (``<=``) of a segment of its own slice.

    ``points_zyx`` (P, 3): slice index, y, x (mm); segments: (S,) slice index and (S, 2)
    end points (y, x) in mm. Exact point-to-segment distances; the candidates are the
    segments binned (by bounding box) in the grid cells the point's tolerance square
    overlaps, which holds every segment that can be within the tolerance.
    """
    near = np.zeros(len(points_zyx), bool)
    if len(points_zyx) == 0 or len(seg_z) == 0:
        return near
    starts = np.ascontiguousarray(starts_yx, dtype=np.float64)
    ends = np.ascontiguousarray(ends_yx, dtype=np.float64)
    lo, hi, mean_side = simplex_box(np.stack((starts, ends), axis=1))
    z_lo = int(seg_z.min())
    n_slices = int(seg_z.max()) - z_lo + 1
    cell = max(float(tolerance_mm), mean_side, 1e-6)
    while n_slices * np.prod(np.floor((hi - lo) / cell) + 1) > MAX_CELLS:
        cell *= 1.5
    dims = np.array([n_slices, *(np.floor((hi - lo) / cell) + 1)], dtype=np.int64)
    return _segments_within(np.ascontiguousarray(points_zyx, dtype=np.float64),
                            seg_z.astype(np.int64) - z_lo, z_lo, starts, ends, lo, cell, dims,
                            float(tolerance_mm))


@numba.njit(cache=True, nogil=True)
def _segments_within(points, seg_z, z_lo, starts, ends, lo, cell, dims, tol):
    ns, ny, nx = dims[0], dims[1], dims[2]
    m = seg_z.shape[0]
    counts = np.zeros(ns * ny * nx + 1, np.int64)
    box = np.empty((m, 4), np.int64)
    for s in range(m):
        for a in range(2):
            vmin = min(starts[s, a], ends[s, a])
            vmax = max(starts[s, a], ends[s, a])
            box[s, a] = min(max(int(math.floor((vmin - lo[a]) / cell)), 0), dims[a + 1] - 1)
            box[s, 2 + a] = min(max(int(math.floor((vmax - lo[a]) / cell)), 0),
                                dims[a + 1] - 1)
        for j in range(box[s, 0], box[s, 2] + 1):
            for k in range(box[s, 1], box[s, 3] + 1):
                counts[(seg_z[s] * ny + j) * nx + k + 1] += 1
    first = np.cumsum(counts)
    fill = first[:-1].copy()
    items = np.empty(first[-1], np.int64)
    for s in range(m):
        for j in range(box[s, 0], box[s, 2] + 1):
            for k in range(box[s, 1], box[s, 3] + 1):
                c = (seg_z[s] * ny + j) * nx + k
                items[fill[c]] = s
                fill[c] += 1
    near = np.zeros(points.shape[0], np.bool_)
    for q in range(points.shape[0]):
        z = int(points[q, 0]) - z_lo
        if z < 0 or z >= ns:
            continue
        py, px = points[q, 1], points[q, 2]
        j0 = max(int(math.floor((py - tol - lo[0]) / cell)), 0)
        j1 = min(int(math.floor((py + tol - lo[0]) / cell)), ny - 1)
        k0 = max(int(math.floor((px - tol - lo[1]) / cell)), 0)
        k1 = min(int(math.floor((px + tol - lo[1]) / cell)), nx - 1)
        found = False
        for j in range(j0, j1 + 1):
            for k in range(k0, k1 + 1):
                c = (z * ny + j) * nx + k
                for i in range(first[c], first[c + 1]):
                    s = items[i]
                    ay, ax = starts[s, 0], starts[s, 1]
                    by, bx = ends[s, 0] - ay, ends[s, 1] - ax
                    qy, qx = py - ay, px - ax
                    length2 = by * by + bx * bx
                    t = (qy * by + qx * bx) / (length2 if length2 > 0 else 1.0)
                    t = min(max(t, 0.0), 1.0)
                    dy, dx = qy - by * t, qx - bx * t
                    if math.sqrt(dy * dy + dx * dx) <= tol:
                        found = True
                        break
                if found:
                    break
            if found:
                break
        near[q] = found
    return near
