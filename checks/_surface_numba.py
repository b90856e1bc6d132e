"""Compiled kernels of the segmentation metrics (numba): distances, contours, curvature.

Private module of :mod:`checks._surface_mesh` and :mod:`checks._apl`. The kernels compute
what their former NumPy versions did (same geometry, same candidates proven complete, same
finite differences), without Python-level loops or whole-grid temporaries:

* :func:`point_mesh_distances`: exact Euclidean distance from each point to the nearest point
  of a triangle mesh. Triangles are binned in a uniform grid of cubic cells (each triangle in
  every cell its bounding box overlaps); a point's search visits shells of cells around its
  own cell, ring by ring, and stops once the best distance found is no larger than the
  distance from the point to the outside of the cells visited: every triangle with a point
  that close overlaps a visited cell, so the minimum is exact. Within a cell, a triangle's
  bounding sphere and its plane give lower bounds that skip the exact test when they
  already exceed the best distance (never skipping a nearer triangle). Closest point on a
  triangle: Ericson, *Real-Time Collision Detection*, 2005, sec. 5.1.5. The kernels run in
  the calling thread and release the GIL (callers run searches side by side in threads).
* :func:`marching_squares_segments`: the iso-line segments of every axial slice of a stack
  (what :func:`skimage.measure.find_contours` assembles into polylines), with
  scikit-image's edge interpolation and saddle rule (``fully_connected="low"``), and
  :func:`segments_within`: whether a point lies within a tolerance of a segment of its slice.
* :func:`curvature_and_normals`: mean curvature and normal of a field's level sets at given
  points, the finite differences of :func:`numpy.gradient` (normals at every node in one
  pass, their divergence only at the corners that carry weight).
* :func:`mixed_cell_mask` (the cells an iso-surface crosses, for marching cubes' ``mask``)
  and :func:`mesh_areas` (triangles, vertices and vertex areas of a mesh).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["point_mesh_distances", "marching_squares_segments", "segments_within",
           "curvature_and_normals", "mixed_cell_mask", "mesh_areas"]

#: Upper bound on the number of grid cells (memory: 8 bytes each).
_MAX_CELLS = 1 << 22
#: Grid cell side over the mean largest side of a triangle's bounding box.
_CELL_FACTOR = 2.0


def point_mesh_distances(points_mm: np.ndarray, triangles_mm: np.ndarray) -> np.ndarray:
    """Exact distance (mm) from each point (N, 3) to the nearest of the triangles (M, 3, 3).

    ``M`` must be > 0. Returns an (N,) float64 array.
    """
    points = np.ascontiguousarray(points_mm, dtype=np.float64)
    tri = np.ascontiguousarray(triangles_mm, dtype=np.float64)
    if len(points) == 0:
        return np.empty(0)
    if len(tri) >= 2 ** 32:  # triangle numbers are stored as uint32
        raise ValueError(f"{len(tri)} triangles: at most 2**32 - 1 are supported")
    lo, hi, mean_side = _mesh_box(tri)
    # cells about twice a triangle's bounding box: each triangle in a few cells
    cell = max(_CELL_FACTOR * mean_side, 1e-6)
    span = np.maximum(hi - lo, cell)
    while np.prod(np.floor(span / cell) + 1) > _MAX_CELLS:
        cell *= 1.5
    dims = (np.floor(span / cell) + 1).astype(np.int64)
    starts, items = _bin_triangles(tri, lo, cell, dims)
    # visit the points in Morton (Z-curve) order of their cells: consecutive points are
    # neighbours, so the previous point's nearest triangle gives a tight starting bound
    idx = np.clip(np.floor((points - lo) / cell), 0, 1023).astype(np.int64)
    order = np.argsort(_morton(idx[:, 0]) << 2 | _morton(idx[:, 1]) << 1 | _morton(idx[:, 2]),
                       kind="stable")
    return _distances(points, order, tri, lo, cell, dims, starts, items)


def _morton(v: np.ndarray) -> np.ndarray:
    """Spread the 10 low bits of ``v`` three apart (one axis of a 3-D Morton code)."""
    v = (v | (v << 16)) & 0x030000FF
    v = (v | (v << 8)) & 0x0300F00F
    v = (v | (v << 4)) & 0x030C30C3
    return (v | (v << 2)) & 0x09249249


@numba.njit(cache=True, nogil=True)
def _bin_triangles(tri, lo, cell, dims):
    nz, ny, nx = dims[0], dims[1], dims[2]
    counts = np.zeros(nz * ny * nx + 1, np.int64)
    m = tri.shape[0]
    box = np.empty((m, 6), np.int64)
    for t in range(m):
        for a in range(3):
            vmin = min(tri[t, 0, a], tri[t, 1, a], tri[t, 2, a])
            vmax = max(tri[t, 0, a], tri[t, 1, a], tri[t, 2, a])
            box[t, a] = min(max(int(math.floor((vmin - lo[a]) / cell)), 0), dims[a] - 1)
            box[t, 3 + a] = min(max(int(math.floor((vmax - lo[a]) / cell)), 0), dims[a] - 1)
        for i in range(box[t, 0], box[t, 3] + 1):
            for j in range(box[t, 1], box[t, 4] + 1):
                for k in range(box[t, 2], box[t, 5] + 1):
                    counts[(i * ny + j) * nx + k + 1] += 1
    starts = np.cumsum(counts)
    fill = starts[:-1].copy()
    # unsigned indices: numba then skips the negative-index wraparound on every access in
    # the search's inner loop (about 7 % of its time)
    items = np.empty(starts[-1], np.uint32)
    for t in range(m):
        for i in range(box[t, 0], box[t, 3] + 1):
            for j in range(box[t, 1], box[t, 4] + 1):
                for k in range(box[t, 2], box[t, 5] + 1):
                    c = (i * ny + j) * nx + k
                    items[fill[c]] = t
                    fill[c] += 1
    return starts, items


@numba.njit(cache=True, inline="always")
def _dot(ax, ay, az, bx, by, bz):
    return ax * bx + ay * by + az * bz


@numba.njit(cache=True, nogil=True)
def _point_triangle_d2(px, py, pz, tri, t):
    """Squared distance from p to triangle t (Ericson 2005, ClosestPtPointTriangle)."""
    ax, ay, az = tri[t, 0, 0], tri[t, 0, 1], tri[t, 0, 2]
    bx, by, bz = tri[t, 1, 0], tri[t, 1, 1], tri[t, 1, 2]
    cx, cy, cz = tri[t, 2, 0], tri[t, 2, 1], tri[t, 2, 2]
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    apx, apy, apz = px - ax, py - ay, pz - az
    d1 = _dot(abx, aby, abz, apx, apy, apz)
    d2 = _dot(acx, acy, acz, apx, apy, apz)
    if d1 <= 0.0 and d2 <= 0.0:
        qx, qy, qz = ax, ay, az
    else:
        bpx, bpy, bpz = px - bx, py - by, pz - bz
        d3 = _dot(abx, aby, abz, bpx, bpy, bpz)
        d4 = _dot(acx, acy, acz, bpx, bpy, bpz)
        cpx, cpy, cpz = px - cx, py - cy, pz - cz
        d5 = _dot(abx, aby, abz, cpx, cpy, cpz)
        d6 = _dot(acx, acy, acz, cpx, cpy, cpz)
        vc = d1 * d4 - d3 * d2
        vb = d5 * d2 - d1 * d6
        va = d3 * d6 - d5 * d4
        if d3 >= 0.0 and d4 <= d3:
            qx, qy, qz = bx, by, bz
        elif vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
            v = d1 / (d1 - d3)
            qx, qy, qz = ax + v * abx, ay + v * aby, az + v * abz
        elif d6 >= 0.0 and d5 <= d6:
            qx, qy, qz = cx, cy, cz
        elif vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
            w = d2 / (d2 - d6)
            qx, qy, qz = ax + w * acx, ay + w * acy, az + w * acz
        elif va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
            w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
            qx, qy, qz = bx + w * (cx - bx), by + w * (cy - by), bz + w * (cz - bz)
        else:
            denom = 1.0 / (va + vb + vc)
            v = vb * denom
            w = vc * denom
            qx = ax + abx * v + acx * w
            qy = ay + aby * v + acy * w
            qz = az + abz * v + acz * w
    dx, dy, dz = px - qx, py - qy, pz - qz
    return dx * dx + dy * dy + dz * dz


@numba.njit(cache=True, nogil=True)
def _mesh_box(simplices):
    """Bounding box (lo, hi) of simplices (M, V, D) (triangles, segments) and the mean of
    their largest box side, in one compiled pass (NumPy's reductions over rows of two or
    three values are slow)."""
    dims = simplices.shape[2]
    lo = np.full(dims, np.inf)
    hi = np.full(dims, -np.inf)
    total = 0.0
    for t in range(simplices.shape[0]):
        side = 0.0
        for a in range(dims):
            vmin = vmax = simplices[t, 0, a]
            for v in range(1, simplices.shape[1]):
                vmin = min(vmin, simplices[t, v, a])
                vmax = max(vmax, simplices[t, v, a])
            lo[a] = min(lo[a], vmin)
            hi[a] = max(hi[a], vmax)
            side = max(side, vmax - vmin)
        total += side
    return lo, hi, total / max(simplices.shape[0], 1)


@numba.njit(cache=True, nogil=True)
def _cell_gap2(p0, p1, p2, lo, cell, i, j, k):
    """Squared distance from p to cell (i, j, k)."""
    g0 = max(lo[0] + i * cell - p0, 0.0, p0 - lo[0] - (i + 1) * cell)
    g1 = max(lo[1] + j * cell - p1, 0.0, p1 - lo[1] - (j + 1) * cell)
    g2 = max(lo[2] + k * cell - p2, 0.0, p2 - lo[2] - (k + 1) * cell)
    return g0 * g0 + g1 * g1 + g2 * g2


@numba.njit(cache=True, nogil=True)
def _triangle_bounds(tri):
    """Per triangle: centroid (3), bounding-sphere radius, unit normal (3), plane offset and
    the plane's misfit (M, 9).

    The plane ``n.x = offset`` through the centroid bounds distances from below: every point
    q of the triangle is a convex combination of its vertices, so ``|n.q - offset|`` is at
    most the largest ``|n.v - offset|`` over the vertices (the misfit, rounding-size; kept
    twice over) and ``|p - q| >= |n.p - offset| - misfit`` for a unit ``n``. The radius is
    widened by 1e-9 relative + 1e-9 mm for the same reason.
    """
    m = tri.shape[0]
    out = np.empty((m, 9))
    for t in range(m):
        c0 = (tri[t, 0, 0] + tri[t, 1, 0] + tri[t, 2, 0]) / 3.0
        c1 = (tri[t, 0, 1] + tri[t, 1, 1] + tri[t, 2, 1]) / 3.0
        c2 = (tri[t, 0, 2] + tri[t, 1, 2] + tri[t, 2, 2]) / 3.0
        r2 = 0.0
        for v in range(3):
            e0, e1, e2 = tri[t, v, 0] - c0, tri[t, v, 1] - c1, tri[t, v, 2] - c2
            r2 = max(r2, e0 * e0 + e1 * e1 + e2 * e2)
        u0, u1, u2 = tri[t, 1, 0] - tri[t, 0, 0], tri[t, 1, 1] - tri[t, 0, 1], \
            tri[t, 1, 2] - tri[t, 0, 2]
        w0, w1, w2 = tri[t, 2, 0] - tri[t, 0, 0], tri[t, 2, 1] - tri[t, 0, 1], \
            tri[t, 2, 2] - tri[t, 0, 2]
        n0, n1, n2 = u1 * w2 - u2 * w1, u2 * w0 - u0 * w2, u0 * w1 - u1 * w0
        norm = math.sqrt(n0 * n0 + n1 * n1 + n2 * n2)
        if norm > 0.0:
            n0, n1, n2 = n0 / norm, n1 / norm, n2 / norm
        else:  # no plane: the bound degrades to 0 (never skips)
            n0 = n1 = n2 = 0.0
        offset = n0 * c0 + n1 * c1 + n2 * c2
        misfit = 0.0
        for v in range(3):
            misfit = max(misfit, abs(n0 * tri[t, v, 0] + n1 * tri[t, v, 1]
                                     + n2 * tri[t, v, 2] - offset))
        out[t, 0], out[t, 1], out[t, 2] = c0, c1, c2
        out[t, 3] = math.sqrt(r2) * (1.0 + 1e-9) + 1e-9
        out[t, 4], out[t, 5], out[t, 6] = n0, n1, n2
        out[t, 7] = offset
        out[t, 8] = 2.0 * misfit + 1e-9
    return out


@numba.njit(cache=True, nogil=True)
def _distances(points, order, tri, lo, cell, dims, starts, items):
    out = np.empty(points.shape[0])
    _distances_chunk(points, order, tri, lo, cell, dims, starts, items,
                     _triangle_bounds(tri), out)
    return out


@numba.njit(cache=True, nogil=True)
def _distances_chunk(points, order, tri, lo, cell, dims, starts, items, bounds, out):
    nz, ny, nx = dims[0], dims[1], dims[2]
    stamp = np.full(tri.shape[0], -1, np.int64)
    nearest = -1
    for q in order:
        p0, p1, p2 = points[q, 0], points[q, 1], points[q, 2]
        best = np.inf  # squared distance of the nearest triangle so far
        root = np.inf  # its square root
        if nearest >= 0:  # an upper bound: the previous point's nearest triangle
            best = _point_triangle_d2(p0, p1, p2, tri, nearest)
            root = math.sqrt(best)
        c0 = int(math.floor((p0 - lo[0]) / cell))
        c1 = int(math.floor((p1 - lo[1]) / cell))
        c2 = int(math.floor((p2 - lo[2]) / cell))
        # rings below r0 hold no cell of the grid
        r = max(0, -c0, c0 - (nz - 1), -c1, c1 - (ny - 1), -c2, c2 - (nx - 1))
        while True:
            for i in range(max(c0 - r, 0), min(c0 + r, nz - 1) + 1):
                for j in range(max(c1 - r, 0), min(c1 + r, ny - 1) + 1):
                    # the shell of ring r: every k on its faces, else its two ends
                    face = abs(i - c0) == r or abs(j - c1) == r
                    step = 1 if face or r == 0 else 2 * r
                    first = max(c2 - r, 0) if step == 1 else c2 - r
                    for k in range(first, min(c2 + r, nx - 1) + 1, step):
                        if k < 0:
                            continue
                        c = np.uint64((i * ny + j) * nx + k)
                        if starts[c] == starts[c + 1]:
                            continue
                        # a cell farther than the best distance so far cannot hold a nearer
                        if _cell_gap2(p0, p1, p2, lo, cell, i, j, k) >= best:
                            continue
                        for s in range(np.uint64(starts[c]), np.uint64(starts[c + 1])):
                            t = items[s]
                            if stamp[t] == q:
                                continue
                            stamp[t] = q
                            # two lower bounds before the exact distance: bounding sphere
                            # and plane
                            e0 = p0 - bounds[t, 0]
                            e1 = p1 - bounds[t, 1]
                            e2 = p2 - bounds[t, 2]
                            lim = bounds[t, 3] + root
                            if e0 * e0 + e1 * e1 + e2 * e2 >= lim * lim:
                                continue
                            if (abs(bounds[t, 4] * p0 + bounds[t, 5] * p1 + bounds[t, 6] * p2
                                    - bounds[t, 7]) - bounds[t, 8] >= root):
                                continue
                            d2 = _point_triangle_d2(p0, p1, p2, tri, t)
                            if d2 < best:
                                best = d2
                                root = math.sqrt(d2)
                                nearest = t
            covers_grid = (c0 - r <= 0 and c0 + r >= nz - 1 and c1 - r <= 0
                           and c1 + r >= ny - 1 and c2 - r <= 0 and c2 + r >= nx - 1)
            # distance from p to the outside of the visited cube of cells
            reach = min(p0 - (lo[0] + (c0 - r) * cell), lo[0] + (c0 + r + 1) * cell - p0,
                        p1 - (lo[1] + (c1 - r) * cell), lo[1] + (c1 + r + 1) * cell - p1,
                        p2 - (lo[2] + (c2 - r) * cell), lo[2] + (c2 + r + 1) * cell - p2)
            if covers_grid or (best < np.inf and root <= reach):
                break
            r += 1
        out[q] = root


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


def curvature_and_normals(field: np.ndarray, coords: np.ndarray,
                          spacing_mm: tuple[float, float, float]
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Mean curvature (1/mm) and unit normal of the level sets of ``field`` at ``coords``.

    Same numbers as the NumPy/SciPy formulation (normals on the whole grid, divergence at
    the interpolation corners only):
    ``n = -grad f / (|grad f| + 1e-12)`` and ``2H = div n`` by :func:`numpy.gradient` (central
    differences, one-sided at the array edges) with the spacing, both interpolated
    trilinearly (:func:`scipy.ndimage.map_coordinates`, ``order=1``, ``mode="nearest"``) at
    the (V, 3) fractional voxel ``coords``; the interpolated normal is renormalised.
    Returns ``(H, normals)``: (V,) and (V, 3). A float32 ``field`` is read as is (its values
    widened to float64 before any arithmetic).
    """
    f = np.ascontiguousarray(field)  # float32 or float64; differences taken in float64
    if f.dtype not in (np.float32, np.float64):
        f = f.astype(np.float64)
    c = np.ascontiguousarray(coords, dtype=np.float64)
    h = np.asarray(spacing_mm, dtype=np.float64)
    return _curvature_and_normals(f, c, h)


