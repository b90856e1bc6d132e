"""Gaussian smoothing of float32 volumes with zeros outside (numba), the numbers of SciPy.

:func:`gaussian_filter_zero` returns what ``scipy.ndimage.gaussian_filter(volume, sigma,
mode="constant", cval=0.0, truncate=truncate)`` returns for a float32 (Z, Y, X) array, bit
for bit: the same kernel (SciPy's ``_gaussian_kernel1d`` formula: ``exp(-x^2 / (2 sigma^2))``
on ``x = -r..r``, ``r = int(truncate * sigma + 0.5)``, divided by its sum), the same
summation order as SciPy's symmetric correlation (``NI_Correlate1D``: centre tap first,
then the pairs ``(f[x - j] + f[x + j]) * w_j`` from the outermost ``j = r`` inwards, in
float64), the result rounded to float32 after each axis, axes 0, 1, 2 in turn, and axes
whose sigma is not above 1e-15 skipped. Tests compare both on random and binary volumes.

It is faster on the masks of :mod:`checks._surface_mesh` and :mod:`checks._apl` because each
pass works on whole contiguous rows (vectorised by the compiler) and skips the rows whose
every input is zero (their output is zero), which is most of a mask's bounding box far from
its boundary on the first passes.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["gaussian_filter_zero", "gaussian_kernel"]


def gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """SciPy's normalised 1-D Gaussian weights on ``-r..r`` (``r = int(truncate * sigma +
    0.5)``), computed with the same NumPy operations so that the values are identical."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    return phi / phi.sum()


