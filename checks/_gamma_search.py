"""The torch gamma search (CUDA when present, CPU without numba): distance-sorted lattice
search with early exit, then refinement.

Private module of :mod:`checks.gamma`. Everything here works on torch tensors of the points
to evaluate (already selected by cutoff, ROI and grid tests) and the evaluated dose array;
the public wrapper does validation, geometry and bookkeeping. The CPU default is the
compiled cell-wise branch and bound of :mod:`checks._gamma_cells` (certified within 0.005);
this vectorised path is the one that runs on a GPU and agrees with it to 2e-3 in the tests.

Algorithm (per criterion)
-------------------------
In scaled coordinates ``u = offset_mm / DTA`` the function to minimise for a reference
point r is ``g(u)^2 = |u|^2 + ((De(r + DTA u) - Dr) / dD)^2`` with ``De`` the trilinear
interpolant of the evaluated dose; offsets whose position falls outside the evaluated grid
are not candidates.

1. Coarse search: offsets on a cubic lattice of step ``h`` (mm) inside the ball of radius
   ``max_gamma * DTA``, sorted by distance and taken in batches. A point leaves the search
   when the next batch starts farther than its best value plus the lattice half-diagonal
   ``m = h sqrt(3) / 2 / DTA``: no lattice point that could seed a better basin is left.
2. Refinement from each of the ``N_STARTS`` best lattice offsets (a basin narrower than
   the lattice, e.g. 1 %/1 mm or local gamma in steep gradients, can hide behind the best
   lattice value): two Gauss-Newton steps on the linearised dose
   (closed-form minimum of ``|u|^2 + (a + G.u)^2``), then at each of ``PATTERN_LEVELS``
   steps ``h / 2, h / 4, ...`` a pattern search over the 26 neighbours followed by a
   Gauss-Newton step. A candidate replaces the current one only when its *true* value
   (re-interpolated) is lower, so every reported gamma is attained at a real position: the
   result is an upper bound of the exact minimum, and never above the coarse lattice value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: The 26 neighbour directions of the pattern search, and how many halvings it does.
PATTERN = np.array([p for p in np.stack(np.meshgrid(*[[-1.0, 0.0, 1.0]] * 3, indexing="ij"),
                                        -1).reshape(-1, 3) if np.any(p)])
PATTERN_LEVELS = 4
PATTERN_MOVES = 1
#: Lattice minima refined per point (a narrow basin can hide behind the best lattice value).
N_STARTS = 6
_BATCH_OFFSETS = 48
_CHUNK_WORK = 1 << 22  # points x offsets interpolated at once (bounds temporary memory)


@dataclass(frozen=True)
class EvalGrid:
    """The evaluated dose as a torch tensor with the mm -> index-delta map."""

    dose: torch.Tensor  # (Z, Y, X) float, on the device
    shape: tuple[int, int, int]
    mm_to_index: torch.Tensor  # (3, 3): index delta = offset_mm @ mm_to_index


def pick_device(device: str | None) -> torch.device:
    """``None``: CUDA when available, else CPU; otherwise the named device."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def lattice_offsets_mm(step_mm: float, radius_mm: float) -> np.ndarray:
    """Offsets of a cubic lattice of ``step_mm`` within ``radius_mm``, sorted by length."""
    n = int(math.floor(radius_mm / step_mm + 1e-9))
    ax = np.arange(-n, n + 1, dtype=np.float64) * step_mm
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)
    dist = np.linalg.norm(grid, axis=1)
    keep = dist <= radius_mm + 1e-9
    grid, dist = grid[keep], dist[keep]
    order = np.lexsort((grid[:, 2], grid[:, 1], grid[:, 0], dist))
    return grid[order]