@numba.njit(cache=True, nogil=True)
def _grad(f, i, j, k, axis, h):
    """One component of numpy.gradient(f, *h) at node (i, j, k)."""
    n = f.shape[axis]
    idx = (i, j, k)[axis]
    lo = idx - 1 if idx > 0 else idx
    hi = idx + 1 if idx < n - 1 else idx
    if axis == 0:
        a, b = f[lo, j, k], f[hi, j, k]
    elif axis == 1:
        a, b = f[i, lo, k], f[i, hi, k]
    else:
        a, b = f[i, j, lo], f[i, j, hi]
    return (float(b) - float(a)) / ((hi - lo) * h[axis])  # float64 even for float32 fields


@numba.njit(cache=True, nogil=True)
def _unit_normals(f, h, needed):
    """-grad f / (|grad f| + 1e-12) at the ``needed`` nodes of (Z, Y, X, 3) (the others are
    left unset), :func:`numpy.gradient`'s central differences (one-sided at the array
    edges), taken in float64."""
    nz, ny, nx = f.shape
    out = np.empty((nz, ny, nx, 3))
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                if not needed[i, j, k]:
                    continue
                g0 = _grad(f, i, j, k, 0, h)
                g1 = _grad(f, i, j, k, 1, h)
                g2 = _grad(f, i, j, k, 2, h)
                norm = math.sqrt(g0 * g0 + g1 * g1 + g2 * g2) + 1e-12
                out[i, j, k, 0] = -g0 / norm
                out[i, j, k, 1] = -g1 / norm
                out[i, j, k, 2] = -g2 / norm
    return out


