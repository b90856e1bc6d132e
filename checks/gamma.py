"""3D gamma index between a reference and an evaluated dose (Low 1998; TG-218 conventions).

Public API: :func:`gamma_index` (one criterion), :func:`gamma_indices` (several criteria
sharing the geometry, masks and cutoff), their record :class:`GammaResult`,
:func:`parse_criterion`, :func:`dose_volume_from_axes` and the engine's
:class:`GammaCheck` (in :mod:`checks._gamma_check`).

Conventions: doses in Gy on :class:`qa.volume.Volume` grids (any spacing, origin, extent
and orthonormal direction; the evaluated dose is interpolated trilinearly in physical
space). A point passes when gamma <= 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from checks import _gamma_search as search
from checks._gamma_inputs import (
    Criterion,
    GammaInputError,
    check_dose,
    check_units_agree,
    dose_volume_from_axes,
    finite_or_none,
    parse_criterion,
)
from qa.volume import Volume, resample_like, same_grid

__all__ = ["Criterion", "GammaInputError", "GammaResult", "gamma_index", "gamma_indices",
           "parse_criterion", "dose_volume_from_axes", "HISTOGRAM_STEP"]

logger = logging.getLogger(__name__)

#: Width of the gamma histogram bins (edges 0, 0.1, ..., max_gamma; last bin closed).
HISTOGRAM_STEP = 0.1
_GRID_EPS = 1e-6


@dataclass(frozen=True, eq=False)
class GammaResult:
    """Gamma of one criterion: the map, the pass rate and its denominator.

    ``gamma`` is on the reference grid, NaN where not evaluated, values capped at
    ``max_gamma`` (a value equal to ``max_gamma`` means ">= max_gamma"). Exclusions are
    disjoint and counted in this order: ``n_outside_roi`` (ROI given), ``n_below_cutoff``
    (dose below ``cutoff_gy``), ``n_outside_grid`` (above the cutoff but outside the
    evaluated dose grid: reported, never silently dropped). ``n_evaluated`` plus the three
    equals the number of reference voxels. ``backend`` and ``device`` say which search
    produced the values: ``"numba"`` (the certified CPU kernel) or ``"torch"`` (the lattice
    search), and the torch device name (``"cpu"``, ``"cuda:0"``).
    """

    criterion: str
    dose_percent: float
    distance_mm: float
    local: bool
    normalization_gy: float
    cutoff_gy: float
    cutoff_on_union: bool
    max_gamma: float
    gamma: np.ndarray = field(repr=False)
    pass_rate_percent: float
    n_evaluated: int
    n_passed: int
    n_below_cutoff: int
    n_outside_grid: int
    n_outside_roi: int
    mean_gamma: float
    median_gamma: float
    gamma_p95: float
    histogram_edges: tuple[float, ...]
    histogram_counts: tuple[int, ...]
    backend: str = ""
    device: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Everything but the map, JSON-serialisable (non-finite floats -> None)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name == "gamma":
                continue
            value = getattr(self, name)
            if isinstance(value, float):
                value = finite_or_none(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


def gamma_index(reference: Volume, evaluated: Volume, dose_percent: float, distance_mm: float,
                **kwargs: Any) -> GammaResult:
    """Gamma index of ``evaluated`` against ``reference`` for one criterion.

    Same parameters as :func:`gamma_indices` with the criterion given as ``dose_percent``
    (percent) and ``distance_mm`` (mm).

    Examples
    --------
    >>> import numpy as np
    >>> from qa.volume import Volume
    >>> z = np.arange(20.0)
    >>> ref = Volume(np.broadcast_to(10 + z[:, None, None], (20, 4, 4)).copy(), (1, 1, 1))
    >>> r = gamma_index(ref, ref.with_array(ref.array * 1.01), 3, 2)
    >>> r.pass_rate_percent, r.n_evaluated
    (100.0, 320)
    """
    return gamma_indices(reference, evaluated, [Criterion(float(dose_percent),
                                                          float(distance_mm))], **kwargs)[0]


def gamma_indices(
    reference: Volume,
    evaluated: Volume,
    criteria: Sequence[str | Criterion],
    *,
    lower_cutoff_percent: float = 10.0,
    local: bool = False,
    normalization_gy: float | None = None,
    max_gamma: float = 2.0,
    roi: Volume | None = None,
    cutoff_on_union: bool = False,
    search_step_mm: float | None = None,
    device: str | None = None,
    backend: str = "auto",
) -> tuple[GammaResult, ...]:
    """Gamma index for several criteria sharing the geometry, masks and cutoff.

    Parameters
    ----------
    reference, evaluated : Volume
        Doses in Gy (finite, >= 0). Grids may differ in spacing, origin, extent and
        direction; gamma is computed at the reference voxel centres and the evaluated dose
        is interpolated trilinearly in physical space. A ``dose_units`` metadata other than
        ``GY`` is refused, as are maxima differing by a factor 50-200 (cGy mixed with Gy).
        Bare arrays with (possibly descending) axes: :func:`dose_volume_from_axes`.
    criteria : sequence of str or Criterion
        E.g. ``["3%/2mm", "2%/2mm"]``.
    lower_cutoff_percent : float
        A reference point is evaluated when its dose is ``>= cutoff% x normalisation``
        (TG-218: 10 %). Must be in [0, 100).
    local : bool
        Local gamma: dose tolerance ``dose% x D_ref(r)`` per point (points with zero
        reference dose are then never evaluated). Global (default): ``dose% x
        normalisation``.
    normalization_gy : float, optional
        Global normalisation (a prescription dose); default the reference maximum.
    max_gamma : float
        Search radius ``max_gamma x DTA``; values are capped at it. Must be > 1 so the pass
        rate is defined (default 2).
    roi : Volume, optional
        Boolean mask (body, PTV); on the reference grid or resampled onto it (nearest).
        Must not be empty.
    cutoff_on_union : bool
        Also evaluate points below the reference cutoff whose interpolated evaluated dose
        is above it (a hot spot in the evaluated dose is then not missed).
    search_step_mm : float, optional
        Coarse lattice step; default ``min(DTA / 8, smallest evaluated spacing / 2)``.
    device : str, optional
        torch device; default CUDA when available, else CPU (all cores).
    backend : {"auto", "numba", "torch"}
        ``"auto"``: the compiled numba kernel on CPU when numba is installed (cell-wise
        branch and bound, certified within 0.005 of the exact minimum), else torch
        (vectorised lattice search and refinement; the CUDA path).

    Returns
    -------
    tuple of GammaResult
        One per criterion, in order.

    Raises
    ------
    GammaInputError
        Criterion does not parse; ``max_gamma <= 1``; cutoff out of range; NaN, negative
        or non-Gy dose; empty ROI; grids that do not overlap at all (``input_name`` names
        the input or option).

    Notes
    -----
    gamma(r) = min_e sqrt(|e - r|^2 / DTA^2 + (D_e(e) - D_r(r))^2 / dD^2) over positions e
    inside the evaluated grid, D_e the trilinear interpolant (Low et al. [1]_). CPU (numba,
    :mod:`checks._gamma_cells`): per point, the evaluated grid's cells are visited nearest
    first and pruned by exact lower bounds (distance and dose gap; then, inside a cell,
    branch and bound with a linear-plus-bounded-remainder model of the trilinear, solved
    exactly under the box constraints, and Gauss-Newton steps), so each value satisfies
    ``exact <= gamma <= exact + 0.005`` (a certificate from the bounds; Ju et al. [4]_
    also minimise exactly per cell, on simplices). torch (:mod:`checks._gamma_search`): a
    cubic lattice of offsets sorted by distance with early exit (Wendling et al. [2]_),
    then refinement of each point's six best lattice offsets. Every value is attained at a
    real position, so it is an upper bound of the exact continuous minimum. Measured in
    ``tests/checks/test_gamma*.py``: below 1e-3 on analytic shifts, scalings and ramps;
    against pymedphys 0.41 with ``interp_fraction=40`` the 99th percentile of |dgamma| is
    below 0.02; values never exceed pymedphys's at its default ``interp_fraction=10`` by
    more than 0.005, nor a brute-force sampled minimum by more than 0.005. Unlike
    pymedphys, reference points outside the evaluated grid are counted
    (``n_outside_grid``) instead of silently becoming NaN.

    References
    ----------
    .. [1] Low, Harms, Mutic, Purdy, "A technique for the quantitative evaluation of dose
           distributions", Med Phys 25(5):656-661 (1998), doi:10.1118/1.598248.
    .. [2] Wendling et al., "A fast algorithm for gamma evaluation in 3D", Med Phys
           34(5):1647-1654 (2007), doi:10.1118/1.2721657.
    .. [3] Miften et al., "Tolerance limits and methodologies for IMRT measurement-based
           verification QA: AAPM TG-218", Med Phys 45(4):e53-e83 (2018),
           doi:10.1002/mp.12810.
    .. [4] Ju, Simpson, Deasy, Low, "Geometric interpretation of the gamma dose
           distribution comparison technique: interpolation-free calculation", Med Phys
           35(3):879-887 (2008), doi:10.1118/1.2836952.
    """
    parsed = [parse_criterion(c) for c in criteria]
    if not parsed:
        raise GammaInputError("criteria is empty; give at least one, e.g. ['3%/2mm'].",
                              "criteria")
    max_gamma = float(max_gamma)
    if not math.isfinite(max_gamma) or max_gamma <= 1.0:
        raise GammaInputError(
            f"max_gamma must be a finite number > 1 (the pass limit is gamma <= 1), got "
            f"{max_gamma!r}.", "max_gamma")
    cutoff = float(lower_cutoff_percent)
    if not 0.0 <= cutoff < 100.0:
        raise GammaInputError(
            f"lower_cutoff_percent must be in [0, 100), got {lower_cutoff_percent!r}.",
            "lower_cutoff_percent")
    if backend not in ("auto", "numba", "torch"):
        raise GammaInputError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}.",
                              "backend")
    ref = check_dose(reference, "reference")
    ev = check_dose(evaluated, "evaluated")
    ref_max, ev_max = float(ref.max()), float(ev.max())
    check_units_agree(ref_max, ev_max)
    if normalization_gy is None:
        norm = ref_max
        if norm <= 0:
            raise GammaInputError("reference dose is zero everywhere; nothing to compare.",
                                  "reference")
    else:
        norm = float(normalization_gy)
        if not math.isfinite(norm) or norm <= 0:
            raise GammaInputError(f"normalization_gy must be > 0 Gy, got {normalization_gy!r}.",
                                  "normalization_gy")
    cutoff_gy = cutoff / 100.0 * norm

    in_roi = _roi_mask(roi, reference)
    dev = search.pick_device(device)
    if backend == "auto":
        backend = "numba" if dev.type == "cpu" and _numba_available() else "torch"
    dtype = torch.float64
    grid = search.EvalGrid(
        dose=torch.as_tensor(ev, dtype=dtype, device=dev).contiguous(),
        shape=tuple(evaluated.shape),
        mm_to_index=torch.as_tensor(evaluated.direction_matrix / np.asarray(evaluated.spacing),
                                    dtype=dtype, device=dev),
    )
    above = ref >= cutoff_gy
    # only points that may be evaluated are mapped into the evaluated grid
    mapped = in_roi if cutoff_on_union else in_roi & above
    voxels = np.argwhere(mapped)  # (N, 3) reference indices
    coords = evaluated.world_to_index(reference.index_to_world(voxels))
    upper = np.asarray(evaluated.shape, dtype=np.float64) - 1.0
    inside = np.all((coords >= -_GRID_EPS) & (coords <= upper + _GRID_EPS), axis=-1)
    dose_ok = above[mapped]
    if cutoff_on_union:
        ev_at = np.full(len(voxels), -np.inf)
        pts = torch.as_tensor(coords[inside], dtype=dtype, device=dev)
        ev_at[inside] = search.interpolate(grid, pts)[0].cpu().numpy()
        dose_ok = dose_ok | (ev_at >= cutoff_gy)
    if local:
        dose_ok &= ref[mapped] > 0
    candidate = dose_ok
    evaluate = candidate & inside
    n_total = ref.size
    n_outside_roi = int(n_total - np.count_nonzero(in_roi))
    n_below = int(np.count_nonzero(in_roi) - np.count_nonzero(candidate))
    n_outside_grid = int(np.count_nonzero(candidate & ~inside))
    if np.count_nonzero(candidate) and not np.count_nonzero(evaluate):
        raise GammaInputError(
            "the evaluated dose grid does not overlap the reference points above the cutoff "
            f"(reference grid {reference!r}, evaluated grid {evaluated!r}); check both "
            "doses are in the same patient coordinates.", "evaluated")
    if n_outside_grid:
        logger.warning("gamma: %d reference point(s) above the cutoff lie outside the "
                       "evaluated grid and are not evaluated (n_outside_grid).",
                       n_outside_grid)
    where = tuple(voxels[evaluate].T)
    ref_idx = torch.as_tensor(coords[evaluate], dtype=dtype, device=dev)
    ref_dose = torch.as_tensor(ref[where], dtype=dtype, device=dev)
    min_spacing = min(evaluated.spacing)
    shared: dict[str, Any] = {}  # per-call data the criteria share (cell dose bounds)
    results = []
    for crit in parsed:
        if local:
            inv_dd = 1.0 / (crit.dose_percent / 100.0 * ref_dose)
        else:
            inv_dd = torch.full_like(ref_dose, 1.0 / (crit.dose_percent / 100.0 * norm))
        step = search_step_mm or min(crit.distance_mm / 8.0, min_spacing / 2.0)
        values = _run_search(backend, grid, ref_idx, ref_dose, inv_dd, crit.distance_mm,
                             max_gamma, float(step), evaluated.spacing, shared)
        gamma_map = np.full(ref.shape, np.nan)
        gamma_map[where] = values
        summary = _summarise(crit, local, norm, cutoff_gy, cutoff_on_union, max_gamma,
                             gamma_map, values, n_below, n_outside_grid, n_outside_roi)
        results.append(replace(summary, backend=backend, device=_device_name(dev)))
    return tuple(results)


def _device_name(device: torch.device) -> str:
    """``cpu``, or ``cuda:<index>`` (the device the torch tensors lived on)."""
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    return device.type


def _summarise(crit: Criterion, local: bool, norm: float, cutoff_gy: float, union: bool,
               max_gamma: float, gamma_map: np.ndarray, values: np.ndarray, n_below: int,
               n_outside_grid: int, n_outside_roi: int) -> GammaResult:
    n = int(values.size)
    n_pass = int(np.count_nonzero(values <= 1.0))
    n_bins = max(1, int(math.ceil(max_gamma / HISTOGRAM_STEP - 1e-9)))
    edges = np.minimum(np.arange(n_bins + 1) * HISTOGRAM_STEP, max_gamma)
    counts, _ = np.histogram(values, bins=edges)
    return GammaResult(
        criterion=crit.label, dose_percent=crit.dose_percent, distance_mm=crit.distance_mm,
        local=bool(local), normalization_gy=norm, cutoff_gy=cutoff_gy, cutoff_on_union=union,
        max_gamma=max_gamma, gamma=gamma_map,
        pass_rate_percent=100.0 * n_pass / n if n else math.nan,
        n_evaluated=n, n_passed=n_pass, n_below_cutoff=n_below,
        n_outside_grid=n_outside_grid, n_outside_roi=n_outside_roi,
        mean_gamma=float(values.mean()) if n else math.nan,
        median_gamma=float(np.median(values)) if n else math.nan,
        gamma_p95=float(np.percentile(values, 95)) if n else math.nan,
        histogram_edges=tuple(round(float(e), 10) for e in edges),
        histogram_counts=tuple(int(c) for c in counts),
    )


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _run_search(backend: str, grid: search.EvalGrid, ref_idx: torch.Tensor,
                ref_dose: torch.Tensor, inv_dd: torch.Tensor, dta_mm: float, max_gamma: float,
                step_mm: float, spacing_mm: tuple[float, float, float],
                shared: dict[str, Any]) -> np.ndarray:
    if backend == "torch":
        return search.search(grid, ref_idx, ref_dose, inv_dd, dta_mm, max_gamma,
                             step_mm).cpu().numpy()
    from checks import _gamma_cells

    if "dose" not in shared:
        shared["dose"] = np.ascontiguousarray(grid.dose.cpu().numpy(), dtype=np.float64)
        shared["bounds"] = _gamma_cells.cell_bounds(shared["dose"])
        shared["ref_idx"] = np.ascontiguousarray(ref_idx.cpu().numpy())
        shared["ref_dose"] = np.ascontiguousarray(ref_dose.cpu().numpy())
    offsets, lower_mm = _gamma_cells.cell_offsets(spacing_mm, max_gamma * dta_mm)
    lo, hi = shared["bounds"]
    return _gamma_cells.search_points(
        shared["dose"], lo, hi, shared["ref_idx"], shared["ref_dose"],
        np.ascontiguousarray(inv_dd.cpu().numpy()), np.asarray(spacing_mm, dtype=np.float64),
        float(dta_mm), float(max_gamma), offsets, lower_mm, _gamma_cells.GN_STEPS,
        _gamma_cells.MAX_DEPTH, _gamma_cells.TOLERANCE_GAMMA)


def _roi_mask(roi: Volume | None, reference: Volume) -> np.ndarray:
    if roi is None:
        return np.ones(reference.shape, dtype=bool)
    if not same_grid(roi, reference):
        roi = resample_like(roi, reference, method="nearest")
    arr = np.asarray(roi.array)
    if arr.dtype != bool:
        if not np.all(np.isin(arr, (0, 1))):
            raise GammaInputError("roi must be a boolean mask (0/1 values).", "roi")
        arr = arr.astype(bool)
    if not arr.any():
        raise GammaInputError(
            "roi is empty on the reference dose grid (no voxel inside); check the mask "
            "and that it covers the dose grid.", "roi")
    return arr


def __getattr__(name: str) -> Any:
    # the engine's check class lives in a private module that imports this one
    if name in ("GammaCheck", "GammaOptions"):
        from checks import _gamma_check

        return getattr(_gamma_check, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
