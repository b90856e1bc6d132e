"""Dose-volume histograms and DVH differences between a reference and an evaluated dose.

Public API: :func:`structure_weights`, :func:`cumulative_dvh`, :func:`dvh_metrics`,
:func:`dvh_differences`, :func:`high_dose_mae`, their records (:class:`DVHMetrics`,
:class:`DVHDifference`) and the engine's :class:`DVHCheck` (in :mod:`checks._dvh_check`).

Conventions: doses in Gy; a structure's voxels are weighted by the fraction of the voxel
inside it (partial volume, :func:`qa.volume.resample_like` ``method="fraction"`` when the
mask is on another grid; exactly 0/1 on the dose grid), and each voxel's dose is the dose at
its centre (no sub-voxel dose interpolation). Differences are evaluated - reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from qa.volume import Volume, resample_like, same_grid

__all__ = ["DVHInputError", "DVHMetrics", "DVHDifference", "structure_weights",
           "cumulative_dvh", "dvh_metrics", "dvh_differences", "high_dose_mae"]

#: Dx levels (percent of the structure volume) reported by :func:`dvh_metrics`.
D_LEVELS_PERCENT = (98.0, 95.0, 50.0, 2.0)
#: Near-maximum dose volume (cc), ICRU 83 style small-volume maximum.
D_SMALL_VOLUME_CC = 0.03


class DVHInputError(ValueError):
    """A DVH input is unusable; ``input_name`` names the input or option."""

    def __init__(self, message: str, input_name: str) -> None:
        super().__init__(message)
        self.input_name = input_name


@dataclass(frozen=True)
class DVHMetrics:
    """DVH summary of one structure under one dose (Gy, cc, percent of the volume).

    ``d_gy[x]`` is the minimum dose received by the hottest ``x`` % of the volume;
    ``v_percent[d]`` the percent of the volume receiving at least ``d`` Gy.
    """

    structure: str
    volume_cc: float
    dmean_gy: float
    dmax_gy: float
    d_gy: dict[str, float]
    d0_03cc_gy: float
    v_percent: dict[str, float]


@dataclass(frozen=True)
class DVHDifference:
    """Evaluated minus reference DVH metrics of one structure, in Gy and % of Rx."""

    structure: str
    reference: DVHMetrics
    evaluated: DVHMetrics
    diff_gy: dict[str, float]
    diff_percent_rx: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def structure_weights(structure: Volume, dose: Volume, name: str = "structure") -> np.ndarray:
    """Fraction (0..1) of each dose voxel inside ``structure``, on ``dose``'s grid.

    On the same grid a boolean mask gives exactly 0/1; otherwise the mask is resampled
    with ``method="fraction"`` (trilinear of the 0/1 mask: a partial-volume estimate).

    Raises
    ------
    DVHInputError
        Mask not boolean-like, or empty on the dose grid.
    """
    arr = np.asarray(structure.array)
    if arr.dtype != bool and not np.all(np.isin(arr, (0, 1))):
        raise DVHInputError(f"structure {name!r} is not a boolean mask (0/1 values).", name)
    if same_grid(structure, dose):
        weights = arr.astype(np.float64)
    else:
        weights = resample_like(structure.with_array(arr.astype(bool, copy=False)), dose,
                                method="fraction").array.astype(np.float64)
    if not np.any(weights > 0):
        raise DVHInputError(
            f"structure {name!r} is empty on the dose grid (no voxel inside); check the "
            "contour and that the dose grid covers it.", name)
    return weights


def cumulative_dvh(dose_gy: np.ndarray, weights: np.ndarray, voxel_cc: float,
                   *, bin_width_gy: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative DVH: dose levels (Gy) and percent of the volume receiving >= each level.

    Levels are ``0, w, 2w, ...`` up to the structure's maximum dose plus one bin.

    Examples
    --------
    >>> d, v = cumulative_dvh(np.array([1.0, 2.0]), np.array([1.0, 1.0]), 0.1,
    ...                       bin_width_gy=1.0)
    >>> d.tolist(), v.tolist()
    ([0.0, 1.0, 2.0, 3.0], [100.0, 100.0, 50.0, 0.0])
    """
    inside = weights > 0
    doses, w = dose_gy[inside], weights[inside]
    levels = np.arange(0.0, float(doses.max()) + 2 * bin_width_gy, bin_width_gy)
    order = np.argsort(doses)
    sorted_doses, sorted_w = doses[order], w[order]
    cum_from_top = np.concatenate([np.cumsum(sorted_w[::-1])[::-1], [0.0]])
    first = np.searchsorted(sorted_doses, levels, side="left")
    return levels, 100.0 * cum_from_top[first] / cum_from_top[0]