@numba.njit(cache=True, nogil=True)
def _weighted_corners(coords, v, shape, corners, weights):
    """The trilinear interpolation corners of point ``v`` that carry weight, in (z, y, x)
    loop order, clamped to the grid: fills ``corners`` (8, 3) and ``weights`` (8,), returns
    how many (two for a marching-cubes vertex, which lies on a cell edge)."""
    nz, ny, nx = shape
    z0 = int(math.floor(coords[v, 0]))
    y0 = int(math.floor(coords[v, 1]))
    x0 = int(math.floor(coords[v, 2]))
    fz, fy, fx = coords[v, 0] - z0, coords[v, 1] - y0, coords[v, 2] - x0
    n = 0
    for dz in range(2):
        wz = fz if dz else 1.0 - fz
        for dy in range(2):
            wy = fy if dy else 1.0 - fy
            for dx in range(2):
                wx = fx if dx else 1.0 - fx
                w = wz * wy * wx
                if w == 0.0:
                    continue
                corners[n, 0] = min(max(z0 + dz, 0), nz - 1)
                corners[n, 1] = min(max(y0 + dy, 0), ny - 1)
                corners[n, 2] = min(max(x0 + dx, 0), nx - 1)
                weights[n] = w
                n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _nodes_needed(shape, coords):
    """The nodes whose normal the vertices at ``coords`` read: every interpolation corner
    of non-zero weight and its six neighbours (the divergence's differences)."""
    nz, ny, nx = shape
    needed = np.zeros((nz, ny, nx), np.bool_)
    corners = np.empty((8, 3), np.int64)
    weights = np.empty(8)
    for v in range(coords.shape[0]):
        for c in range(_weighted_corners(coords, v, shape, corners, weights)):
            i, j, k = corners[c, 0], corners[c, 1], corners[c, 2]
            needed[i, j, k] = True
            needed[max(i - 1, 0), j, k] = True
            needed[min(i + 1, nz - 1), j, k] = True
            needed[i, max(j - 1, 0), k] = True
            needed[i, min(j + 1, ny - 1), k] = True
            needed[i, j, max(k - 1, 0)] = True
            needed[i, j, min(k + 1, nx - 1)] = True
    return needed


