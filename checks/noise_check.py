"""The per-case ``noise`` check: σ, NPS, TTF and d′ of one phantom series at one dose level.

A case is one reconstructed series of a uniform / insert phantom (ACR-464-like) at one
CTDIvol; the case table names its reconstruction (``reconstruction``: FBP, DL …). The
cohort check :mod:`checks.noise_dose` fits the curves over the cases. Positions are
``[dy_mm, dx_mm]`` from the phantom centre (see :mod:`checks._phantom`).
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks import _phantom
from checks.base import Check, CheckOutput, Measurement, MetricInfo, Slot
from checks.noise import (
    detectability_index,
    noise_in_rois,
    nps_2d,
    radial_nps,
    ttf_from_disc,
)
from qa.errors import QAInputError
from qa.volume import Volume

__all__ = ["NoiseCheck", "NoiseOptions", "InsertSpec", "TaskSpec", "ctdivol_of"]

logger = logging.getLogger(__name__)

_CURVE_POINTS = 64


def _default_rois() -> dict[str, tuple[float, float]]:
    return {"centre": (0.0, 0.0), "top": (-60.0, 0.0), "bottom": (60.0, 0.0),
            "left": (0.0, -60.0), "right": (0.0, 60.0)}


@pydantic_dataclass(config=ConfigDict(extra="forbid", frozen=True))
class InsertSpec:
    """A circular insert used for the TTF: position ``[dy_mm, dx_mm]`` from the phantom
    centre and diameter (mm)."""

    position_mm: tuple[float, float]
    diameter_mm: float = Field(gt=0)


@pydantic_dataclass(config=ConfigDict(extra="forbid", frozen=True))
class TaskSpec:
    """A disc detection task: contrast (HU), diameter (mm) and the insert whose TTF is used
    (choose an insert of similar contrast: DL reconstructions are non-linear)."""

    contrast_hu: float
    ttf_insert: str
    diameter_mm: float = Field(default=5.0, gt=0)


@pydantic_dataclass(config=ConfigDict(extra="forbid", frozen=True))
class NoiseOptions:
    """Options of ``noise`` as written in the protocol YAML.

    ``noise_rois``: name -> [dy_mm, dx_mm] centres of square uniform ROIs of side
    ``roi_size_mm``; ``noise_detrend`` (σ) and ``nps_detrend``: ``mean`` or ``plane``;
    ``inserts``: name -> {position_mm, diameter_mm} for the TTF; ``tasks``: name ->
    {contrast_hu, diameter_mm, ttf_insert}; ``min_insert_contrast_hu``: an insert with a
    smaller measured contrast is "not found"; ``viewing_distance_mm``, ``display_zoom``:
    NPWE display geometry; ``ctdivol_required``: False when the CTDIvol comes from the
    case table (``ctdivol_mgy`` attribute, read by ``noise_dose``) instead of the DICOM.
    """

    noise_rois: dict[str, tuple[float, float]] = Field(default_factory=_default_rois)
    roi_size_mm: float = Field(default=30.0, gt=0)
    noise_detrend: str = "mean"
    nps_detrend: str = "plane"
    inserts: dict[str, InsertSpec] = Field(default_factory=dict)
    tasks: dict[str, TaskSpec] = Field(default_factory=dict)
    min_insert_contrast_hu: float = Field(default=20.0, gt=0)
    viewing_distance_mm: float = Field(default=500.0, gt=0)
    display_zoom: float = Field(default=1.0, gt=0)
    ctdivol_required: bool = True

    @model_validator(mode="after")
    def _check(self) -> NoiseOptions:
        for key in ("noise_detrend", "nps_detrend"):
            if getattr(self, key) not in ("mean", "plane"):
                raise ValueError(f"{key} must be 'mean' or 'plane', got "
                                 f"{getattr(self, key)!r}.")
        if not self.noise_rois:
            raise ValueError("noise_rois must name at least one ROI.")
        for name, task in self.tasks.items():
            if task.ttf_insert not in self.inserts:
                raise ValueError(f"tasks[{name!r}].ttf_insert {task.ttf_insert!r} is not one "
                                 f"of the inserts ({', '.join(sorted(self.inserts)) or 'none'}"
                                 "); declare it under inserts.")
        return self


def ctdivol_of(image: Volume, *, check: str) -> float:
    """CTDIvol (mGy) of a series: DICOM (0018,9345) via ``metadata["ctdivol_mgy"]``."""
    value = image.metadata.get("ctdivol_mgy")
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise QAInputError(
            "CTDIvol is missing: the series has no CTDIvol (0018,9345); add a ctdivol_mgy "
            "attribute column to the case table and set ctdivol_required: false in the noise "
            "check's options.", check=check,
            role="image", field="CTDIvol")
    return value


class NoiseCheck(Check):
    """Noise magnitude, NPS, TTF per insert and d′ per task of one phantom series."""

    name: ClassVar[str] = "noise"
    title: ClassVar[str] = "Noise, texture, resolution and detectability (TG-233)"
    slots: ClassVar[dict[str, Slot]] = {
        "image": Slot("image", True, "reconstructed phantom series (HU), one dose level"),
    }
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "ctdivol_mgy": MetricInfo("mGy", "CTDIvol of the series (DICOM 0018,9345)", "lower"),
        "slice_thickness_mm": MetricInfo("mm", "reconstructed slice spacing", "zero"),
        "noise_hu": MetricInfo("HU", "pooled σ over the uniform ROIs (label: ROI name)"),
        "mean_hu": MetricInfo("HU", "mean over the uniform ROIs (label: ROI name)", "zero"),
        "nps_f_peak_per_mm": MetricInfo("1/mm", "radial NPS peak frequency", "higher"),
        "nps_f_av_per_mm": MetricInfo("1/mm", "radial NPS average frequency", "higher"),
        "ttf_f50_per_mm": MetricInfo("1/mm", "TTF 50 % frequency (label: insert)", "higher"),
        "ttf_f10_per_mm": MetricInfo("1/mm", "TTF 10 % frequency (label: insert)", "higher"),
        "insert_contrast_hu": MetricInfo("HU", "insert minus background (label: insert)",
                                         "higher"),
        "d_prime_npwe": MetricInfo("1", "NPWE detectability index (label: task)", "higher"),
        "d_prime_npw": MetricInfo("1", "NPW detectability index (label: task)", "higher"),
    }
    Options: ClassVar[type] = NoiseOptions

    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        """Measurements and curves (radial NPS, TTFs) for one phantom series.

        Bad input (missing CTDIvol, ROI outside the image or phantom, insert not found) is
        a :class:`qa.errors.QAInputError` naming the ROI / insert / field.
        """
        image = inputs.get("image")
        if image is None:
            raise QAInputError("input 'image' (reconstructed phantom series) is missing; map "
                               "it to a case-table role in the protocol.", check=self.name)
        opts = self.options
        ctdivol = (ctdivol_of(image, check=self.name) if opts.ctdivol_required
                   or "ctdivol_mgy" in image.metadata else None)
        geom = _phantom.phantom_geometry(image, check=self.name)
        pixel = geom.pixel_yx_mm
        rows = [Measurement("slice_thickness_mm", geom.slice_thickness_mm, "mm")]
        if ctdivol is not None:
            rows.insert(0, Measurement("ctdivol_mgy", ctdivol, "mGy"))
        stacks = {name: _phantom.square_rois(geom, name, pos, opts.roi_size_mm, check=self.name)
                  for name, pos in opts.noise_rois.items()}
        shapes = {s.shape[1:] for s in stacks.values()}
        all_rois = np.concatenate([s for s in stacks.values() if s.shape[1:] == max(shapes)])
        noise = noise_in_rois(all_rois, detrend=opts.noise_detrend)
        rows += [Measurement("noise_hu", noise.sigma_hu, "HU"),
                 Measurement("mean_hu", noise.mean_hu, "HU")]
        for name, stack in stacks.items():
            each = noise_in_rois(stack, detrend=opts.noise_detrend)
            rows += [Measurement("noise_hu", each.sigma_hu, "HU", name),
                     Measurement("mean_hu", each.mean_hu, "HU", name)]
        radial = radial_nps(nps_2d(all_rois, pixel, detrend=opts.nps_detrend))
        rows += [Measurement("nps_f_peak_per_mm", radial.f_peak_per_mm, "1/mm"),
                 Measurement("nps_f_av_per_mm", radial.f_av_per_mm, "1/mm")]
        ttfs = {}
        for name, insert in opts.inserts.items():
            ttfs[name] = self._ttf(geom, name, insert, opts.min_insert_contrast_hu)
            rows += [Measurement("ttf_f50_per_mm", ttfs[name].f50_per_mm, "1/mm", name),
                     Measurement("ttf_f10_per_mm", ttfs[name].f10_per_mm, "1/mm", name),
                     Measurement("insert_contrast_hu", ttfs[name].contrast_hu, "HU", name)]
        for name, task in opts.tasks.items():
            ttf = ttfs[task.ttf_insert]
            for observer in ("npwe", "npw"):
                d = detectability_index(
                    radial.frequency_per_mm, radial.nps_hu2_mm2, ttf.frequency_per_mm, ttf.ttf,
                    contrast_hu=task.contrast_hu, diameter_mm=task.diameter_mm,
                    observer=observer, viewing_distance_mm=opts.viewing_distance_mm,
                    display_zoom=opts.display_zoom)
                rows.append(Measurement(f"d_prime_{observer}", d.d_prime, "1", name))
        details = _phantom.json_clean({
            "nps": {"frequency_per_mm": radial.frequency_per_mm,
                    "nps_hu2_mm2": radial.nps_hu2_mm2, "n_rois": int(all_rois.shape[0]),
                    "roi_pixels": list(all_rois.shape[1:])},
            "ttf": {name: _resampled(t.frequency_per_mm, t.ttf) for name, t in ttfs.items()},
            "phantom_center_yx_mm": list(geom.center_yx_mm),
            "phantom_radius_mm": geom.radius_mm,
            "ctdivol_mgy": ctdivol,
            "convolution_kernel": image.metadata.get("convolution_kernel"),
        })
        return CheckOutput(measurements=tuple(rows), details=details)

    def _ttf(self, geom: _phantom.PhantomGeometry, name: str, insert: InsertSpec,
             min_contrast_hu: float):
        radius = insert.diameter_mm / 2
        center = geom.absolute_mm(insert.position_mm)
        where = (f"insert {name!r} (diameter {insert.diameter_mm:g} mm at "
                 f"dy={insert.position_mm[0]:g}, dx={insert.position_mm[1]:g} mm from the "
                 "phantom centre)")
        try:
            result = ttf_from_disc(geom.slices, geom.pixel_yx_mm, center, radius)
        except ValueError as exc:
            raise QAInputError(f"{where}: {exc}", check=self.name, field="inserts") from exc
        if not abs(result.contrast_hu) >= min_contrast_hu:
            raise QAInputError(
                f"{where} not found: its contrast against the background ring is "
                f"{result.contrast_hu:.1f} HU, below min_insert_contrast_hu = "
                f"{min_contrast_hu:g} HU; check the insert positions (mm from the phantom "
                "centre) in the protocol options.", check=self.name, field="inserts")
        return result


def _resampled(freq: np.ndarray, values: np.ndarray) -> dict[str, list[float]]:
    grid = np.linspace(0.0, float(freq[-1]), _CURVE_POINTS)
    return {"frequency_per_mm": grid.tolist(),
            "ttf": np.interp(grid, freq, values).tolist()}
