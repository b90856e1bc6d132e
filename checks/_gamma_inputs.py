"""Validation and normalisation of gamma inputs (private to :mod:`checks.gamma`).

Criterion strings, dose sanity (NaN, negative, cGy-versus-Gy), ROI masks and grids given
as coordinate axes. Every error names the parameter or input and says what to do.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from qa.volume import Volume

__all__ = ["GammaInputError", "Criterion", "parse_criterion", "check_dose",
           "dose_volume_from_axes"]

_CRITERION = re.compile(
    r"^\s*(?P<dose>\d+(?:\.\d+)?)\s*%\s*/\s*(?P<dist>\d+(?:\.\d+)?)\s*mm\s*$", re.IGNORECASE)
#: Dose maxima ratio taken as a unit mix-up (one dose in cGy, the other in Gy).
_CGY_RATIO = (50.0, 200.0)


class GammaInputError(ValueError):
    """A gamma input is unusable; ``input_name`` is ``"reference"``, ``"evaluated"``,
    ``"roi"`` or an option name."""

    def __init__(self, message: str, input_name: str) -> None:
        super().__init__(message)
        self.input_name = input_name


@dataclass(frozen=True)
class Criterion:
    """A gamma criterion: dose difference (percent) and distance to agreement (mm)."""

    dose_percent: float
    distance_mm: float

    @property
    def label(self) -> str:
        """Canonical text, e.g. ``"3%/2mm"`` (``"2.5%/1.5mm"``)."""
        return f"{self.dose_percent:g}%/{self.distance_mm:g}mm"


def parse_criterion(text: object) -> Criterion:
    """Parse ``"3%/2mm"`` (spaces allowed, decimals allowed) into a :class:`Criterion`.

    Raises
    ------
    GammaInputError
        When the text does not parse or a value is not > 0.
    """
    if isinstance(text, Criterion):
        return text
    match = _CRITERION.match(str(text)) if isinstance(text, str) else None
    if match is None:
        raise GammaInputError(
            f"criterion {text!r} does not parse; write it as '<dose>%/<distance>mm', "
            "e.g. '3%/2mm' or '2.5%/1.5mm'.", "criteria")
    dose, dist = float(match["dose"]), float(match["dist"])
    if dose <= 0 or dist <= 0:
        raise GammaInputError(
            f"criterion {text!r}: dose percent and distance must both be > 0.", "criteria")
    return Criterion(dose, dist)


def check_dose(volume: Volume, name: str) -> np.ndarray:
    """The dose array as float64, refusing NaN/inf, negative values and non-Gy units."""
    if not isinstance(volume, Volume):
        raise GammaInputError(
            f"{name} dose must be a qa.volume.Volume (Gy), got {type(volume).__name__}; "
            "build one with checks.gamma.dose_volume_from_axes for bare arrays.", name)
    units = volume.metadata.get("dose_units")
    if units is not None and str(units).strip().upper() not in ("GY", ""):
        raise GammaInputError(
            f"{name} dose has DoseUnits {units!r}; gamma needs absolute dose in Gy: "
            "convert it (cGy / 100) or export it in Gy.", name)
    arr = np.asarray(volume.array, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise GammaInputError(
            f"{name} dose has {bad} non-finite value(s) (NaN or inf); expected finite Gy "
            "everywhere: fix or re-export the dose.", name)
    neg = int(np.count_nonzero(arr < 0))
    if neg:
        raise GammaInputError(
            f"{name} dose has {neg} negative value(s) (min {arr.min():.4g} Gy); a dose "
            "cannot be negative: check the scaling (DoseGridScaling) or the export.", name)
    return arr


def check_units_agree(ref_max_gy: float, eval_max_gy: float) -> None:
    """Refuse pairs whose maxima differ by a factor 50-200 (one is likely in cGy)."""
    if ref_max_gy <= 0 or eval_max_gy <= 0:
        return
    ratio = max(ref_max_gy, eval_max_gy) / min(ref_max_gy, eval_max_gy)
    if _CGY_RATIO[0] <= ratio <= _CGY_RATIO[1]:
        which = "reference" if ref_max_gy > eval_max_gy else "evaluated"
        raise GammaInputError(
            f"the {which} dose maximum ({max(ref_max_gy, eval_max_gy):.4g}) is {ratio:.0f}x "
            f"the other ({min(ref_max_gy, eval_max_gy):.4g}): the {which} dose is probably "
            "in cGy; convert it to Gy (divide by 100).", which)


def dose_volume_from_axes(dose: np.ndarray, axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray],
                          *, name: str = "dose") -> Volume:
    """A :class:`Volume` from a (Z, Y, X) dose and its (z, y, x) coordinate axes in mm.

    Descending axes are handled (the array is flipped so coordinates increase); unevenly
    spaced axes are refused (resample the dose onto a regular grid first).

    Examples
    --------
    >>> v = dose_volume_from_axes(np.zeros((2, 3, 4)), ([5.0, 0.0], [0, 2, 4], [0, 1, 2, 3]))
    >>> v.origin, v.spacing
    ((0.0, 0.0, 0.0), (5.0, 2.0, 1.0))
    """
    arr = np.asarray(dose, dtype=np.float64)
    if arr.ndim != 3 or len(axes_mm) != 3:
        raise GammaInputError(
            f"{name}: need a 3-D (z, y, x) dose and 3 axes, got shape {arr.shape} and "
            f"{len(axes_mm)} axes.", name)
    spacing, origin = [], []
    for axis_no, (axis, size) in enumerate(zip(axes_mm, arr.shape, strict=True)):
        axis = np.asarray(axis, dtype=np.float64)
        if axis.shape != (size,):
            raise GammaInputError(
                f"{name}: axis {axis_no} has {axis.size} coordinates for {size} voxels.", name)
        if size > 1 and axis[1] < axis[0]:
            axis = axis[::-1]
            arr = np.flip(arr, axis=axis_no)
        steps = np.diff(axis)
        if size > 1 and (np.any(steps <= 0)
                         or not np.allclose(steps, steps[0], rtol=1e-4, atol=1e-4)):
            raise GammaInputError(
                f"{name}: axis {axis_no} ({'zyx'[axis_no]}) is not evenly spaced (steps "
                f"{steps.min():.4g} to {steps.max():.4g} mm); resample the dose onto a "
                "regular grid first.", name)
        spacing.append(float(steps[0]) if size > 1 else 1.0)
        origin.append(float(axis[0]))
    return Volume(np.ascontiguousarray(arr), tuple(spacing), tuple(origin))


def finite_or_none(value: float) -> float | None:
    """JSON-friendly float (NaN/inf -> None)."""
    return float(value) if math.isfinite(value) else None
