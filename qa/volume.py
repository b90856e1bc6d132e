"""A 3D image on a physical grid: the one geometry type every check and reader shares.

Conventions (fixed, public API)
-------------------------------
* ``array`` is indexed ``(z, y, x)``: slowest axis first, as SimpleITK's
  ``GetArrayFromImage`` and pydicom's stacked slices give it.
* ``spacing`` and ``origin`` are in millimetres, in the same ``(z, y, x)`` order.
* ``origin`` is the centre of voxel ``[0, 0, 0]`` in patient coordinates (DICOM LPS:
  +x towards the patient's left, +y posterior, +z superior), listed ``(z, y, x)``.
* ``direction`` is a 3x3 matrix whose column ``j`` is the unit vector of array axis ``j``
  in patient coordinates, both written in ``(z, y, x)`` order; ``None`` means identity
  (axial, head-first-supine-like orientation with increasing indices along +z, +y, +x).

A physical point ``p`` (``(z, y, x)`` mm) of voxel index ``i`` is
``p = origin + direction @ (i * spacing)`` (the ITK/DICOM convention, re-ordered).

Two volumes on different grids are compared in physical space, never by index: use
:func:`same_grid` to test and :func:`resample_like` to move one onto the other's grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["Volume", "same_grid", "resample_like", "GridMismatchError"]

_IDENTITY = np.eye(3)
_SLAB_POINTS = 1 << 22  # reference points resampled per slab (bounds temporary memory)


class GridMismatchError(ValueError):
    """Two volumes that must share a grid do not (shape, spacing, origin or direction)."""


@dataclass(frozen=True, eq=False)
class Volume:
    """3D array with its physical grid.

    Parameters
    ----------
    array : (Z, Y, X) ndarray
        Voxel values (HU, Gy, booleans for masks ...).
    spacing : sequence of 3 floats
        Voxel size in mm, ``(z, y, x)``; all strictly positive.
    origin : sequence of 3 floats
        Centre of voxel ``[0, 0, 0]`` in mm, patient LPS coordinates, ``(z, y, x)``.
    direction : (3, 3) array_like, optional
        Column ``j`` = unit vector of array axis ``j`` in ``(z, y, x)`` patient
        coordinates. ``None`` (default) is the identity.
    metadata : dict, optional
        Non-identifying acquisition facts (modality, CTDIvol_mGy, kVp, ...). Readers never
        put patient-identifying DICOM fields here.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(f"Volume array must be 3D (z, y, x), got shape {array.shape}.")
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(o) for o in self.origin)
        if len(spacing) != 3 or len(origin) != 3:
            raise ValueError(
                f"spacing and origin need 3 values (z, y, x) in mm, got {self.spacing!r} "
                f"and {self.origin!r}."
            )
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be finite and > 0 mm, got {spacing}.")
        if not all(np.isfinite(o) for o in origin):
            raise ValueError(f"origin must be finite, got {origin}.")
        direction = None
        if self.direction is not None:
            direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
            if not np.allclose(direction.T @ direction, _IDENTITY, atol=1e-4):
                raise ValueError(
                    "direction must be orthonormal (columns = unit axis vectors), "
                    f"got {direction.tolist()}."
                )
            if np.allclose(direction, _IDENTITY, atol=1e-6):
                direction = None
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "metadata", dict(self.metadata))

    # -- geometry -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def direction_matrix(self) -> np.ndarray:
        """The direction as a 3x3 array (identity when ``direction is None``)."""
        return _IDENTITY.copy() if self.direction is None else self.direction.copy()

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """Map ``(..., 3)`` voxel indices (may be fractional) to ``(..., 3)`` mm points."""
        index = np.asarray(index, dtype=float)
        scaled = index * np.asarray(self.spacing)
        return np.asarray(self.origin) + scaled @ self.direction_matrix.T

    def world_to_index(self, point_mm: np.ndarray) -> np.ndarray:
        """Map ``(..., 3)`` mm points to fractional voxel indices (inverse of the above)."""
        point_mm = np.asarray(point_mm, dtype=float)
        local = (point_mm - np.asarray(self.origin)) @ self.direction_matrix
        return local / np.asarray(self.spacing)

    def axis_coordinates_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinates of voxel centres along each axis (valid for identity direction)."""
        axes = zip(self.origin, self.spacing, self.shape, strict=True)
        return tuple(o + s * np.arange(n) for o, s, n in axes)  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, **metadata: Any) -> Volume:
        """A volume on the same grid holding ``array`` (metadata merged)."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise ValueError(f"with_array needs shape {self.shape}, got {array.shape}.")
        return Volume(array, self.spacing, self.origin, self.direction,
                      {**self.metadata, **metadata})

    def __repr__(self) -> str:
        direction = "identity" if self.direction is None else "oblique"
        return (f"Volume(shape={self.shape}, dtype={self.array.dtype}, "
                f"spacing_mm={self.spacing}, origin_mm={self.origin}, direction={direction})")