def gaussian_filter_zero(volume: np.ndarray, sigma_voxels, truncate: float = 3.0
                         ) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(volume, sigma_voxels, mode="constant", cval=0.0,
    truncate=truncate)`` of a float32 (Z, Y, X) array, same values (float32).

    ``sigma_voxels``: one sigma or one per axis, in voxels. Returns a new array.
    """
    data = np.ascontiguousarray(volume)
    if data.dtype != np.float32 or data.ndim != 3:
        raise ValueError(f"expected a 3-D float32 array, got {data.ndim}-D {data.dtype}")
    sigmas = np.broadcast_to(np.asarray(sigma_voxels, dtype=float), (3,))
    if not np.any(sigmas > 1e-15):
        return data.copy()
    rows = _busy_rows(data)
    out = data
    for axis, sigma in enumerate(sigmas):
        if not sigma > 1e-15:
            continue
        # correlation weights are the kernel reversed (SciPy), symmetric: w[r + j] = w[r - j]
        weights = gaussian_kernel(float(sigma), truncate)[::-1].copy()
        out, rows = _PASSES[axis](out, weights, rows)
    return out


@numba.njit(cache=True, nogil=True)
def _busy_rows(a):
    """(Z, 2) int: per plane i, the rows [lo, hi) outside which a[i] is zero (lo >= hi:
    the plane is zero)."""
    nz, ny, nx = a.shape
    rows = np.zeros((nz, 2), np.int64)
    for i in range(nz):
        lo, hi = ny, 0
        for j in range(ny):
            for k in range(nx):
                if a[i, j, k] != 0:
                    lo = min(lo, j)
                    hi = j + 1
                    break
        rows[i, 0], rows[i, 1] = lo, hi
    return rows


@numba.njit(cache=True, nogil=True)
def _scale(acc, row, w):
    """acc = row * w (row float32 or float64, widened first)."""
    for k in range(acc.shape[0]):
        acc[k] = np.float64(row[k]) * w


@numba.njit(cache=True, nogil=True)
def _add_pair(acc, lo_row, hi_row, w):
    """acc += (lo + hi) * w, element-wise, in float64 (SciPy's order)."""
    for k in range(acc.shape[0]):
        acc[k] += (np.float64(lo_row[k]) + np.float64(hi_row[k])) * w


@numba.njit(cache=True, nogil=True)
def _add_one(acc, row, w):
    """acc += (row + 0) * w: the pair's other side is outside the array (SciPy's cval)."""
    for k in range(acc.shape[0]):
        acc[k] += (np.float64(row[k]) + 0.0) * w


@numba.njit(cache=True, nogil=True)
def _add_none(acc, w):
    """acc += (0 + 0) * w: both sides outside the array."""
    for k in range(acc.shape[0]):
        acc[k] += 0.0 * w


@numba.njit(cache=True, nogil=True)
def _store(out, acc):
    for k in range(out.shape[0]):
        out[k] = np.float32(acc[k])


@numba.njit(cache=True, nogil=True)
def _rows_of(flat, plane, lo, hi, ny, nx):
    """Rows [lo, hi) of a plane of a flattened (Z, Y, X) array: one contiguous run."""
    return flat[(plane * ny + lo) * nx:(plane * ny + hi) * nx]


@numba.njit(cache=True, nogil=True)
def _pass_axis0(a, w, rows):
    """Along axis 0, plane by plane, on the flat run of rows that can be non-zero."""
    nz, ny, nx = a.shape
    r = (w.shape[0] - 1) // 2
    flat = a.reshape(nz * ny * nx)
    out = np.zeros(nz * ny * nx, np.float32)
    out_rows = np.zeros((nz, 2), np.int64)
    acc = np.empty(ny * nx)
    for i in range(nz):
        lo, hi = ny, 0
        for s in range(max(i - r, 0), min(i + r, nz - 1) + 1):
            if rows[s, 0] < rows[s, 1]:
                lo = min(lo, rows[s, 0])
                hi = max(hi, rows[s, 1])
        out_rows[i, 0], out_rows[i, 1] = lo, hi
        if lo >= hi:
            continue
        run = acc[:(hi - lo) * nx]
        _scale(run, _rows_of(flat, i, lo, hi, ny, nx), w[r])
        for t in range(r, 0, -1):
            if i - t >= 0 and i + t < nz:
                _add_pair(run, _rows_of(flat, i - t, lo, hi, ny, nx),
                          _rows_of(flat, i + t, lo, hi, ny, nx), w[r - t])
            elif i - t >= 0:
                _add_one(run, _rows_of(flat, i - t, lo, hi, ny, nx), w[r - t])
            elif i + t < nz:
                _add_one(run, _rows_of(flat, i + t, lo, hi, ny, nx), w[r - t])
            else:
                _add_none(run, w[r - t])
        _store(_rows_of(out, i, lo, hi, ny, nx), run)
    return out.reshape((nz, ny, nx)), out_rows


@numba.njit(cache=True, nogil=True)
def _pass_axis1(a, w, rows):
    """Along axis 1: a shift of t rows is a shift of t * X in the flat plane, so each tap
    is one contiguous run per zone (both rows inside, only one, neither)."""
    nz, ny, nx = a.shape
    r = (w.shape[0] - 1) // 2
    flat = a.reshape(nz * ny * nx)
    out = np.zeros(nz * ny * nx, np.float32)
    out_rows = np.zeros((nz, 2), np.int64)
    acc = np.empty(ny * nx)
    for i in range(nz):
        if rows[i, 0] >= rows[i, 1]:
            out_rows[i, 0], out_rows[i, 1] = ny, 0
            continue
        lo, hi = max(rows[i, 0] - r, 0), min(rows[i, 1] + r, ny)
        out_rows[i, 0], out_rows[i, 1] = lo, hi
        base = i * ny * nx
        _scale(acc[lo * nx:hi * nx], flat[base + lo * nx:base + hi * nx], w[r])
        for t in range(r, 0, -1):
            wt = w[r - t]
            # output rows j in [lo, hi): j - t inside iff j >= t, j + t inside iff j < ny - t
            j0, j1 = lo, hi
            both_lo, both_hi = max(j0, t), min(j1, ny - t)
            if both_lo < both_hi:
                _add_pair(acc[both_lo * nx:both_hi * nx],
                          flat[base + (both_lo - t) * nx:base + (both_hi - t) * nx],
                          flat[base + (both_lo + t) * nx:base + (both_hi + t) * nx], wt)
            for j in range(j0, j1):  # rows with a side outside the plane (at most 2t)
                if both_lo <= j < both_hi:
                    continue
                row = acc[j * nx:(j + 1) * nx]
                if j - t >= 0:
                    _add_one(row, flat[base + (j - t) * nx:base + (j - t + 1) * nx], wt)
                elif j + t < ny:
                    _add_one(row, flat[base + (j + t) * nx:base + (j + t + 1) * nx], wt)
                else:
                    _add_none(row, wt)
        _store(out[base + lo * nx:base + hi * nx], acc[lo * nx:hi * nx])
    return out.reshape((nz, ny, nx)), out_rows


@numba.njit(cache=True, nogil=True)
def _pass_axis2(a, w, rows):
    """Along axis 2 (contiguous), plane by plane: the plane's rows are copied in float64
    into a buffer with r zeros (SciPy's cval) after each row, so that a shift of t < r + 1
    columns never reads into the next row and each tap is one contiguous run."""
    nz, ny, nx = a.shape
    r = (w.shape[0] - 1) // 2
    width = nx + r  # row and its r zeros; the first row's left zeros are the buffer's head
    out = np.zeros((nz, ny, nx), np.float32)
    buf = np.zeros(r + ny * width + r)
    acc = np.empty(ny * width)
    for i in range(nz):
        lo, hi = rows[i, 0], rows[i, 1]
        if lo >= hi:
            continue
        for j in range(lo, hi):
            row = a[i, j]
            start = r + j * width
            for k in range(nx):
                buf[start + k] = np.float64(row[k])
        first, last = r + lo * width, r + hi * width  # buffer positions of the rows
        run = acc[:last - first]
        _scale(run, buf[first:last], w[r])
        for t in range(r, 0, -1):
            _add_pair(run, buf[first - t:last - t], buf[first + t:last + t], w[r - t])
        for j in range(lo, hi):
            _store(out[i, j], run[(j - lo) * width:(j - lo) * width + nx])
    return out, rows


_PASSES = (_pass_axis0, _pass_axis1, _pass_axis2)
