"""Compiled mesh kernels of the exact surfaces (numba).

Private module of :mod:`checks._surface_mesh`. The kernels compute what their former NumPy
versions did (same finite differences, same arithmetic), without Python-level loops or
whole-grid temporaries:

* :func:`curvature_and_normals`: mean curvature and normal of a field's level sets at given
  points, the finite differences of :func:`numpy.gradient` (normals at the nodes the points
  read, in one pass, their divergence only at the corners that carry weight);
* :func:`mixed_cell_mask` (the cells an iso-surface crosses, for marching cubes' ``mask``)
  and :func:`mesh_areas` (triangles, vertices and vertex areas of a mesh).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["curvature_and_normals", "mixed_cell_mask", "mesh_areas"]


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
