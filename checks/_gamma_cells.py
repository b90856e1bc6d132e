"""Compiled cell-wise gamma search (numba, all cores): bound, prune, solve per grid cell.

Private module of :mod:`checks.gamma`, used on CPU when numba is installed.

Algorithm
---------
Work in the evaluated grid's index frame ``q`` (fractional (z, y, x) voxel indices; the
grid direction is orthonormal, so a displacement ``dq`` is ``|dq * spacing|`` mm long). For
a reference point at ``p`` (index frame) with dose ``Dr`` the squared gamma of a position
``q`` is::

    f(q) = sum_k w_k (q_k - p_k)^2 + lam (T(q) - Dr)^2,   w_k = (spacing_k / DTA)^2,
                                                          lam = 1 / dD^2

with ``T`` the trilinear interpolant of the evaluated dose. ``T`` is trilinear inside each
grid *cell* (the box between eight neighbouring voxel centres), and on any sub-box of a cell
(its corner values are exact midpoint averages). Per point, starting from
``best = max_gamma^2`` (values are capped):

1. Cells are visited in order of a distance lower bound valid for any ``p`` inside its own
   cell (precomputed, sorted); the loop stops once that bound reaches ``best``. A cell is
   skipped when ``dist^2(p, cell) + lam gap^2 >= best``, ``gap`` being how far ``Dr`` lies
   outside the cell's [min, max] corner dose (precomputed once per call, shared by the
   criteria).
2. Branch and bound inside a cell (depth first, nearest child first). A box is first
   tested with the range of its corner doses (``T`` stays between their min and max on
   the box: ``dist^2(p, box) + lam gap^2`` is a cheap lower bound). On a box,
   ``T = L + N`` with ``L`` linear (value and gradient at the box centre) and
   ``|N| <= e``, ``e`` the largest ``|T - L|`` at the eight corners (``T - L`` is
   multilinear, so that is its maximum over the box), so
   ``min_q w|q - p|^2 + lam dist(L(q) - Dr, [-e, e])^2`` over the box is a lower bound
   of ``f`` there. It is a convex problem solved *exactly*: its optimum is
   ``q_k = clamp(p_k - lam g_k rho / w_k)`` with ``rho`` the root of a monotone
   piecewise-linear equation, found between its at most six breakpoints. Where that does
   not drop the box, a second bound (``_tangent_bound``) linearises ``T`` at the box's
   point nearest ``p``: its slack grows as the square of the distance from there (not
   with the box size), so it is tight next to ``p``, where the reference point sits on
   the corner of eight cells. Both are lower bounds, so is their maximum. A box whose
   bound is not below ``(sqrt(best) - TOLERANCE_GAMMA)^2`` is dropped.
3. Otherwise ``f`` is evaluated at the minimiser of the centre model, followed by
   ``GN_STEPS`` Gauss-Newton steps (re-linearised trilinear, same exact box-constrained
   solve). Only decreases of the true ``f`` are kept, so each gamma is attained at a real
   position (an upper bound of the exact minimum). At the last point ``o`` reached, a
   third bound (``_second_order_bound``) expands ``f`` to second order with a lower
   bound of its Hessian over the box: next to a minimiser it is within rounding of it, so
   the box that holds the minimum is certified without being split. The box is split in
   eight while the largest of its bounds still allows an improvement of more than
   ``TOLERANCE_GAMMA``, down to ``MAX_DEPTH`` halvings.
4. Warm start: points are processed in contiguous runs of ``_RUN`` (consecutive reference
   voxels, neighbours in x); ``best`` starts from ``f`` at ``p`` itself and at ``p`` plus
   the previous point's optimal offset (neighbours have nearly the same minimiser), and
   the cell holding that warm-start position is searched first (most often the
   minimiser's: the tight bound it gives prunes the other cells; it is not searched
   twice), so the bounds prune from the first box. Runs are spread over the threads in a
   scrambled (golden-ratio) order: failing points cluster in space.

Result: ``exact <= gamma <= exact + TOLERANCE_GAMMA`` for the minimum over the trilinear
interpolant (a certificate from the bounds, not an estimate), unless a box reaches
``MAX_DEPTH`` (1/256 of a voxel side) with its bound still open. Compiled with
``fastmath`` (reassociation; no NaN or infinity reaches the kernel: the inputs are checked
finite and the cap is finite): values change by about 1e-14.

The bounds and the box solve are in :mod:`checks._gamma_bounds`.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from checks._gamma_bounds import (
    _box_solve,
    _box_tangent_bound,
    _clamp,
    _second_order_bound,
    _value_and_gradient,
)

__all__ = ["cell_bounds", "cell_offsets", "search_points", "TOLERANCE_GAMMA", "MAX_DEPTH",
           "GN_STEPS"]

#: Certified tolerance: a box is dropped only when its lower bound shows it cannot hold a
#: gamma below (best so far - TOLERANCE_GAMMA), so each value is at most this much above the
#: exact minimum over the trilinear interpolant (unless a cell is split MAX_DEPTH times).
TOLERANCE_GAMMA = 0.005
#: Halvings of a grid cell at most (a box of 1/256 of a voxel side).
MAX_DEPTH = 8
#: Re-linearised Gauss-Newton steps per box after the centre model's minimiser.
GN_STEPS = 1
#: Reference points per contiguous run (one thread, warm-started from its neighbour).
_RUN = 32


def cell_offsets(spacing_mm: tuple[float, float, float], radius_mm: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Cell offsets ``(K, 3)`` int64 and their lower-bound distances (mm), ascending.

    ``spacing_mm``: the evaluated grid spacing (z, y, x).

    For a point anywhere inside cell ``c``, cell ``c + d`` is at least
    ``sqrt(sum_k (max(0, |d_k| - 1) s_k)^2)`` mm away; offsets with a bound above
    ``radius_mm`` are dropped.
    """
    s = np.asarray(spacing_mm, dtype=np.float64)
    n = np.ceil(radius_mm / s).astype(int) + 1
    axes = [np.arange(-k, k + 1) for k in n]
    d = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    lb = np.sqrt((((np.maximum(np.abs(d) - 1, 0)) * s) ** 2).sum(1))
    keep = lb <= radius_mm + 1e-9
    d, lb = d[keep], lb[keep]
    # ties: nearer cell centre first
    centre = np.sqrt(((d * s) ** 2).sum(1))
    order = np.lexsort((centre, lb))
    return np.ascontiguousarray(d[order], dtype=np.int64), lb[order]


