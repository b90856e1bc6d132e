"""Exact point-to-triangle-mesh distances (numba): the search of the exact surface method.

Private module of :mod:`checks._surface_mesh`. :func:`point_mesh_distances` gives the exact
Euclidean distance from each point to the nearest point of a triangle mesh. Triangles are
binned in a uniform grid of cubic cells (each triangle in every cell its bounding box
overlaps); a point's search visits shells of cells around its own cell, ring by ring, and
stops once the best distance found is no larger than the distance from the point to the
outside of the cells visited: every triangle with a point that close overlaps a visited
cell, so the minimum is exact. Within a cell, a triangle's bounding sphere and its plane
give lower bounds that skip the exact test when they already exceed the best distance
(never skipping a nearer triangle). Closest point on a triangle: Ericson, *Real-Time
Collision Detection*, 2005, sec. 5.1.5. The kernels run in the calling thread and release
the GIL (callers run searches side by side in threads). The contour kernels of the path
length (:mod:`checks._contour_numba`) and the mesh kernels of the surfaces
(:mod:`checks._mesh_numba`) live beside it.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["point_mesh_distances", "simplex_box", "MAX_CELLS"]

#: Upper bound on the number of grid cells (memory: 8 bytes each).
MAX_CELLS = 1 << 22
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
    lo, hi, mean_side = simplex_box(tri)
    # cells about twice a triangle's bounding box: each triangle in a few cells
    cell = max(_CELL_FACTOR * mean_side, 1e-6)
    span = np.maximum(hi - lo, cell)
    while np.prod(np.floor(span / cell) + 1) > MAX_CELLS:
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
def simplex_box(simplices):
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