def same_grid(a: Volume, b: Volume, *, atol_mm: float = 1e-3) -> bool:
    """True when ``a`` and ``b`` share shape, spacing, origin and direction.

    ``atol_mm`` is the tolerance on spacing and origin in mm (default 1 µm, well below
    DICOM's float rounding of positions).
    """
    return (
        a.shape == b.shape
        and np.allclose(a.spacing, b.spacing, atol=atol_mm, rtol=0)
        and np.allclose(a.origin, b.origin, atol=atol_mm, rtol=0)
        and np.allclose(a.direction_matrix, b.direction_matrix, atol=1e-6)
    )


def describe_grid_difference(a: Volume, b: Volume, *, atol_mm: float = 1e-3) -> str:
    """Human-readable list of what differs between two grids ("" when they match)."""
    parts = []
    if a.shape != b.shape:
        parts.append(f"shape {a.shape} vs {b.shape}")
    if not np.allclose(a.spacing, b.spacing, atol=atol_mm, rtol=0):
        parts.append(f"spacing {a.spacing} vs {b.spacing} mm")
    if not np.allclose(a.origin, b.origin, atol=atol_mm, rtol=0):
        parts.append(f"origin {a.origin} vs {b.origin} mm")
    if not np.allclose(a.direction_matrix, b.direction_matrix, atol=1e-6):
        parts.append("direction differs")
    return "; ".join(parts)


def require_same_grid(a: Volume, b: Volume, names: tuple[str, str] = ("a", "b")) -> None:
    """Raise :class:`GridMismatchError` naming both inputs when grids differ."""
    diff = describe_grid_difference(a, b)
    if diff:
        raise GridMismatchError(
            f"{names[0]} and {names[1]} are on different grids ({diff}); resample one onto "
            f"the other explicitly (qa.volume.resample_like) or set the check's "
            f"'resample' option."
        )