@numba.njit(parallel=True, cache=True, fastmath=True)
def cell_bounds(dose):
    """Per-cell minimum and maximum of the eight corner doses (an axis of length 1 keeps
    one cell of zero extent)."""
    nz, ny, nx = dose.shape
    cz, cy, cx = max(nz - 1, 1), max(ny - 1, 1), max(nx - 1, 1)
    lo = np.empty((cz, cy, cx))
    hi = np.empty((cz, cy, cx))
    for i in numba.prange(cz):
        i1 = min(i + 1, nz - 1)
        for j in range(cy):
            j1 = min(j + 1, ny - 1)
            for k in range(cx):
                k1 = min(k + 1, nx - 1)
                a = min(dose[i, j, k], dose[i, j, k1], dose[i, j1, k], dose[i, j1, k1])
                b = min(dose[i1, j, k], dose[i1, j, k1], dose[i1, j1, k], dose[i1, j1, k1])
                lo[i, j, k] = min(a, b)
                a = max(dose[i, j, k], dose[i, j, k1], dose[i, j1, k], dose[i, j1, k1])
                b = max(dose[i1, j, k], dose[i1, j, k1], dose[i1, j1, k], dose[i1, j1, k1])
                hi[i, j, k] = max(a, b)
    return lo, hi


@numba.njit(cache=True, fastmath=True)
def _cell_min(dose, cz, cy, cx, z1, y1, x1, pz, py, px, dr, lam, wz, wy, wx, best2, n_iter,
              max_depth, eps, stack, sub, bz, by, bx):
    """Branch and bound over one cell, boxes halved down to ``max_depth`` times.

    Per box: ``T = L + N`` with ``L`` the linear part at the box centre and
    ``|N| <= e`` (the largest ``|T - L|`` at the corners: ``T - L`` is multilinear), so
    ``min_q w|q - p|^2 + lam dist(L(q) - Dr, [-e, e])^2`` over the box (a convex problem,
    solved exactly like the Gauss-Newton step) is a lower bound of ``f`` there. A box whose
    bound is not below ``(gamma_best - eps)^2`` is dropped; otherwise Gauss-Newton from the
    centre model's minimiser lowers ``best2``, and the box is split in eight if its bound
    still allows an improvement of more than ``eps``.
    """
    stack[0, 0], stack[0, 1], stack[0, 2] = float(cz), float(cy), float(cx)
    stack[0, 3], stack[0, 4], stack[0, 5] = float(z1), float(y1), float(x1)
    stack[0, 6] = dose[cz, cy, cx]
    stack[0, 7] = dose[cz, cy, x1]
    stack[0, 8] = dose[cz, y1, cx]
    stack[0, 9] = dose[cz, y1, x1]
    stack[0, 10] = dose[z1, cy, cx]
    stack[0, 11] = dose[z1, cy, x1]
    stack[0, 12] = dose[z1, y1, cx]
    stack[0, 13] = dose[z1, y1, x1]
    stack[0, 14] = 0.0
    top = 1
    while top > 0:
        top -= 1
        z0, y0, x0 = stack[top, 0], stack[top, 1], stack[top, 2]
        bz1, by1, bx1 = stack[top, 3], stack[top, 4], stack[top, 5]
        v0, v1, v2, v3 = stack[top, 6], stack[top, 7], stack[top, 8], stack[top, 9]
        v4, v5, v6, v7 = stack[top, 10], stack[top, 11], stack[top, 12], stack[top, 13]
        depth = stack[top, 14]
        limit = math.sqrt(best2) - eps
        if limit <= 0.0:
            break
        limit2 = limit * limit
        qz, qy, qx = _clamp(pz, z0, bz1), _clamp(py, y0, by1), _clamp(px, x0, bx1)
        d2 = wz * (qz - pz) ** 2 + wy * (qy - py) ** 2 + wx * (qx - px) ** 2
        if d2 >= limit2:
            continue
        # the corner doses' range: T stays within it on the box (cheap first bound)
        vmin = min(min(v0, v1, v2, v3), min(v4, v5, v6, v7))
        vmax = max(max(v0, v1, v2, v3), max(v4, v5, v6, v7))
        gap = max(vmin - dr, dr - vmax, 0.0)
        if d2 + lam * gap * gap >= limit2:
            continue
        # trilinear coefficients (t in [0, 1]^3), then centred ones
        kx, ky, kz = v1 - v0, v2 - v0, v4 - v0
        kyx = v3 - v2 - v1 + v0
        kzx = v5 - v4 - v1 + v0
        kzy = v6 - v4 - v2 + v0
        kzyx = v7 - v6 - v5 - v3 + v4 + v2 + v1 - v0
        ez, ey, ex = bz1 - z0, by1 - y0, bx1 - x0
        sz = 1.0 / ez if ez > 0.0 else 0.0
        sy = 1.0 / ey if ey > 0.0 else 0.0
        sx = 1.0 / ex if ex > 0.0 else 0.0
        # centre value and gradient (per unit t) of the linear part L
        hz = 0.5 * (kz + 0.5 * (kzx + kzy) + 0.25 * kzyx)
        hy = 0.5 * (ky + 0.5 * (kyx + kzy) + 0.25 * kzyx)
        hx = 0.5 * (kx + 0.5 * (kyx + kzx) + 0.25 * kzyx)
        centre = 0.125 * (v0 + v1 + v2 + v3 + v4 + v5 + v6 + v7)
        # T - L is multilinear, so its largest |value| on the box is at a corner: e is exact
        e = max(abs(v0 - centre + hz + hy + hx), abs(v1 - centre + hz + hy - hx),
                abs(v2 - centre + hz - hy + hx), abs(v3 - centre + hz - hy - hx),
                abs(v4 - centre - hz + hy + hx), abs(v5 - centre - hz + hy - hx),
                abs(v6 - centre - hz - hy + hx), abs(v7 - centre - hz - hy - hx))
        gz, gy, gx = 2.0 * hz * sz, 2.0 * hy * sy, 2.0 * hx * sx
        a = centre - dr - gz * 0.5 * (z0 + bz1) - gy * 0.5 * (y0 + by1) - gx * 0.5 * (x0 + bx1)
        cz_, cy_, cx_ = lam * gz / wz, lam * gy / wy, lam * gx / wx
        r0 = a + gz * qz + gy * qy + gx * qx
        if abs(r0) > e:
            a_e = a - e if r0 > 0.0 else a + e
            rho = _box_solve(a_e, gz, gy, gx, pz, py, px, cz_, cy_, cx_, z0, y0, x0,
                             bz1, by1, bx1)
            lz = _clamp(pz - cz_ * rho, z0, bz1)
            ly = _clamp(py - cy_ * rho, y0, by1)
            lx = _clamp(px - cx_ * rho, x0, bx1)
            res = a_e + gz * lz + gy * ly + gx * lx
            bound2 = wz * (lz - pz) ** 2 + wy * (ly - py) ** 2 + wx * (lx - px) ** 2 \
                + lam * res * res
            if bound2 >= limit2:
                continue
        else:
            bound2 = d2
        # the tangent bound (slack growing as |q - o|^2), where this one did not prune
        tb = _box_tangent_bound(v0, v1, v2, v3, v4, v5, v6, v7, z0, y0, x0, bz1, by1, bx1,
                                pz, py, px, dr, lam, wz, wy, wx)
        if tb >= limit2:
            continue
        bound2 = max(bound2, tb)
        # the centre model's minimiser, then Gauss-Newton steps
        rho = _box_solve(a, gz, gy, gx, pz, py, px, cz_, cy_, cx_, z0, y0, x0, bz1, by1, bx1)
        qz = _clamp(pz - cz_ * rho, z0, bz1)
        qy = _clamp(py - cy_ * rho, y0, by1)
        qx = _clamp(px - cx_ * rho, x0, bx1)
        for it in range(n_iter + 1):
            value, hz, hy, hx = _value_and_gradient(v0, v1, v2, v3, v4, v5, v6, v7,
                                                    (qz - z0) * sz, (qy - y0) * sy,
                                                    (qx - x0) * sx, sz, sy, sx)
            diff = value - dr
            f = wz * (qz - pz) ** 2 + wy * (qy - py) ** 2 + wx * (qx - px) ** 2 \
                + lam * diff * diff
            if f < best2:
                best2 = f
                bz, by, bx = qz, qy, qx
            if it == n_iter:
                break
            a_q = diff - (hz * qz + hy * qy + hx * qx)
            kz_, ky_, kx_ = lam * hz / wz, lam * hy / wy, lam * hx / wx
            rho = _box_solve(a_q, hz, hy, hx, pz, py, px, kz_, ky_, kx_, z0, y0, x0,
                             bz1, by1, bx1)
            nz_ = _clamp(pz - kz_ * rho, z0, bz1)
            ny_ = _clamp(py - ky_ * rho, y0, by1)
            nx_ = _clamp(px - kx_ * rho, x0, bx1)
            step = abs(nz_ - qz) + abs(ny_ - qy) + abs(nx_ - qx)
            qz, qy, qx = nz_, ny_, nx_
            if step < 1e-9:
                break
        # the second-order bound at the last point reached: next to a minimiser it
        # certifies the box without splitting it
        bound2 = max(bound2, _second_order_bound(v0, v1, v2, v3, v4, v5, v6, v7, z0, y0, x0,
                                                 bz1, by1, bx1, qz, qy, qx, pz, py, px, dr,
                                                 lam, wz, wy, wx))
        limit = math.sqrt(best2) - eps
        if depth >= max_depth or limit <= 0.0 or bound2 >= limit * limit:
            continue
        limit2 = limit * limit
        # split in eight: the 3 x 3 x 3 sub-grid values are exact midpoint averages of a
        # trilinear; children that are too far are not pushed, the child nearest p last
        sub[0], sub[2], sub[6], sub[8] = v0, v1, v2, v3
        sub[18], sub[20], sub[24], sub[26] = v4, v5, v6, v7
        for base in (0, 6, 18, 24):
            sub[base + 1] = 0.5 * (sub[base] + sub[base + 2])
        for base in (0, 18):
            for i in range(3):
                sub[base + 3 + i] = 0.5 * (sub[base + i] + sub[base + 6 + i])
        for i in range(9):
            sub[9 + i] = 0.5 * (sub[i] + sub[18 + i])
        mz, my, mx = 0.5 * (z0 + bz1), 0.5 * (y0 + by1), 0.5 * (x0 + bx1)
        near = (4 if pz >= mz else 0) + (2 if py >= my else 0) + (1 if px >= mx else 0)
        for order in range(8):
            child = (7 - order) ^ near
            hz_, hy_, hx_ = (child >> 2) & 1, (child >> 1) & 1, child & 1
            lz0, lz1 = (mz, bz1) if hz_ else (z0, mz)
            ly0, ly1 = (my, by1) if hy_ else (y0, my)
            lx0, lx1 = (mx, bx1) if hx_ else (x0, mx)
            dz = pz - _clamp(pz, lz0, lz1)
            dy = py - _clamp(py, ly0, ly1)
            dx = px - _clamp(px, lx0, lx1)
            if wz * dz * dz + wy * dy * dy + wx * dx * dx >= limit2:
                continue
            stack[top, 0], stack[top, 1], stack[top, 2] = lz0, ly0, lx0
            stack[top, 3], stack[top, 4], stack[top, 5] = lz1, ly1, lx1
            for corner in range(8):
                kz = hz_ + ((corner >> 2) & 1)
                ky = hy_ + ((corner >> 1) & 1)
                kx = hx_ + (corner & 1)
                stack[top, 6 + corner] = sub[kz * 9 + ky * 3 + kx]
            stack[top, 14] = depth + 1.0
            top += 1
    return best2, bz, by, bx