def dvh_metrics(dose: Volume, weights: np.ndarray, structure: str, *,
                v_levels_gy: Sequence[float] = ()) -> DVHMetrics:
    """D98, D95, D50, D2, Dmean, Dmax, D0.03cc and V(d Gy) of one structure.

    Dx is the dose of the voxel at which the volume accumulated from the hottest voxel
    down first reaches x % of the structure (no interpolation between voxels); D0.03cc the
    same at 0.03 cc (the maximum voxel dose when the structure is smaller).
    """
    arr = np.asarray(dose.array, dtype=np.float64)
    inside = weights > 0
    doses, w = arr[inside], weights[inside]
    voxel_cc = dose.voxel_volume_mm3 / 1000.0
    order = np.argsort(doses)[::-1]
    d_sorted, cum = doses[order], np.cumsum(w[order])
    total = float(cum[-1])

    def dose_at_volume(volume: float) -> float:
        k = int(np.searchsorted(cum, volume - 1e-12 * total, side="left"))
        return float(d_sorted[min(k, d_sorted.size - 1)])

    return DVHMetrics(
        structure=structure,
        volume_cc=total * voxel_cc,
        dmean_gy=float(np.sum(doses * w) / total),
        dmax_gy=float(d_sorted[0]),
        d_gy={f"d{x:g}": dose_at_volume(x / 100.0 * total) for x in D_LEVELS_PERCENT},
        d0_03cc_gy=dose_at_volume(min(D_SMALL_VOLUME_CC / voxel_cc, total)),
        v_percent={f"v{d:g}gy": float(100.0 * np.sum(w[doses >= d]) / total)
                   for d in v_levels_gy},
    )


def dvh_differences(reference: Volume, evaluated: Volume, structures: Mapping[str, Volume],
                    *, prescription_gy: float, v_levels_gy: Sequence[float] = ()
                    ) -> tuple[DVHDifference, ...]:
    """Per-structure DVH metrics under both doses and their differences (evaluated - ref).

    ``evaluated`` must be on ``reference``'s grid or is resampled onto it (trilinear);
    structures are weighted on the reference grid (see :func:`structure_weights`).
    ``diff_percent_rx`` is ``100 x diff_gy / prescription_gy``.
    """
    rx = _check_prescription(prescription_gy)
    ev = _aligned(reference, evaluated)
    return tuple(_difference(reference, ev, structure_weights(mask, reference, name), name,
                             rx, v_levels_gy) for name, mask in structures.items())


def high_dose_mae(reference: Volume, evaluated: Volume, *, prescription_gy: float,
                  threshold_fraction: float = 0.9) -> tuple[float, int]:
    """SynthRAD2025 dose MAE: mean |D_eval - D_ref| over voxels with D_ref >= 0.9 Rx,
    divided by Rx, in percent; and the number of voxels. NaN (0 voxels) when none."""
    rx = _check_prescription(prescription_gy)
    ev = _aligned(reference, evaluated)
    ref = np.asarray(reference.array, dtype=np.float64)
    sel = ref >= threshold_fraction * rx
    n = int(np.count_nonzero(sel))
    if not n:
        return math.nan, 0
    return float(100.0 * np.mean(np.abs(np.asarray(ev.array, float)[sel] - ref[sel])) / rx), n


def _difference(reference: Volume, evaluated_on_reference: Volume, weights: np.ndarray,
                name: str, rx: float, v_levels_gy: Sequence[float]) -> DVHDifference:
    """One structure's :class:`DVHDifference` from its weights on the reference grid (the
    evaluated dose already on that grid, ``rx`` already checked)."""
    ref_m = dvh_metrics(reference, weights, name, v_levels_gy=v_levels_gy)
    ev_m = dvh_metrics(evaluated_on_reference, weights, name, v_levels_gy=v_levels_gy)
    diff = {"dmean": ev_m.dmean_gy - ref_m.dmean_gy,
            "d0_03cc": ev_m.d0_03cc_gy - ref_m.d0_03cc_gy,
            **{k: ev_m.d_gy[k] - ref_m.d_gy[k] for k in ref_m.d_gy}}
    return DVHDifference(structure=name, reference=ref_m, evaluated=ev_m, diff_gy=diff,
                         diff_percent_rx={k: 100.0 * v / rx for k, v in diff.items()})


def _check_prescription(prescription_gy: float) -> float:
    rx = float(prescription_gy)
    if not math.isfinite(rx) or rx <= 0:
        raise DVHInputError(f"prescription_gy must be > 0 Gy, got {prescription_gy!r}.",
                            "prescription_gy")
    return rx


def _aligned(reference: Volume, evaluated: Volume) -> Volume:
    for vol, name in ((reference, "reference"), (evaluated, "evaluated")):
        arr = np.asarray(vol.array, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise DVHInputError(f"{name} dose has non-finite values (NaN or inf).", name)
        if np.any(arr < 0):
            raise DVHInputError(f"{name} dose has negative values; a dose cannot be "
                                "negative: check the export.", name)
    if same_grid(reference, evaluated):
        return evaluated
    return resample_like(evaluated, reference, method="linear")


def __getattr__(name: str) -> Any:
    if name in ("DVHCheck", "DVHOptions"):
        from checks import _dvh_check

        return getattr(_dvh_check, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