def resample_like(
    moving: Volume,
    reference: Volume,
    *,
    method: Literal["linear", "nearest", "fraction"] = "linear",
    fill_value: float = 0.0,
) -> Volume:
    """Resample ``moving`` onto the grid of ``reference`` in physical space.

    Parameters
    ----------
    moving : Volume
        Volume to move.
    reference : Volume
        Volume whose grid (shape, spacing, origin, direction) the result takes.
    method : {"linear", "nearest", "fraction"}
        ``"linear"``: trilinear interpolation, for images (HU) and doses (Gy).
        ``"nearest"``: nearest voxel, for labels and boolean masks (returns the input dtype).
        ``"fraction"``: trilinear interpolation of a mask cast to float, giving the
        fraction of each voxel inside the structure (0..1), for partial-volume work.
    fill_value : float
        Value for points of ``reference`` that fall outside ``moving`` (default 0).

    Returns
    -------
    Volume
        On ``reference``'s grid, with ``moving``'s metadata.

    Notes
    -----
    Uses :func:`scipy.ndimage.map_coordinates` (order 1 or 0) on the fractional indices of
    the reference voxel centres in the moving grid, so it handles any spacing, origin and
    orthonormal direction. Points outside the moving grid by more than half a voxel get
    ``fill_value``; within half a voxel of the edge the edge value is used (clamped).
    """
    from scipy import ndimage

    if same_grid(moving, reference, atol_mm=1e-6):
        return Volume(moving.array.copy(), reference.spacing, reference.origin,
                      reference.direction, moving.metadata)
    if method not in ("linear", "nearest", "fraction"):
        raise ValueError(f"method must be 'linear', 'nearest' or 'fraction', got {method!r}.")
    source = moving.array
    windowed = method == "fraction" and fill_value == 0
    window = None
    if method == "nearest":
        out = np.empty(reference.shape, dtype=source.dtype)
        data = source
    else:
        dtype = np.float64 if source.dtype == np.float64 else np.float32
        if windowed:
            # only the mask's bounding box is interpolated (same values, less memory)
            window, data = _nonzero_window(source, dtype)
        else:
            data = source.astype(dtype)
        out = np.empty(reference.shape, dtype=dtype)
    # Work slab by slab along z so the coordinate arrays stay small (~4 M points at a time).
    plane = reference.shape[1] * reference.shape[2]
    step = max(1, _SLAB_POINTS // max(plane, 1))
    shape = np.asarray(moving.shape)[:, None]
    for z0 in range(0, reference.shape[0], step):
        z1 = min(z0 + step, reference.shape[0])
        idx = np.indices((z1 - z0, *reference.shape[1:]), dtype=float).reshape(3, -1)
        idx[0] += z0
        coords = moving.world_to_index(reference.index_to_world(idx.T)).T  # (3, N)
        inside = np.all((coords >= -0.5) & (coords <= shape - 0.5), axis=0)
        np.clip(coords, 0, shape - 1, out=coords)
        if method == "nearest":
            values = ndimage.map_coordinates(data, np.rint(coords), order=0, mode="nearest")
        elif windowed:
            values = _interpolate_in_window(data, coords, window, out.dtype)
        else:
            values = ndimage.map_coordinates(data, coords, order=1, mode="nearest")
        values = np.where(inside, values, np.asarray(fill_value).astype(out.dtype))
        out[z0:z1] = values.reshape(z1 - z0, *reference.shape[1:])
    return Volume(out, reference.spacing, reference.origin, reference.direction, moving.metadata)


def _nonzero_window(source: np.ndarray, dtype: type
                    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray] | None, np.ndarray]:
    """The part of a mask that trilinear interpolation can see, cast to ``dtype``.

    Returns ``((lo, hi, offset), crop)``: a point whose index coordinates lie outside
    ``[lo, hi]`` on some axis (the non-zero voxels' bounding box widened by one voxel)
    interpolates only zero voxels, so its value is 0; for the points inside, ``crop`` (the box
    widened by two voxels, clipped to the array, starting at index ``offset``) holds every
    voxel the interpolation reads, so interpolating ``crop`` at ``coords - offset`` gives the
    same numbers as interpolating the whole array at ``coords`` (the integer shift is exact in
    floating point). ``(None, empty crop)`` for an all-zero mask.
    """
    lo, hi = [], []
    for axis in range(source.ndim):
        other = tuple(a for a in range(source.ndim) if a != axis)
        nonzero = np.flatnonzero(np.any(source, axis=other))
        if nonzero.size == 0:
            return None, np.zeros((0,) * source.ndim, dtype)
        lo.append(int(nonzero[0]))
        hi.append(int(nonzero[-1]))
    start = [max(a - 2, 0) for a in lo]
    stop = [min(b + 3, n) for b, n in zip(hi, source.shape, strict=True)]
    crop = source[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))].astype(dtype)
    window = (np.asarray(lo, float)[:, None] - 1.0, np.asarray(hi, float)[:, None] + 1.0,
              np.asarray(start, float)[:, None])
    return window, crop


def _interpolate_in_window(crop: np.ndarray, coords: np.ndarray,
                           window: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                           dtype: type) -> np.ndarray:
    """Trilinear values at ``coords`` (3, N) of a mask reduced by :func:`_nonzero_window`."""
    from scipy import ndimage

    values = np.zeros(coords.shape[1], dtype=dtype)
    if window is None:  # empty mask
        return values
    lo, hi, offset = window
    near = np.all((coords >= lo) & (coords <= hi), axis=0)
    if np.any(near):
        values[near] = ndimage.map_coordinates(crop, coords[:, near] - offset, order=1,
                                               mode="nearest")
    return values