@numba.njit(cache=True, inline="always", fastmath=True)
def _trilinear(dose, qz, qy, qx):
    """Trilinear interpolant of ``dose`` at index position ``q`` (inside the grid)."""
    nz, ny, nx = dose.shape
    iz = min(int(qz), max(nz - 2, 0))
    iy = min(int(qy), max(ny - 2, 0))
    ix = min(int(qx), max(nx - 2, 0))
    z1, y1, x1 = min(iz + 1, nz - 1), min(iy + 1, ny - 1), min(ix + 1, nx - 1)
    tz, ty, tx = qz - iz, qy - iy, qx - ix
    c00 = dose[iz, iy, ix] + (dose[iz, iy, x1] - dose[iz, iy, ix]) * tx
    c01 = dose[iz, y1, ix] + (dose[iz, y1, x1] - dose[iz, y1, ix]) * tx
    c10 = dose[z1, iy, ix] + (dose[z1, iy, x1] - dose[z1, iy, ix]) * tx
    c11 = dose[z1, y1, ix] + (dose[z1, y1, x1] - dose[z1, y1, ix]) * tx
    c0 = c00 + (c01 - c00) * ty
    c1 = c10 + (c11 - c10) * ty
    return c0 + (c1 - c0) * tz


@numba.njit(cache=True, fastmath=True)
def _one_point(dose, lo, hi, pz, py, px, dr, lam, wz, wy, wx, offsets, lb2, best2, bz, by,
               bx, n_iter, max_depth, eps, stack, sub):
    """Squared gamma of one point and where it is attained, from the upper bound
    ``best2`` attained at ``(bz, by, bx)``."""
    nz, ny, nx = dose.shape
    ncz, ncy, ncx = lo.shape
    cz0 = max(min(int(math.floor(pz)), ncz - 1), 0)
    cy0 = max(min(int(math.floor(py)), ncy - 1), 0)
    cx0 = max(min(int(math.floor(px)), ncx - 1), 0)
    # first the cell holding the warm start (most often the minimiser's): a tight bound
    # early prunes the other cells
    wcz = max(min(int(math.floor(bz)), ncz - 1), 0)
    wcy = max(min(int(math.floor(by)), ncy - 1), 0)
    wcx = max(min(int(math.floor(bx)), ncx - 1), 0)
    z1, y1, x1 = min(wcz + 1, nz - 1), min(wcy + 1, ny - 1), min(wcx + 1, nx - 1)
    best2, bz, by, bx = _cell_min(dose, wcz, wcy, wcx, z1, y1, x1, pz, py, px, dr, lam,
                                  wz, wy, wx, best2, n_iter, max_depth, eps, stack, sub,
                                  bz, by, bx)
    for j in range(offsets.shape[0]):
        if lb2[j] >= best2:
            break
        cz = cz0 + offsets[j, 0]
        cy = cy0 + offsets[j, 1]
        cx = cx0 + offsets[j, 2]
        if cz < 0 or cy < 0 or cx < 0 or cz >= ncz or cy >= ncy or cx >= ncx:
            continue
        if cz == wcz and cy == wcy and cx == wcx:
            continue
        z1, y1, x1 = min(cz + 1, nz - 1), min(cy + 1, ny - 1), min(cx + 1, nx - 1)
        qz = _clamp(pz, float(cz), float(z1))
        qy = _clamp(py, float(cy), float(y1))
        qx = _clamp(px, float(cx), float(x1))
        d2 = wz * (qz - pz) ** 2 + wy * (qy - py) ** 2 + wx * (qx - px) ** 2
        if d2 >= best2:
            continue
        gap = max(lo[cz, cy, cx] - dr, dr - hi[cz, cy, cx], 0.0)
        if d2 + lam * gap * gap >= best2:
            continue
        best2, bz, by, bx = _cell_min(dose, cz, cy, cx, z1, y1, x1, pz, py, px, dr, lam,
                                      wz, wy, wx, best2, n_iter, max_depth, eps, stack, sub,
                                      bz, by, bx)
    return best2, bz, by, bx