@numba.njit(cache=True, nogil=True)
def _divergence(normal, i, j, k, h):
    """numpy.gradient of each normal component along its own axis, summed."""
    nz, ny, nx = normal.shape[0], normal.shape[1], normal.shape[2]
    i_lo, i_hi = (i - 1 if i > 0 else i), (i + 1 if i < nz - 1 else i)
    j_lo, j_hi = (j - 1 if j > 0 else j), (j + 1 if j < ny - 1 else j)
    k_lo, k_hi = (k - 1 if k > 0 else k), (k + 1 if k < nx - 1 else k)
    total = (normal[i_hi, j, k, 0] - normal[i_lo, j, k, 0]) / ((i_hi - i_lo) * h[0])
    total += (normal[i, j_hi, k, 1] - normal[i, j_lo, k, 1]) / ((j_hi - j_lo) * h[1])
    total += (normal[i, j, k_hi, 2] - normal[i, j, k_lo, 2]) / ((k_hi - k_lo) * h[2])
    return total


@numba.njit(cache=True, nogil=True)
def _curvature_and_normals(f, coords, h):
    # the normals of the nodes the vertices read, once (a sequential pass), then per vertex
    # its weighted corners: a vertex of a marching-cubes mesh (in voxel units) lies on a
    # cell edge, so only two of the eight corners carry weight
    nv = coords.shape[0]
    mean_curv = np.empty(nv)
    normals = np.empty((nv, 3))
    normal = _unit_normals(f, h, _nodes_needed(f.shape, coords))
    corners = np.empty((8, 3), np.int64)
    weights = np.empty(8)
    for v in range(nv):
        div = 0.0
        n0 = n1 = n2 = 0.0
        for c in range(_weighted_corners(coords, v, f.shape, corners, weights)):
            i, j, k, w = corners[c, 0], corners[c, 1], corners[c, 2], weights[c]
            n0 += w * normal[i, j, k, 0]
            n1 += w * normal[i, j, k, 1]
            n2 += w * normal[i, j, k, 2]
            div += w * _divergence(normal, i, j, k, h)
        mean_curv[v] = 0.5 * div
        norm = math.sqrt(n0 * n0 + n1 * n1 + n2 * n2) + 1e-12
        normals[v, 0] = n0 / norm
        normals[v, 1] = n1 / norm
        normals[v, 2] = n2 / norm
    return mean_curv, normals


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
    lo, hi, mean_side = _mesh_box(np.stack((starts, ends), axis=1))
    z_lo = int(seg_z.min())
    n_slices = int(seg_z.max()) - z_lo + 1
    cell = max(float(tolerance_mm), mean_side, 1e-6)
    while n_slices * np.prod(np.floor((hi - lo) / cell) + 1) > _MAX_CELLS:
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


