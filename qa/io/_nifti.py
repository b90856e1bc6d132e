"""Work-around for ITK's NIfTI reader zeroing NaN and ±inf voxels.

ITK 5.x (hence SimpleITK 2.5) reads a NIfTI float image with every non-finite voxel
replaced by 0, silently (niftilib's ``nifti_read_buffer``; fixed for ITK 6 by
InsightSoftwareConsortium/ITK pull request 6683). The bytes on disk are right, so for float
NIfTI files we read the voxel payload directly and put the non-finite values back, keeping
everything else (geometry, scaling) from SimpleITK.

Header layout: NIfTI-1 (https://nifti.nimh.nih.gov/pub/dist/src/niftilib/nifti1.h) and
NIfTI-2 (https://nifti.nimh.nih.gov/pub/dist/doc/nifti2.h).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

#: NIfTI datatype codes of the real floating types we can restore.
_FLOAT_CODES = {16: "f4", 64: "f8"}


def restore_non_finite(path: Path, array: np.ndarray) -> np.ndarray:
    """Return ``array`` with the NaN/±inf voxels of the NIfTI file at ``path`` put back.

    ``array`` is SimpleITK's ``(z, y, x)`` array of the same file. When the header cannot
    be interpreted (not float, not 3D, unexpected layout) ``array`` is returned unchanged.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        header = handle.read(540)
        layout = _layout(header, array.shape)
        if layout is None:
            return array
        dtype, offset, slope, intercept = layout
        handle.seek(offset)
        count = int(np.prod(array.shape))
        raw = np.frombuffer(handle.read(count * dtype.itemsize), dtype=dtype)
    if raw.size != count:
        return array
    raw = raw.reshape(array.shape)
    bad = ~np.isfinite(raw)
    if not bad.any():
        return array
    values = raw[bad].astype(np.float64)
    if np.isfinite(slope) and slope != 0:
        values = values * slope + (intercept if np.isfinite(intercept) else 0.0)
    out = array.copy()
    out[bad] = values
    return out


def _layout(header: bytes, shape_zyx: tuple[int, ...]
            ) -> tuple[np.dtype, int, float, float] | None:
    """(data dtype, data offset, scl_slope, scl_inter) of a 3D float NIfTI, else None."""
    if len(header) < 348:
        return None
    for endian in "<>":
        size = struct.unpack(endian + "i", header[:4])[0]
        if size == 348:
            datatype = struct.unpack(endian + "h", header[70:72])[0]
            dims = struct.unpack(endian + "8h", header[40:56])
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            slope, intercept = struct.unpack(endian + "2f", header[112:120])
            break
        if size == 540 and len(header) >= 540:
            datatype = struct.unpack(endian + "h", header[12:14])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
            slope, intercept = struct.unpack(endian + "2d", header[176:192])
            break
    else:
        return None
    if datatype not in _FLOAT_CODES or dims[0] < 3:
        return None
    spatial = tuple(int(d) for d in dims[1:4])
    extra = [int(d) for d in dims[4:dims[0] + 1]]
    if spatial[::-1] != tuple(shape_zyx) or any(d != 1 for d in extra):
        return None
    return np.dtype(endian + _FLOAT_CODES[datatype]), offset, float(slope), float(intercept)
