"""The engine's ``gamma`` check: thin wrapper of :func:`checks.gamma.gamma_indices`.

Defaults follow AAPM TG-218 (3 %/2 mm, 10 % cutoff, global, reference maximum) plus the
SynthRAD2025 2 %/2 mm criterion. Per-case details: the settings, one gamma histogram per
criterion and a small gamma-map slice (the axial slice with the most failing points of the
first criterion, downsampled to at most 64 x 64) for the report.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks._gamma_inputs import GammaInputError, finite_or_none, parse_criterion
from checks.base import Check, CheckOutput, Measurement, MetricInfo, Slot
from checks.gamma import GammaResult, gamma_indices
from qa.errors import QAInputError

__all__ = ["GammaOptions", "GammaCheck", "map_slice"]

_SLOT_OF_INPUT = {"reference": "reference", "evaluated": "evaluated", "roi": "mask"}
_MAP_SIDE = 64


@pydantic_dataclass(config=ConfigDict(extra="forbid", frozen=True))
class GammaOptions:
    """Options of ``gamma`` as written in the protocol YAML (see :func:`gamma_indices`)."""

    criteria: tuple[str, ...] = ("3%/2mm", "2%/2mm")
    lower_cutoff_percent: float = Field(default=10.0, ge=0.0, lt=100.0)
    local: bool = False
    normalization_gy: float | None = Field(default=None, gt=0.0)
    max_gamma: float = Field(default=2.0, gt=1.0)
    cutoff_on_union: bool = False

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
                roi=inputs.get("mask"), cutoff_on_union=opts.cutoff_on_union)
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
                "pass": "gamma <= 1",
            },
            "gamma_histograms": {r.criterion: {"edges": list(r.histogram_edges),
                                               "counts": list(r.histogram_counts)}
                                 for r in results},
            "gamma_map_slice": map_slice(first, inputs["reference"].spacing),
        }
        return CheckOutput(measurements=tuple(rows), details=details)


def map_slice(result: GammaResult, spacing_mm: tuple[float, float, float]) -> dict[str, Any]:
    """The axial slice with the most failing points (else the most evaluated), downsampled.

    Returns ``{"criterion", "z_index", "step", "pixel_mm": [dy, dx], "gamma": rows}`` with
    NaN (not evaluated) as ``None``; ``step`` is the in-plane decimation (nearest).
    """
    g = result.gamma
    failing = np.nansum(g > 1.0, axis=(1, 2)) if g.size else np.zeros(0)
    evaluated = np.sum(~np.isnan(g), axis=(1, 2))
    z = int(np.argmax(failing)) if failing.size and failing.max() > 0 else int(np.argmax(evaluated))
    step = max(1, math.ceil(max(g.shape[1], g.shape[2]) / _MAP_SIDE))
    plane = g[z, ::step, ::step]
    return {
        "criterion": result.criterion, "z_index": z, "step": step,
        "pixel_mm": [spacing_mm[1] * step, spacing_mm[2] * step],
        "gamma": [[finite_or_none(round(float(v), 4)) for v in row] for row in plane],
    }