@numba.njit(cache=True, nogil=True)
def mixed_cell_mask(field, level):
    """Corners of the marching-cubes cells that the ``level`` iso-surface crosses.

    A cell (the 8 nodes ``[i:i+2, j:j+2, k:k+2]``) is crossed when some corner is above
    ``level`` and another is not. Both its lowest corner ``[i, j, k]`` and its highest
    ``[i+1, j+1, k+1]`` are marked, so the mask names every crossed cell whichever corner a
    cell is keyed by (:func:`skimage.measure.marching_cubes` ``mask=``: cells whose key is
    False are skipped; uncrossed cells give no triangles, so the output is unchanged).
    """
    nz, ny, nx = field.shape
    out = np.zeros((nz, ny, nx), np.bool_)
    above = np.empty((nz, ny, nx), np.bool_)
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                above[i, j, k] = field[i, j, k] > level
    for i in range(nz - 1):
        for j in range(ny - 1):
            for k in range(nx - 1):
                a = above[i, j, k]
                if (a != above[i + 1, j, k] or a != above[i, j + 1, k]
                        or a != above[i, j, k + 1] or a != above[i + 1, j + 1, k]
                        or a != above[i + 1, j, k + 1] or a != above[i, j + 1, k + 1]
                        or a != above[i + 1, j + 1, k + 1]):
                    out[i, j, k] = True
                    out[i + 1, j + 1, k + 1] = True
    return out


