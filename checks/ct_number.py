"""CT-number accuracy on a phantom: inserts against nominal HU, water, uniformity, HU→density.

Public functions on plain numbers/arrays (:func:`insert_accuracy`, :func:`uniformity`,
:func:`density_residuals`) and the per-case :class:`CTNumberCheck`.

Quantities (ACR-464-style phantom tests, AAPM TG-233 [1]_): the mean of a central water ROI
(graded by the protocol, typically 0 ± 5 HU), uniformity = largest |peripheral − centre| ROI
mean (typically ≤ 5 HU), insert means against the department's nominal values with
per-insert tolerances. The levels live in the protocol, not here.
The HU→mass-density check compares the density given by the treatment planning system's
calibration curve at the measured HU with the insert's nominal density (TG-66, Mutic et al.
2003, doi:10.1118/1.1576394).

References
----------
.. [1] Samei et al., Med Phys 46(11):e735-e756 (2019), doi:10.1002/mp.13763.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks import _phantom
from checks.base import Check, CheckOutput, Measurement, MetricInfo, Slot
from qa.errors import QAInputError

__all__ = ["InsertAccuracy", "UniformityResult", "insert_accuracy", "uniformity",
           "density_residuals", "CTNumberCheck", "CTNumberOptions", "CTInsertSpec"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InsertAccuracy:
    """One insert: measured mean and SD (HU), nominal (HU), error = measured − nominal,
    tolerance (HU, two-sided) and ``tolerance_ratio`` = |error| / tolerance (≤ 1 passes)."""

    name: str
    measured_hu: float
    sd_hu: float
    nominal_hu: float
    error_hu: float
    tolerance_hu: float
    tolerance_ratio: float


@dataclass(frozen=True)
class UniformityResult:
    """Centre mean, peripheral − centre differences (HU) and the largest absolute one."""

    centre_hu: float
    differences_hu: dict[str, float]
    max_abs_difference_hu: float


def insert_accuracy(name: str, values_hu: np.ndarray, nominal_hu: float,
                    tolerance_hu: float) -> InsertAccuracy:
    """Mean of an insert ROI against its nominal value.

    Parameters
    ----------
    name : str
        Insert name (used in messages and records).
    values_hu : ndarray
        Pixel values of the ROI (any shape), HU; must be finite.
    nominal_hu, tolerance_hu : float
        Nominal value and two-sided tolerance (> 0), HU.

    Examples
    --------
    >>> r = insert_accuracy("acrylic", np.array([118.0, 122.0, 124.0]), 120.0, 10.0)
    >>> r.error_hu, r.tolerance_ratio
    (1.3333333333333286, 0.13333333333333286)
    """
    values = np.asarray(values_hu, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"insert {name!r}: the ROI must hold finite HU values, got "
                         f"{values.size} value(s) with {int((~np.isfinite(values)).sum())} "
                         "non-finite.")
    if not tolerance_hu > 0:
        raise ValueError(f"insert {name!r}: tolerance_hu must be > 0, got {tolerance_hu!r}.")
    mean = float(values.mean())
    error = mean - float(nominal_hu)
    return InsertAccuracy(name=name, measured_hu=mean,
                          sd_hu=float(values.std(ddof=1)) if values.size > 1 else math.nan,
                          nominal_hu=float(nominal_hu), error_hu=error,
                          tolerance_hu=float(tolerance_hu),
                          tolerance_ratio=abs(error) / float(tolerance_hu))


def uniformity(centre_hu: float, peripheral_hu: Mapping[str, float]) -> UniformityResult:
    """Peripheral ROI means minus the centre ROI mean (HU); the largest |difference|.

    Examples
    --------
    >>> uniformity(1.0, {"top": 3.0, "left": -2.5}).max_abs_difference_hu
    3.5
    """
    if not peripheral_hu:
        raise ValueError("uniformity needs at least one peripheral ROI.")
    diffs = {name: float(value) - float(centre_hu) for name, value in peripheral_hu.items()}
    return UniformityResult(centre_hu=float(centre_hu), differences_hu=diffs,
                            max_abs_difference_hu=max(abs(d) for d in diffs.values()))


def density_residuals(measured_hu: Sequence[float], nominal_density_g_cm3: Sequence[float],
                      curve_hu: Sequence[float] | None = None,
                      curve_density_g_cm3: Sequence[float] | None = None) -> np.ndarray:
    """Density from the calibration curve at the measured HU minus the nominal density.

    Parameters
    ----------
    measured_hu, nominal_density_g_cm3 : (N,) sequence
        Measured insert means (HU) and their nominal mass densities (g/cm³).
    curve_hu, curve_density_g_cm3 : (K,) sequence, optional
        The planning system's HU→density table (strictly increasing HU), interpolated
        linearly and held constant beyond its ends. Without it, a least-squares line through
        the inserts is used (residuals of that fit; needs N ≥ 3).

    Returns
    -------
    (N,) ndarray
        Residuals in g/cm³ (positive: the curve gives too high a density).
    """
    hu = np.asarray(measured_hu, dtype=np.float64)
    rho = np.asarray(nominal_density_g_cm3, dtype=np.float64)
    if hu.shape != rho.shape or hu.ndim != 1:
        raise ValueError(f"measured_hu and nominal_density_g_cm3 must be 1-D of the same length,"
                         f" got {hu.shape} and {rho.shape}.")
    if curve_hu is None:
        if hu.size < 3:
            raise ValueError("a fitted HU-to-density line needs at least 3 inserts with a "
                             f"density, got {hu.size}; give a calibration_curve instead.")
        slope, intercept = np.polyfit(hu, rho, 1)
        return intercept + slope * hu - rho
    x = np.asarray(curve_hu, dtype=np.float64)
    y = np.asarray(curve_density_g_cm3, dtype=np.float64)
    if x.shape != y.shape or x.size < 2 or np.any(np.diff(x) <= 0):
        raise ValueError("calibration_curve must hold at least 2 [hu, density_g_cm3] points "
                         "in strictly increasing HU.")
    return np.interp(hu, x, y) - rho


# -- the check the engine runs ---------------------------------------------------------------

@pydantic_dataclass(config=ConfigDict(extra="forbid", frozen=True))
class CTInsertSpec:
    """An insert: position ``[dy_mm, dx_mm]`` from the phantom centre, ROI diameter (mm,
    smaller than the insert), nominal HU, tolerance (HU), nominal density (g/cm³, optional)."""

    position_mm: tuple[float, float]
    nominal_hu: float
    tolerance_hu: float = Field(gt=0)
    roi_diameter_mm: float = Field(default=15.0, gt=0)
    density_g_cm3: float | None = Field(default=None, gt=0)


def _default_periphery() -> dict[str, tuple[float, float]]:
    return {"top": (-75.0, 0.0), "bottom": (75.0, 0.0), "left": (0.0, -75.0),
            "right": (0.0, 75.0)}


@pydantic_dataclass(config=ConfigDict(extra="forbid", frozen=True))
class CTNumberOptions:
    """Options of ``ct_number``: ``inserts`` (name -> spec), the water ROI at the centre
    (``water_roi_diameter_mm``), the peripheral uniformity ROIs (name -> [dy_mm, dx_mm]) and
    an optional ``calibration_curve`` ([[hu, density_g_cm3], ...], the TPS table)."""

    inserts: dict[str, CTInsertSpec] = Field(default_factory=dict)
    water_position_mm: tuple[float, float] = (0.0, 0.0)
    water_roi_diameter_mm: float = Field(default=20.0, gt=0)
    uniformity_rois: dict[str, tuple[float, float]] = Field(default_factory=_default_periphery)
    calibration_curve: list[tuple[float, float]] | None = None

    @field_validator("calibration_curve")
    @classmethod
    def _curve(cls, value):
        if value is not None:
            x = [p[0] for p in value]
            if len(x) < 2 or bool(np.any(np.diff(x) <= 0)):
                raise ValueError("calibration_curve must hold at least 2 [hu, density_g_cm3] "
                                 "points in strictly increasing HU.")
        return value


class CTNumberCheck(Check):
    """CT numbers of a phantom series: inserts, water, uniformity, HU→density residuals."""

    name: ClassVar[str] = "ct_number"
    title: ClassVar[str] = "CT-number accuracy and uniformity (phantom)"
    slots: ClassVar[dict[str, Slot]] = {
        "image": Slot("image", True, "phantom series (HU)"),
    }
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "water_hu": MetricInfo("HU", "mean of the central water ROI (nominal 0)", "zero"),
        "uniformity_max_hu": MetricInfo("HU", "largest |peripheral - centre| ROI mean"),
        "uniformity_diff_hu": MetricInfo("HU", "peripheral - centre mean (label: ROI)",
                                         "zero"),
        "insert_hu": MetricInfo("HU", "insert ROI mean (label: insert)", "zero"),
        "insert_error_hu": MetricInfo("HU", "insert mean - nominal (label: insert)", "zero"),
        "insert_tolerance_ratio": MetricInfo(
            "1", "|insert error| / its tolerance, <= 1 within (label: insert; no label: the "
            "worst insert)"),
        "density_residual_g_cm3": MetricInfo(
            "g/cm3", "calibration density at measured HU - nominal (label: insert)", "zero"),
    }
    Options: ClassVar[type] = CTNumberOptions

    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        """Measurements for one phantom series (ROIs outside the phantom are refused)."""
        image = inputs.get("image")
        if image is None:
            raise QAInputError("input 'image' (phantom series) is missing; map it to a "
                               "case-table role in the protocol.", check=self.name)
        opts = self.options
        geom = _phantom.phantom_geometry(image, check=self.name)
        radius = opts.water_roi_diameter_mm / 2
        water = float(_phantom.disc_values(geom, "water", opts.water_position_mm, radius,
                                           check=self.name, field="water_position_mm").mean())
        periphery = {name: float(_phantom.disc_values(geom, name, pos, radius, check=self.name,
                                                      field="uniformity_rois").mean())
                     for name, pos in opts.uniformity_rois.items()}
        rows = [Measurement("water_hu", water, "HU")]
        if periphery:
            uni = uniformity(water, periphery)
            rows.append(Measurement("uniformity_max_hu", uni.max_abs_difference_hu, "HU"))
            rows += [Measurement("uniformity_diff_hu", d, "HU", name)
                     for name, d in uni.differences_hu.items()]
        results = []
        for name, spec in opts.inserts.items():
            values = _phantom.disc_values(geom, name, spec.position_mm,
                                          spec.roi_diameter_mm / 2, check=self.name,
                                          field="inserts")
            acc = insert_accuracy(name, values, spec.nominal_hu, spec.tolerance_hu)
            results.append(acc)
            rows += [Measurement("insert_hu", acc.measured_hu, "HU", name),
                     Measurement("insert_error_hu", acc.error_hu, "HU", name),
                     Measurement("insert_tolerance_ratio", acc.tolerance_ratio, "1", name)]
        if results:
            rows.append(Measurement("insert_tolerance_ratio",
                                    max(a.tolerance_ratio for a in results), "1"))
        with_density = [(acc, opts.inserts[acc.name].density_g_cm3) for acc in results
                        if opts.inserts[acc.name].density_g_cm3 is not None]
        residuals: dict[str, float] = {}
        if with_density and (opts.calibration_curve is not None or len(with_density) >= 3):
            curve = opts.calibration_curve
            res = density_residuals(
                [a.measured_hu for a, _ in with_density], [d for _, d in with_density],
                None if curve is None else [p[0] for p in curve],
                None if curve is None else [p[1] for p in curve])
            residuals = {a.name: float(r) for (a, _), r in zip(with_density, res, strict=True)}
            rows += [Measurement("density_residual_g_cm3", r, "g/cm3", name)
                     for name, r in residuals.items()]
        details = _phantom.json_clean({
            "inserts": [{"name": a.name, "measured_hu": a.measured_hu, "sd_hu": a.sd_hu,
                         "nominal_hu": a.nominal_hu, "error_hu": a.error_hu,
                         "tolerance_hu": a.tolerance_hu,
                         "density_g_cm3": opts.inserts[a.name].density_g_cm3,
                         "density_residual_g_cm3": residuals.get(a.name)} for a in results],
            "water_hu": water, "periphery_hu": periphery,
            "calibration": "curve" if opts.calibration_curve is not None else "fitted line",
            "phantom_center_yx_mm": list(geom.center_yx_mm),
        })
        return CheckOutput(measurements=tuple(rows), details=details)