@numba.njit(parallel=True, cache=True, fastmath=True)
def search_points(dose, lo, hi, ref_idx, ref_dose, inv_dd, spacing, dta_mm, max_gamma,
                  offsets, lb_mm, n_iter, max_depth, eps):
    """Gamma per point (capped at ``max_gamma``).

    ``dose`` (Z, Y, X) evaluated dose; ``lo``/``hi`` its :func:`cell_bounds`; ``ref_idx``
    (N, 3) reference points in the evaluated index frame (inside the grid); ``ref_dose``
    and ``inv_dd`` (N,) reference dose and 1 / dD per point (Gy, 1/Gy); ``spacing`` (3,)
    mm; ``offsets``/``lb_mm`` from :func:`cell_offsets`; ``n_iter`` Gauss-Newton steps
    per box, ``max_depth`` halvings of a cell, ``eps`` the gamma tolerance of the bounds.
    """
    n = ref_idx.shape[0]
    out = np.empty(n)
    wz = (spacing[0] / dta_mm) ** 2
    wy = (spacing[1] / dta_mm) ** 2
    wx = (spacing[2] / dta_mm) ** 2
    lb2 = (lb_mm / dta_mm) ** 2
    max2 = max_gamma * max_gamma
    nz, ny, nx = dose.shape
    # contiguous runs of RUN points (neighbours: warm start), runs spread over the threads
    # in a scrambled order (failing points cluster in space)
    n_runs = (n + _RUN - 1) // _RUN
    run_order = np.argsort((np.arange(n_runs) * 0.6180339887498949) % 1.0)
    for i in numba.prange(n_runs):
        r = run_order[i]
        stack = np.empty((7 * max_depth + 1, 15))
        sub = np.empty(27)
        oz, oy, ox = 0.0, 0.0, 0.0  # previous point's optimal offset
        for p in range(r * _RUN, min(n, (r + 1) * _RUN)):
            dr = ref_dose[p]
            lam = inv_dd[p] * inv_dd[p]
            pz, py, px = ref_idx[p, 0], ref_idx[p, 1], ref_idx[p, 2]
            # upper bounds attained at real positions: p itself, and p + the previous
            # point's optimal offset (neighbouring points have nearly the same minimiser)
            best2, bz, by, bx = max2, pz, py, px
            f = lam * (_trilinear(dose, pz, py, px) - dr) ** 2
            if f < best2:
                best2 = f
            qz = _clamp(pz + oz, 0.0, nz - 1.0)
            qy = _clamp(py + oy, 0.0, ny - 1.0)
            qx = _clamp(px + ox, 0.0, nx - 1.0)
            diff = _trilinear(dose, qz, qy, qx) - dr
            f = wz * (qz - pz) ** 2 + wy * (qy - py) ** 2 + wx * (qx - px) ** 2 \
                + lam * diff * diff
            if f < best2:
                best2, bz, by, bx = f, qz, qy, qx
            g2, bz, by, bx = _one_point(dose, lo, hi, pz, py, px, dr, lam, wz, wy, wx,
                                        offsets, lb2, best2, bz, by, bx, n_iter, max_depth,
                                        eps, stack, sub)
            oz, oy, ox = bz - pz, by - py, bx - px
            out[p] = min(math.sqrt(g2), max_gamma)
    return out
