"""Compiled per-point gamma search (numba, all cores); same algorithm as the torch path.

Private module of :mod:`checks.gamma`, used on CPU when numba is installed. Each point
scans the distance-sorted lattice with early exit, then refines its best offset (see
:mod:`checks._gamma_search` for the algorithm). Importing this module compiles nothing;
the first call compiles and caches the kernel.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["search_points"]


@numba.njit(cache=True, fastmath=False)
def _interp(dose, nz, ny, nx, cz, cy, cx, want_grad):  # noqa: PLR0913
    eps = 1e-6
    if (cz < -eps or cy < -eps or cx < -eps or cz > nz - 1 + eps or cy > ny - 1 + eps
            or cx > nx - 1 + eps):
        return math.inf, 0.0, 0.0, 0.0
    cz = min(max(cz, 0.0), nz - 1.0)
    cy = min(max(cy, 0.0), ny - 1.0)
    cx = min(max(cx, 0.0), nx - 1.0)
    iz = min(int(math.floor(cz)), max(nz - 2, 0))
    iy = min(int(math.floor(cy)), max(ny - 2, 0))
    ix = min(int(math.floor(cx)), max(nx - 2, 0))
    tz, ty, tx = cz - iz, cy - iy, cx - ix
    jz = iz + 1 if iz + 1 < nz else iz
    jy = iy + 1 if iy + 1 < ny else iy
    jx = ix + 1 if ix + 1 < nx else ix
    c000 = dose[iz, iy, ix]
    c001 = dose[iz, iy, jx]
    c010 = dose[iz, jy, ix]
    c011 = dose[iz, jy, jx]
    c100 = dose[jz, iy, ix]
    c101 = dose[jz, iy, jx]
    c110 = dose[jz, jy, ix]
    c111 = dose[jz, jy, jx]
    c00 = c000 + (c001 - c000) * tx
    c01 = c010 + (c011 - c010) * tx
    c10 = c100 + (c101 - c100) * tx
    c11 = c110 + (c111 - c110) * tx
    c0 = c00 + (c01 - c00) * ty
    c1 = c10 + (c11 - c10) * ty
    value = c0 + (c1 - c0) * tz
    if not want_grad:
        return value, 0.0, 0.0, 0.0
    gz = c1 - c0
    gy = (c01 - c00) + ((c11 - c10) - (c01 - c00)) * tz
    dx0 = (c001 - c000) + ((c011 - c010) - (c001 - c000)) * ty
    dx1 = (c101 - c100) + ((c111 - c110) - (c101 - c100)) * ty
    gx = dx0 + (dx1 - dx0) * tz
    return value, gz, gy, gx


@numba.njit(cache=True)
def _g2(dose, shape, rz, ry, rx, dr, inv_dd, inv_dta, m, oz, oy, ox):
    cz = rz + oz * m[0, 0] + oy * m[1, 0] + ox * m[2, 0]
    cy = ry + oz * m[0, 1] + oy * m[1, 1] + ox * m[2, 1]
    cx = rx + oz * m[0, 2] + oy * m[1, 2] + ox * m[2, 2]
    v, _, _, _ = _interp(dose, shape[0], shape[1], shape[2], cz, cy, cx, False)
    diff = (v - dr) * inv_dd
    return (oz * oz + oy * oy + ox * ox) * inv_dta * inv_dta + diff * diff


@numba.njit(cache=True)
def _gauss_newton(dose, shape, rz, ry, rx, dr, idd, dta_mm, m, best2, bz, by, bx):
    """One Gauss-Newton step on the linearised dose; returns the (possibly) better offset."""
    cz = rz + bz * m[0, 0] + by * m[1, 0] + bx * m[2, 0]
    cy = ry + bz * m[0, 1] + by * m[1, 1] + bx * m[2, 1]
    cx = rx + bz * m[0, 2] + by * m[1, 2] + bx * m[2, 2]
    v, iz_, iy_, ix_ = _interp(dose, shape[0], shape[1], shape[2], cz, cy, cx, True)
    if not math.isfinite(v):
        return best2, bz, by, bx
    gz = m[0, 0] * iz_ + m[0, 1] * iy_ + m[0, 2] * ix_
    gy = m[1, 0] * iz_ + m[1, 1] * iy_ + m[1, 2] * ix_
    gx = m[2, 0] * iz_ + m[2, 1] * iy_ + m[2, 2] * ix_
    a = v - (gz * bz + gy * by + gx * bx) - dr
    big_a = dta_mm * dta_mm
    big_b = 1.0 / (idd * idd)
    scale = -a * big_a / (big_b + big_a * (gz * gz + gy * gy + gx * gx))
    nz_, ny_, nx_ = scale * gz, scale * gy, scale * gx
    inv_dta = 1.0 / dta_mm
    rz_, ry_, rx_ = bz, by, bx
    for frac in (1.0, 0.5):
        tz = rz_ + frac * (nz_ - rz_)
        ty = ry_ + frac * (ny_ - ry_)
        tx = rx_ + frac * (nx_ - rx_)
        g2 = _g2(dose, shape, rz, ry, rx, dr, idd, inv_dta, m, tz, ty, tx)
        if g2 < best2:
            best2, bz, by, bx = g2, tz, ty, tx
    return best2, bz, by, bx


@numba.njit(cache=True)
def _refine(dose, shape, rz, ry, rx, dr, idd, dta_mm, m, best2, bz, by, bx, step_mm, pattern,
            n_levels, max_moves):
    """Gauss-Newton steps and a shrinking 26-neighbour pattern search from one offset."""
    inv_dta = 1.0 / dta_mm
    best2, bz, by, bx = _gauss_newton(dose, shape, rz, ry, rx, dr, idd, dta_mm, m,
                                      best2, bz, by, bx)
    best2, bz, by, bx = _gauss_newton(dose, shape, rz, ry, rx, dr, idd, dta_mm, m,
                                      best2, bz, by, bx)
    h = step_mm / 2.0
    for _ in range(n_levels):
        for _rep in range(max_moves):
            improved = False
            cz0, cy0, cx0 = bz, by, bx
            for q in range(pattern.shape[0]):
                tz = cz0 + h * pattern[q, 0]
                ty = cy0 + h * pattern[q, 1]
                tx = cx0 + h * pattern[q, 2]
                g2 = _g2(dose, shape, rz, ry, rx, dr, idd, inv_dta, m, tz, ty, tx)
                if g2 < best2:
                    best2 = g2
                    bz, by, bx = tz, ty, tx
                    improved = True
            best2, bz, by, bx = _gauss_newton(dose, shape, rz, ry, rx, dr, idd, dta_mm,
                                              m, best2, bz, by, bx)
            if not improved:
                break
        h *= 0.5
    return best2, bz, by, bx


@numba.njit(parallel=True, cache=True)
def search_points(dose, ref_idx, ref_dose, inv_dd, m, offsets, dist, dta_mm, max_gamma,
                  step_mm, refine, pattern, n_levels, max_moves, n_starts, band):
    """Gamma per point, capped at ``max_gamma``. ``m``: mm -> index-delta (row vectors)."""
    n = ref_idx.shape[0]
    out = np.empty(n)
    shape = np.array(dose.shape)
    inv_dta = 1.0 / dta_mm
    margin = step_mm * math.sqrt(3.0) / 2.0 * inv_dta
    n_off = offsets.shape[0]
    limit2 = (max_gamma + step_mm * inv_dta) ** 2
    for p in numba.prange(n):
        rz, ry, rx = ref_idx[p, 0], ref_idx[p, 1], ref_idx[p, 2]
        dr, idd = ref_dose[p], inv_dd[p]
        # the n_starts best lattice offsets, ascending (a narrow basin may hide behind the
        # best lattice value, so each is refined)
        top2 = np.full(n_starts, math.inf)
        topk = np.zeros(n_starts, dtype=np.int64)
        for k in range(n_off):
            if math.sqrt(top2[0]) + margin <= dist[k] or dist[k] > max_gamma + margin:
                break
            g2 = _g2(dose, shape, rz, ry, rx, dr, idd, inv_dta, m,
                     offsets[k, 0], offsets[k, 1], offsets[k, 2])
            if g2 < top2[n_starts - 1]:
                j = n_starts - 1
                while j > 0 and top2[j - 1] > g2:
                    top2[j] = top2[j - 1]
                    topk[j] = topk[j - 1]
                    j -= 1
                top2[j] = g2
                topk[j] = k
        best2 = top2[0]
        if refine and best2 < limit2:
            # cheap Gauss-Newton descent from every start; the full refinement (pattern
            # search) then runs from the best of them and from any within ``band`` (gamma)
            cand = np.full((n_starts, 4), math.inf)
            for s_ in range(n_starts):
                if not math.isfinite(top2[s_]):
                    break
                k = topk[s_]
                g2, tz, ty, tx = top2[s_], offsets[k, 0], offsets[k, 1], offsets[k, 2]
                for _ in range(3):
                    g2, tz, ty, tx = _gauss_newton(dose, shape, rz, ry, rx, dr, idd, dta_mm,
                                                   m, g2, tz, ty, tx)
                cand[s_, 0], cand[s_, 1], cand[s_, 2], cand[s_, 3] = g2, tz, ty, tx
            order = np.argsort(cand[:, 0])
            first = math.sqrt(cand[order[0], 0])
            for j in range(n_starts):
                c = order[j]
                if not math.isfinite(cand[c, 0]):
                    break
                if j > 0 and math.sqrt(cand[c, 0]) > min(first, math.sqrt(best2)) + band:
                    break
                g2, _, _, _ = _refine(dose, shape, rz, ry, rx, dr, idd, dta_mm, m, cand[c, 0],
                                      cand[c, 1], cand[c, 2], cand[c, 3], step_mm, pattern,
                                      n_levels, max_moves)
                best2 = min(best2, g2)
        out[p] = min(math.sqrt(best2), max_gamma)
    return out