def interpolate(grid: EvalGrid, coords: torch.Tensor, *, gradient: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Trilinear value (and index-space gradient) of the evaluated dose at ``coords``.

    ``coords`` (..., 3) are fractional (z, y, x) indices. Positions outside
    ``[0, n - 1]`` on any axis give ``inf`` (not a candidate).
    """
    nz, ny, nx = grid.shape
    upper = torch.tensor([nz - 1, ny - 1, nx - 1], dtype=coords.dtype, device=coords.device)
    eps = 1e-6
    inside = ((coords >= -eps) & (coords <= upper + eps)).all(dim=-1)
    c = torch.minimum(torch.clamp(coords, min=0.0), upper)
    cell_max = torch.clamp(upper - 1, min=0)
    i0f = torch.minimum(torch.floor(c), cell_max)
    t = c - i0f
    i0 = i0f.to(torch.int64)
    iz, iy, ix = i0.unbind(-1)
    one = torch.ones_like(iz)
    dz = torch.where(iz + 1 < nz, one, 0)
    dy = torch.where(iy + 1 < ny, one, 0) * nx
    dx = torch.where(ix + 1 < nx, one, 0)
    base = (iz * ny + iy) * nx + ix
    flat = grid.dose.reshape(-1)
    tz, ty, tx = t.unbind(-1)
    c000 = flat[base]
    c001 = flat[base + dx]
    c010 = flat[base + dy]
    c011 = flat[base + dy + dx]
    dzs = dz * ny * nx
    c100 = flat[base + dzs]
    c101 = flat[base + dzs + dx]
    c110 = flat[base + dzs + dy]
    c111 = flat[base + dzs + dy + dx]
    c00 = c000 + (c001 - c000) * tx
    c01 = c010 + (c011 - c010) * tx
    c10 = c100 + (c101 - c100) * tx
    c11 = c110 + (c111 - c110) * tx
    c0 = c00 + (c01 - c00) * ty
    c1 = c10 + (c11 - c10) * ty
    value = c0 + (c1 - c0) * tz
    value = torch.where(inside, value, torch.full_like(value, math.inf))
    if not gradient:
        return value, None
    g_z = c1 - c0
    g_y = (c01 - c00) + ((c11 - c10) - (c01 - c00)) * tz
    d_x0 = (c001 - c000) + ((c011 - c010) - (c001 - c000)) * ty
    d_x1 = (c101 - c100) + ((c111 - c110) - (c101 - c100)) * ty
    g_x = d_x0 + (d_x1 - d_x0) * tz
    grad = torch.stack([g_z, g_y, g_x], dim=-1)
    return value, torch.where(inside[..., None], grad, torch.zeros_like(grad))


def _gamma2(grid: EvalGrid, ref_idx: torch.Tensor, ref_dose: torch.Tensor,
            inv_dd: torch.Tensor, inv_dta: float, off_mm: torch.Tensor) -> torch.Tensor:
    """Squared gamma at offsets ``off_mm`` (N, K, 3) or (K, 3) from each point (N)."""
    idx_off = off_mm @ grid.mm_to_index
    if off_mm.dim() == 2:
        coords = ref_idx[:, None, :] + idx_off[None, :, :]
        dist2 = (off_mm * off_mm).sum(-1)[None, :] * inv_dta**2
    else:
        coords = ref_idx[:, None, :] + idx_off
        dist2 = (off_mm * off_mm).sum(-1) * inv_dta**2
    value, _ = interpolate(grid, coords)
    diff = (value - ref_dose[:, None]) * inv_dd[:, None]
    return dist2 + diff * diff


def coarse_search(grid: EvalGrid, ref_idx: torch.Tensor, ref_dose: torch.Tensor,
                  inv_dd: torch.Tensor, dta_mm: float, max_gamma: float, step_mm: float,
                  n_starts: int = N_STARTS) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n_starts`` best squared gammas (ascending) and lattice offsets (mm) per point."""
    device, dtype = ref_idx.device, ref_idx.dtype
    margin = step_mm * math.sqrt(3.0) / 2.0 / dta_mm
    offsets = torch.as_tensor(lattice_offsets_mm(step_mm, max_gamma * dta_mm + step_mm),
                              dtype=dtype, device=device)
    dist = torch.linalg.vector_norm(offsets, dim=1) / dta_mm
    n = ref_idx.shape[0]
    best2 = torch.full((n, n_starts), math.inf, dtype=dtype, device=device)
    best_off = torch.zeros((n, n_starts, 3), dtype=dtype, device=device)
    active = torch.arange(n, device=device)
    inv_dta = 1.0 / dta_mm
    start = 0
    n_off = offsets.shape[0]
    while start < n_off and active.numel():
        # few active points: larger batches (less Python overhead per interpolated point)
        batch_size = min(4096, max(_BATCH_OFFSETS, _CHUNK_WORK // (8 * active.numel())))
        stop = min(start + batch_size, n_off)
        batch = offsets[start:stop]
        rows = max(1, _CHUNK_WORK // batch.shape[0])
        for a0 in range(0, active.numel(), rows):
            sel = active[a0:a0 + rows]
            g2 = _gamma2(grid, ref_idx[sel], ref_dose[sel], inv_dd[sel], inv_dta, batch)
            vals = torch.cat([best2[sel], g2], dim=1)
            offs = torch.cat([best_off[sel], batch[None].expand(sel.numel(), -1, -1)], dim=1)
            top, arg = torch.topk(vals, n_starts, dim=1, largest=False, sorted=True)
            best2[sel] = top
            best_off[sel] = torch.gather(offs, 1, arg[..., None].expand(-1, -1, 3))
        start = stop
        if start >= n_off:
            break
        next_dist = float(dist[start])
        if next_dist > max_gamma + margin:
            break
        # keep searching while a lattice point at least as near as the next one may seed a
        # better basin: next distance < sqrt(best) + margin
        keep = torch.sqrt(best2[active, 0]) + margin > next_dist
        active = active[keep]
    return best2, best_off


def refine(grid: EvalGrid, ref_idx: torch.Tensor, ref_dose: torch.Tensor,
           inv_dd: torch.Tensor, dta_mm: float, step_mm: float,
           best2: torch.Tensor, best_off: torch.Tensor) -> torch.Tensor:
    """Lower ``best2`` in place by local minimisation around ``best_off`` (see module doc)."""
    inv_dta = 1.0 / dta_mm
    dtype, device = ref_idx.dtype, ref_idx.device

    def try_candidates(cand: torch.Tensor) -> None:
        g2 = _gamma2(grid, ref_idx, ref_dose, inv_dd, inv_dta, cand)
        val, arg = g2.min(dim=1)
        better = val < best2
        best2[better] = val[better]
        best_off[better] = cand[better, arg[better]]

    def gauss_newton() -> None:
        coords = ref_idx + best_off @ grid.mm_to_index
        value, grad_idx = interpolate(grid, coords, gradient=True)
        grad_mm = grad_idx @ grid.mm_to_index.T  # dDose/dmm
        # linear model: De(o') = value + g.(o' - o); minimise |o'|^2/A + (a + g.o')^2/B
        a = value - (grad_mm * best_off).sum(-1) - ref_dose
        big_a = dta_mm**2
        big_b = 1.0 / (inv_dd * inv_dd)
        denom = big_b + big_a * (grad_mm * grad_mm).sum(-1)
        new = -(a * big_a / denom)[:, None] * grad_mm
        new = torch.where(torch.isfinite(new), new, best_off)
        halfway = 0.5 * (new + best_off)
        try_candidates(torch.stack([new, halfway], dim=1))

    gauss_newton()
    gauss_newton()
    pattern = torch.as_tensor(PATTERN, dtype=dtype, device=device)
    h = step_mm / 2.0
    for _ in range(PATTERN_LEVELS):
        try_candidates(best_off[:, None, :] + h * pattern[None, :, :])
        gauss_newton()
        h /= 2.0
    return best2


def search(grid: EvalGrid, ref_idx: torch.Tensor, ref_dose: torch.Tensor,
           inv_dd: torch.Tensor, dta_mm: float, max_gamma: float, step_mm: float,
           *, n_starts: int = N_STARTS) -> torch.Tensor:
    """Gamma per point, capped at ``max_gamma``."""
    top2, top_off = coarse_search(grid, ref_idx, ref_dose, inv_dd, dta_mm, max_gamma,
                                  step_mm, n_starts)
    best2 = top2[:, 0].clone()
    limit = (max_gamma + step_mm / dta_mm) ** 2
    todo = torch.nonzero(best2 < limit).flatten()
    rows = max(1, _CHUNK_WORK // 64)
    for a0 in range(0, todo.numel(), rows):
        sel = todo[a0:a0 + rows]
        for k in range(n_starts):
            b2 = top2[sel, k].clone()
            finite = torch.isfinite(b2)
            if not bool(finite.any()):
                break
            bo = top_off[sel, k].clone()
            refine(grid, ref_idx[sel], ref_dose[sel], inv_dd[sel], dta_mm, step_mm, b2, bo)
            best2[sel] = torch.minimum(best2[sel], torch.where(finite, b2, best2[sel]))
    return torch.clamp(torch.sqrt(best2), max=max_gamma)
