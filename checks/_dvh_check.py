"""The engine's ``dvh`` check: thin wrapper of :func:`checks.dvh.dvh_differences`.

Per structure (label = structure name): differences evaluated - reference of D98, D95,
D50, D2, Dmean and D0.03cc in Gy and in percent of the prescription, V(x Gy) differences in
percentage points; overall the SynthRAD2025 dose MAE over voxels >= 90 % of Rx. Details:
each structure's cumulative DVH under both doses (for the report's curves).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks.base import Check, CheckOutput, Measurement, MetricInfo, Slot
from checks.dvh import (
    DVHInputError,
    _aligned,
    _check_prescription,
    _difference,
    cumulative_dvh,
    high_dose_mae,
    structure_weights,
)
from qa.errors import QAInputError

__all__ = ["DVHOptions", "DVHCheck"]

_KEYS = ("d98", "d95", "d50", "d2", "dmean", "d0_03cc")
_CURVE_POINTS = 120


@pydantic_dataclass(config=ConfigDict(extra="forbid", frozen=True))
class DVHOptions:
    """Options of ``dvh``: ``prescription_gy`` (required, > 0) and ``v_levels_gy``."""

    prescription_gy: float = Field(gt=0.0)
    v_levels_gy: tuple[float, ...] = ()


def _metrics() -> dict[str, MetricInfo]:
    out = {}
    for key in _KEYS:
        name = key.replace("d0_03cc", "D0.03cc").upper() if key != "dmean" else "Dmean"
        out[f"{key}_diff_gy"] = MetricInfo("Gy", f"{name} evaluated - reference "
                                                 "(label: structure)", "zero")
        out[f"{key}_diff_percent_rx"] = MetricInfo(
            "%", f"{name} evaluated - reference, percent of the prescription", "zero")
    out["v_diff_percent"] = MetricInfo("%", "V(x Gy) evaluated - reference, percentage "
                                            "points (label: structure@xGy)", "zero")
    out["dose_mae_percent_rx"] = MetricInfo(
        "%", "SynthRAD dose MAE over voxels >= 90 % Rx, percent of Rx")
    return out


class DVHCheck(Check):
    """DVH differences between the evaluated and the reference dose, per structure."""

    name: ClassVar[str] = "dvh"
    title: ClassVar[str] = "Dose agreement: DVH differences"
    slots: ClassVar[dict[str, Slot]] = {
        "reference": Slot("dose", True, "reference dose (Gy), e.g. computed on the CT"),
        "evaluated": Slot("dose", True, "evaluated dose (Gy), e.g. computed on the sCT"),
        "structures": Slot("structures", True, "structure set (PTV, OARs)",
                           grid_from="reference"),
    }
    metrics: ClassVar[dict[str, MetricInfo]] = _metrics()
    Options: ClassVar[type] = DVHOptions

    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        """Measurements for one case from ``{"reference", "evaluated", "structures"}``.

        A structure that cannot be evaluated (its mask does not read, is not binary, or has
        no voxel on the dose grid) gets NaN rows and a problem in
        :attr:`CheckOutput.problems` (recorded by the engine as an error of the case); the
        other structures are evaluated. A bad dose or prescription fails the whole case.
        """
        self.require_inputs(inputs)
        opts = self.options
        ref, ev, structures = inputs["reference"], inputs["evaluated"], inputs["structures"]
        curves = {}
        try:
            rx = _check_prescription(opts.prescription_gy)
            ev_on_ref = _aligned(ref, ev)
            mae, n_mae = high_dose_mae(ref, ev_on_ref, prescription_gy=opts.prescription_gy)
        except DVHInputError as exc:
            if exc.input_name in ("reference", "evaluated"):
                raise ValueError(f"input {exc.input_name!r}: {exc}") from exc
            raise QAInputError(str(exc), check=self.name, field=exc.input_name) from exc
        rows = [Measurement("dose_mae_percent_rx", mae, "%")]
        diffs, problems, not_evaluated = [], [], []
        for name in structures:
            try:
                # each structure's weights are computed once, for its metrics and its curves
                weights = structure_weights(structures[name], ref, name)
            except (DVHInputError, QAInputError) as exc:
                problems.append(_structure_problem(name, exc, self.name))
                not_evaluated.append(name)
                rows += _not_evaluated(name, opts.v_levels_gy)
                continue
            d = _difference(ref, ev_on_ref, weights, name, rx, opts.v_levels_gy)
            diffs.append(d)
            curves[name] = _curves(ref, ev_on_ref, weights)
            for key in _KEYS:
                rows.append(Measurement(f"{key}_diff_gy", d.diff_gy[key], "Gy", d.structure))
                rows.append(Measurement(f"{key}_diff_percent_rx", d.diff_percent_rx[key], "%",
                                        d.structure))
            for key, value in d.reference.v_percent.items():
                rows.append(Measurement("v_diff_percent", d.evaluated.v_percent[key] - value,
                                        "%", f"{d.structure}@{key[1:]}"))
        details = {
            "prescription_gy": opts.prescription_gy,
            "high_dose_voxels": n_mae,
            "dvh_curves": curves,
            "table": {d.structure: {
                "reference_gy": {**d.reference.d_gy, "dmean": d.reference.dmean_gy,
                                 "d0_03cc": d.reference.d0_03cc_gy},
                "evaluated_gy": {**d.evaluated.d_gy, "dmean": d.evaluated.dmean_gy,
                                 "d0_03cc": d.evaluated.d0_03cc_gy},
                "volume_cc": d.reference.volume_cc} for d in diffs},
        }
        details["not_evaluated"] = not_evaluated
        return CheckOutput(measurements=tuple(rows), details=_clean(details),
                           problems=tuple(problems))


def _not_evaluated(name: str, v_levels_gy: tuple[float, ...]) -> list[Measurement]:
    """NaN rows of a structure that could not be evaluated (same metrics and labels)."""
    rows = [Measurement(f"{key}_diff_{suffix}", math.nan, unit, name)
            for key in _KEYS for suffix, unit in (("gy", "Gy"), ("percent_rx", "%"))]
    return rows + [Measurement("v_diff_percent", math.nan, "%", f"{name}@{level:g}gy")
                   for level in v_levels_gy]


def _structure_problem(name: str, exc: Exception, check: str) -> QAInputError:
    """The problem of one structure: a mask that did not read keeps its file and role; a
    mask that is not binary or has no voxel on the dose grid names the structures input."""
    suffix = " (not evaluated on this case; the other structures are)"
    if isinstance(exc, QAInputError):
        return type(exc)(exc.message + suffix, check=check, path=exc.path,
                         field=exc.field or name, role=exc.role)
    return QAInputError(f"input 'structures': {exc}{suffix}", check=check, field=name)


def _curves(ref, ev_on_ref, weights: np.ndarray) -> dict[str, Any]:
    """Cumulative DVHs of one structure (``weights`` on the reference grid) under the
    reference dose and the evaluated dose already on the reference grid."""
    top = max(float(np.max(np.where(weights > 0, ref.array, 0))),
              float(np.max(np.where(weights > 0, ev_on_ref.array, 0))))
    width = max(top / _CURVE_POINTS, 1e-3)
    voxel_cc = ref.voxel_volume_mm3 / 1000.0
    d_ref, v_ref = cumulative_dvh(np.asarray(ref.array, float), weights, voxel_cc,
                                  bin_width_gy=width)
    d_ev, v_ev = cumulative_dvh(np.asarray(ev_on_ref.array, float), weights, voxel_cc,
                                bin_width_gy=width)
    n = max(d_ref.size, d_ev.size)

    def pad(v: np.ndarray) -> np.ndarray:
        return np.concatenate([v, np.zeros(n - v.size)])

    dose = np.arange(n) * width
    return {"dose_gy": [round(float(x), 4) for x in dose],
            "reference_percent": [round(float(x), 3) for x in pad(v_ref)],
            "evaluated_percent": [round(float(x), 3) for x in pad(v_ev)]}


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
