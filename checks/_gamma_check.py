"""The engine's ``gamma`` check: thin wrapper of :func:`checks.gamma.gamma_indices`.

Defaults follow AAPM TG-218 (3 %/2 mm, 10 % cutoff, global, reference maximum) plus the
SynthRAD2025 2 %/2 mm criterion. Per-case details: the settings, one gamma histogram per
criterion and a small gamma-map slice (the axial slice with the most failing points of the
first criterion, else the one with the most evaluated points, downsampled to at most
64 x 64) with, when the protocol binds the optional ``ct`` slot, the CT sampled at the same
pixels (windowed to grey levels) for the report's overlay.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks._gamma_inputs import GammaInputError, finite_or_none, parse_criterion
from checks.base import Check, CheckOutput, Measurement, MetricInfo, Slot
from checks.gamma import GammaResult, gamma_indices
from qa.errors import QAInputError
from qa.volume import Volume

__all__ = ["GammaOptions", "GammaCheck", "map_slice", "MAP_CT_WINDOW_HU"]

_SLOT_OF_INPUT = {"reference": "reference", "evaluated": "evaluated", "roi": "mask"}
_MAP_SIDE = 64
#: CT display window (lower, upper) in HU of the stored slice, mapped to grey levels 0..255
#: (wide enough to show soft tissue and bone under the gamma map).
MAP_CT_WINDOW_HU = (-400.0, 600.0)
#: HU given to slice pixels outside the CT (air).
_OUTSIDE_CT_HU = -1000.0


@pydantic_dataclass(config=ConfigDict(extra="forbid", frozen=True))
class GammaOptions:
    """Options of ``gamma`` as written in the protocol YAML (see :func:`gamma_indices`)."""

    criteria: tuple[str, ...] = ("3%/2mm", "2%/2mm")
    lower_cutoff_percent: float = Field(default=10.0, ge=0.0, lt=100.0)
    local: bool = False
    normalization_gy: float | None = Field(default=None, gt=0.0)
    max_gamma: float = Field(default=2.0, gt=1.0)
    cutoff_on_union: bool = False
    #: ``auto``: the certified CPU kernel (numba) on a machine without CUDA, the torch
    #: lattice search on a GPU; ``numba`` pins the certified kernel on every machine (the
    #: same numbers whether or not a worker has a GPU); ``torch``: the lattice search.
    backend: Literal["auto", "numba", "torch"] = "auto"

    @field_validator("criteria")
    @classmethod
    def _check_criteria(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one criterion, e.g. ['3%/2mm']")
        return tuple(parse_criterion(c).label for c in value)


class GammaCheck(Check):
    """3D gamma of an evaluated dose (e.g. on the synthetic CT) against the reference dose."""

    name: ClassVar[str] = "gamma"
    title: ClassVar[str] = "Dose agreement: 3D gamma index"
    slots: ClassVar[dict[str, Slot]] = {
        "reference": Slot("dose", True, "reference dose (Gy), e.g. computed on the CT"),
        "evaluated": Slot("dose", True, "evaluated dose (Gy), e.g. computed on the sCT"),
        "mask": Slot("mask", False, "region of interest (body, PTV); whole grid when absent"),
        "ct": Slot("image", False, "CT (HU) the doses were computed on: drawn under the "
                                   "report's gamma map (any grid; sampled in physical space)"),
    }
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "pass_rate_percent": MetricInfo("%", "points with gamma <= 1 (label: criterion)",
                                        "higher"),
        "mean_gamma": MetricInfo("1", "mean gamma (label: criterion)"),
        "median_gamma": MetricInfo("1", "median gamma (label: criterion)"),
        "gamma_p95": MetricInfo("1", "95th percentile of gamma (label: criterion)"),
        "n_evaluated": MetricInfo("voxels", "reference points evaluated", "higher"),
        "n_below_cutoff": MetricInfo("voxels", "points below the dose cutoff", "zero"),
        "n_outside_grid": MetricInfo("voxels", "points above the cutoff outside the "
                                               "evaluated grid (not evaluated)", "zero"),
        "n_outside_roi": MetricInfo("voxels", "points outside the ROI mask", "zero"),
    }
    Options: ClassVar[type] = GammaOptions

    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        """Measurements for one case from ``{"reference", "evaluated", "mask"?}`` doses."""
        self.require_inputs(inputs)
        opts = self.options
        try:
            results = gamma_indices(
                inputs["reference"], inputs["evaluated"], list(opts.criteria),
                lower_cutoff_percent=opts.lower_cutoff_percent, local=opts.local,
                normalization_gy=opts.normalization_gy, max_gamma=opts.max_gamma,
                roi=inputs.get("mask"), cutoff_on_union=opts.cutoff_on_union,
                backend=opts.backend)
        except GammaInputError as exc:
            slot = _SLOT_OF_INPUT.get(exc.input_name)
            if slot is None:
                raise QAInputError(str(exc), check=self.name, field=exc.input_name) from exc
            raise ValueError(f"input {slot!r}: {exc}") from exc
        first = results[0]
        rows = [Measurement(m, float(getattr(first, m)), "voxels")
                for m in ("n_evaluated", "n_below_cutoff", "n_outside_grid", "n_outside_roi")]
        for r in results:
            rows += [
                Measurement("pass_rate_percent", r.pass_rate_percent, "%", r.criterion),
                Measurement("mean_gamma", r.mean_gamma, "1", r.criterion),
                Measurement("median_gamma", r.median_gamma, "1", r.criterion),
                Measurement("gamma_p95", r.gamma_p95, "1", r.criterion),
            ]
        details = {
            "settings": {
                "criteria": [r.criterion for r in results], "local": first.local,
                "lower_cutoff_percent": opts.lower_cutoff_percent,
                "normalization_gy": first.normalization_gy, "cutoff_gy": first.cutoff_gy,
                "cutoff_on_union": first.cutoff_on_union, "max_gamma": first.max_gamma,
                "pass": "gamma <= 1", "backend": first.backend, "device": first.device,
            },
            "gamma_histograms": {r.criterion: {"edges": list(r.histogram_edges),
                                               "counts": list(r.histogram_counts)}
                                 for r in results},
            "gamma_map_slice": map_slice(first, inputs["reference"], inputs.get("ct")),
        }
        return CheckOutput(measurements=tuple(rows), details=details)


def map_slice(result: GammaResult, reference: Volume, ct: Volume | None = None
              ) -> dict[str, Any]:
    """One axial slice of the gamma map, downsampled, with the CT under it when given.

    The slice is the one with the most failing points (gamma > 1) of ``result``; when no
    point fails, the one with the most evaluated points (``slice_rule`` says which). It is
    decimated in-plane by ``step`` (nearest) to at most 64 x 64 pixels. ``ct`` (HU, any
    grid) is sampled trilinearly in physical space at the same pixel centres (outside the
    CT: -1000 HU) and windowed to grey levels 0..255 (``MAP_CT_WINDOW_HU``).

    Returns
    -------
    dict
        ``criterion``, ``z_index`` (reference slice index), ``z_mm`` (its patient
        z coordinate), ``slice_rule`` (``"most_failing"`` or ``"most_evaluated"``),
        ``step``, ``pixel_mm`` ([dy, dx] of a stored pixel), ``orientation_lps`` (True when
        the reference grid is axis-aligned: rows run anterior to posterior, columns
        patient right to left), ``gamma`` (rows, NaN -> None, 3 decimals), and with a CT
        ``ct_grey`` (rows of 0..255 integers) and ``ct_window_hu``.
    """
    g = result.gamma
    failing = np.nansum(g > 1.0, axis=(1, 2)) if g.size else np.zeros(0)
    evaluated = np.sum(~np.isnan(g), axis=(1, 2))
    if failing.size and failing.max() > 0:
        z, rule = int(np.argmax(failing)), "most_failing"
    else:
        z, rule = int(np.argmax(evaluated)), "most_evaluated"
    step = max(1, math.ceil(max(g.shape[1], g.shape[2]) / _MAP_SIDE))
    plane = g[z, ::step, ::step]
    spacing_mm = reference.spacing
    out: dict[str, Any] = {
        "criterion": result.criterion, "z_index": z,
        "z_mm": round(float(reference.index_to_world(np.array([z, 0.0, 0.0]))[0]), 2),
        "slice_rule": rule, "step": step,
        "pixel_mm": [spacing_mm[1] * step, spacing_mm[2] * step],
        "orientation_lps": bool(np.allclose(reference.direction_matrix, np.eye(3))),
        "gamma": [[finite_or_none(round(float(v), 3)) for v in row] for row in plane],
    }
    if ct is not None:
        out["ct_grey"] = _ct_grey(ct, reference, z, plane.shape, step)
        out["ct_window_hu"] = list(MAP_CT_WINDOW_HU)
    return out


def _ct_grey(ct: Volume, reference: Volume, z: int, shape: tuple[int, ...],
             step: int) -> list[list[int]]:
    from scipy import ndimage

    rows, cols = np.meshgrid(np.arange(shape[0]) * step, np.arange(shape[1]) * step,
                             indexing="ij")
    index = np.stack([np.full(rows.shape, float(z)), rows, cols], axis=-1).astype(float)
    at = ct.world_to_index(reference.index_to_world(index))
    hu = ndimage.map_coordinates(np.asarray(ct.array, dtype=float), np.moveaxis(at, -1, 0),
                                 order=1, mode="constant", cval=_OUTSIDE_CT_HU)
    lo, hi = MAP_CT_WINDOW_HU
    return np.clip((hu - lo) / (hi - lo) * 255.0, 0, 255).round().astype(int).tolist()
