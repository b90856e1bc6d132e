"""Compiled helper of :func:`checks.segmentation.compare_masks`: which z planes of two
whole-grid boolean masks hold a voxel, reading both masks once, eight voxels at a time.

Cropping CT-sized masks (e.g. 160 x 512 x 512) to the structure is the first step of every
comparison; NumPy's ``any`` over the (y, x) axes and over z read each mask twice.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["planes_touched"]


def planes_touched(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(Z,) bool: plane z of ``first | second`` holds a True voxel.

    Two C-contiguous boolean (Z, Y, X) arrays of one shape; when a plane's byte size is a
    multiple of 8 the planes are read as 64-bit words, otherwise NumPy is used.
    """
    nz, ny, nx = first.shape
    if (first.flags.c_contiguous and second.flags.c_contiguous and first.dtype == bool
            and second.dtype == bool and (ny * nx) % 8 == 0 and first.size):
        return _planes_touched(first.reshape(-1).view(np.uint64),
                               second.reshape(-1).view(np.uint64), nz, ny * nx // 8)
    return first.any(axis=(1, 2)) | second.any(axis=(1, 2))


@numba.njit(cache=True, nogil=True)
def _planes_touched(words_a, words_b, nz, per_plane):
    out = np.zeros(nz, np.bool_)
    for i in range(nz):
        seen = np.uint64(0)
        for k in range(i * per_plane, (i + 1) * per_plane):
            seen |= words_a[k] | words_b[k]
        out[i] = seen != 0
    return out