@numba.njit(cache=True, nogil=True)
def mesh_areas(verts, faces):
    """Triangles (M', 3, 3), vertices used (V', 3) and the area each stands for (V',).

    Triangles of zero area are dropped; each vertex carries a third of the area of the
    triangles it belongs to (summed in face order, as ``numpy.bincount``); vertices left
    with no area are dropped. Same arithmetic as ``verts[faces]``, :func:`numpy.cross` and
    :func:`numpy.linalg.norm`.
    """
    m = faces.shape[0]
    nv = verts.shape[0]
    areas = np.empty(m)
    n_keep = 0
    for t in range(m):
        a, b, c = faces[t, 0], faces[t, 1], faces[t, 2]
        u0, u1, u2 = verts[b, 0] - verts[a, 0], verts[b, 1] - verts[a, 1], \
            verts[b, 2] - verts[a, 2]
        w0, w1, w2 = verts[c, 0] - verts[a, 0], verts[c, 1] - verts[a, 1], \
            verts[c, 2] - verts[a, 2]
        x0, x1, x2 = u1 * w2 - u2 * w1, u2 * w0 - u0 * w2, u0 * w1 - u1 * w0
        areas[t] = 0.5 * math.sqrt(x0 * x0 + x1 * x1 + x2 * x2)
        if areas[t] > 0:
            n_keep += 1
    tri = np.empty((n_keep, 3, 3))
    point_areas = np.zeros(nv)
    n = 0
    for t in range(m):
        if areas[t] > 0:
            third = areas[t] / 3.0
            for v in range(3):
                vi = faces[t, v]
                point_areas[vi] += third
                for a in range(3):
                    tri[n, v, a] = verts[vi, a]
            n += 1
    n_used = 0
    for v in range(nv):
        if point_areas[v] > 0:
            n_used += 1
    points = np.empty((n_used, 3))
    weights = np.empty(n_used)
    n = 0
    for v in range(nv):
        if point_areas[v] > 0:
            for a in range(3):
                points[n, a] = verts[v, a]
            weights[n] = point_areas[v]
            n += 1
    return tri, points, weights
