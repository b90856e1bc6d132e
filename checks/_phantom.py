"""Private helpers shared by :mod:`checks.noise_check` and :mod:`checks.ct_number`: phantom
geometry on axial slices.

Positions in the protocol are ``[dy_mm, dx_mm]`` from the phantom centre, along the image rows
(+y: towards higher row index, posterior for a standard axial LPS series) and columns (+x:
higher column index, patient left). The phantom centre is the centroid of the pixels above
``threshold_hu`` on the mean slice, so a phantom placed off the isocentre is still measured
in the right places.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from qa.errors import QAInputError
from qa.jsonsafe import json_safe
from qa.volume import Volume

PHANTOM_THRESHOLD_HU = -500.0


@dataclass(frozen=True)
class PhantomGeometry:
    """Axial slices in HU (``slices``: (n, ny, nx)), pixel size, phantom mask and centre.

    ``center_yx_mm`` is measured from the centre of pixel [0, 0]; ``radius_mm`` is the
    equivalent radius of the phantom cross-section.
    """

    slices: np.ndarray
    pixel_yx_mm: tuple[float, float]
    slice_thickness_mm: float
    mask: np.ndarray
    center_yx_mm: tuple[float, float]
    radius_mm: float

    def absolute_mm(self, offset_yx_mm: tuple[float, float]) -> tuple[float, float]:
        """Position from pixel [0, 0] of a point given from the phantom centre."""
        return (self.center_yx_mm[0] + float(offset_yx_mm[0]),
                self.center_yx_mm[1] + float(offset_yx_mm[1]))


def phantom_geometry(image: Volume, *, check: str,
                     threshold_hu: float = PHANTOM_THRESHOLD_HU) -> PhantomGeometry:
    """Slices, pixel size and phantom centre of an axial phantom series (refuses others)."""
    direction = np.asarray(image.direction_matrix)
    if not np.allclose(np.abs(np.diag(direction)), 1.0, atol=1e-3):
        raise QAInputError("the phantom series is not axial (its direction is not the "
                           "identity up to signs); reconstruct axial slices.", check=check,
                           role="image")
    slices = np.asarray(image.array, dtype=np.float64)
    if not np.all(np.isfinite(slices)):
        slices = np.where(np.isfinite(slices), slices, -1000.0)
    mean_slice = slices.mean(axis=0)
    mask = mean_slice > threshold_hu
    labels, n = ndimage.label(mask)
    if n == 0:
        raise QAInputError(f"no phantom found: no pixel above {threshold_hu:g} HU on the mean "
                           "slice; check that the series holds the phantom in HU.", check=check,
                           role="image")
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    mask = labels == (1 + int(np.argmax(sizes)))
    mask = ndimage.binary_fill_holes(mask)
    dy, dx = float(image.spacing[1]), float(image.spacing[2])
    rows, cols = np.nonzero(mask)
    center = (float(rows.mean()) * dy, float(cols.mean()) * dx)
    radius = math.sqrt(mask.sum() * dy * dx / math.pi)
    return PhantomGeometry(slices=slices, pixel_yx_mm=(dy, dx),
                           slice_thickness_mm=float(image.spacing[0]), mask=mask,
                           center_yx_mm=center, radius_mm=radius)


def square_rois(geometry: PhantomGeometry, name: str, offset_yx_mm: tuple[float, float],
                size_mm: float, *, check: str) -> np.ndarray:
    """The square ROI of side ``size_mm`` at ``offset`` on every slice: (n, s, s)."""
    dy, dx = geometry.pixel_yx_mm
    ny, nx = geometry.mask.shape
    n_y = int(round(size_mm / dy))
    n_x = int(round(size_mm / dx))
    cy, cx = geometry.absolute_mm(offset_yx_mm)
    r0 = int(round(cy / dy - (n_y - 1) / 2))
    c0 = int(round(cx / dx - (n_x - 1) / 2))
    where = (f"ROI {name!r} ({size_mm:g} mm square at dy={offset_yx_mm[0]:g}, "
             f"dx={offset_yx_mm[1]:g} mm from the phantom centre)")
    if n_y < 4 or n_x < 4:
        raise QAInputError(f"{where} is smaller than 4 x 4 pixels; enlarge roi_size_mm.",
                           check=check, field="roi_size_mm")
    if r0 < 0 or c0 < 0 or r0 + n_y > ny or c0 + n_x > nx:
        raise QAInputError(f"{where} extends outside the image ({ny} x {nx} pixels); move it "
                           "or reduce roi_size_mm.", check=check, field="noise_rois")
    if not geometry.mask[r0:r0 + n_y, c0:c0 + n_x].all():
        raise QAInputError(f"{where} extends outside the phantom; move it into the uniform "
                           "region or reduce roi_size_mm.", check=check, field="noise_rois")
    return geometry.slices[:, r0:r0 + n_y, c0:c0 + n_x]


def disc_values(geometry: PhantomGeometry, name: str, offset_yx_mm: tuple[float, float],
                radius_mm: float, *, check: str, field: str) -> np.ndarray:
    """Pixel values (all slices) within ``radius_mm`` of ``offset`` (refuses outside)."""
    cy, cx = geometry.absolute_mm(offset_yx_mm)
    dy, dx = geometry.pixel_yx_mm
    ny, nx = geometry.mask.shape
    yy = np.arange(ny)[:, None] * dy
    xx = np.arange(nx)[None, :] * dx
    disc = np.hypot(yy - cy, xx - cx) <= radius_mm
    where = (f"{name!r} (disc of radius {radius_mm:g} mm at dy={offset_yx_mm[0]:g}, "
             f"dx={offset_yx_mm[1]:g} mm from the phantom centre)")
    if (cy - radius_mm < 0 or cx - radius_mm < 0 or cy + radius_mm > (ny - 1) * dy
            or cx + radius_mm > (nx - 1) * dx):
        raise QAInputError(f"{where} extends outside the image; check its position.",
                           check=check, field=field)
    if not disc.any():
        raise QAInputError(f"{where} holds no pixel; enlarge it.", check=check, field=field)
    if not geometry.mask[disc].all():
        raise QAInputError(f"{where} extends outside the phantom; check its position.",
                           check=check, field=field)
    return geometry.slices[:, disc]


def json_clean(value: Any) -> Any:
    """Nested copy with numpy scalars/arrays as Python lists and non-finite floats as None."""
    return json_safe(value)
