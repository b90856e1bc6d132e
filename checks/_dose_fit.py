"""Private core of :mod:`checks.noise`: power-law fits against CTDIvol and dose reduction.

value = a·CTDIvol^k fitted by least squares on (log CTDIvol, log value); for noise
k = −b (σ = a·CTDIvol^(−b), b ≈ 0.5 for FBP: quantum noise, σ² ∝ 1/I₀ ∝ 1/CTDIvol); for d′
k = +b. Uncertainty by bootstrap (Efron & Tibshirani 1993): points are resampled with
replacement within each dose level (repeats or ROIs of one level stay at that level); when a
level has a single point, residuals of the log fit are resampled instead. Percentile
intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_DOSE_LEVELS = 3
CRITERIA = ("iso_dprime", "iso_noise")


@dataclass(frozen=True)
class PowerLawFit:
    """value = a·CTDIvol^exponent with bootstrap percentile intervals.

    ``a`` is in the value's unit at 1 mGy; ``exponent`` is dimensionless (−b for noise).
    ``replicates_a`` / ``replicates_exponent``: the bootstrap fits, kept for dose-reduction
    intervals. ``r_squared`` of the log-log fit; ``n_levels`` distinct doses, ``n_points``.
    """

    a: float
    exponent: float
    a_ci: tuple[float, float]
    exponent_ci: tuple[float, float]
    r_squared: float
    n_levels: int
    n_points: int
    confidence: float
    replicates_a: np.ndarray
    replicates_exponent: np.ndarray

    def predict(self, ctdivol_mgy: np.ndarray | float) -> np.ndarray:
        """a·CTDIvol^exponent."""
        return self.a * np.asarray(ctdivol_mgy, dtype=np.float64) ** self.exponent


@dataclass(frozen=True)
class DoseReduction:
    """Dose reduction of an evaluated reconstruction against a reference one.

    At ``reference_dose_mgy`` the reference reconstruction gives a target value (its d′ for
    ``iso_dprime``, its σ for ``iso_noise``); ``evaluated_dose_mgy`` is the CTDIvol at which
    the evaluated reconstruction reaches it; ``reduction_percent`` = 100·(1 − evaluated /
    reference dose) (negative: the evaluated one needs MORE dose), with its percentile
    interval ``ci_percent``.
    """

    criterion: str
    reference_dose_mgy: float
    target_value: float
    evaluated_dose_mgy: float
    reduction_percent: float
    ci_percent: tuple[float, float]
    confidence: float


def fit_power_law(ctdivol_mgy: np.ndarray, values: np.ndarray, *, rng: np.random.Generator,
                  n_bootstrap: int = 2000, confidence: float = 0.95,
                  what: str = "value") -> PowerLawFit:
    """Fit ``values = a·ctdivol^k``; see :func:`checks.noise.fit_power_law`."""
    dose = np.asarray(ctdivol_mgy, dtype=np.float64).ravel()
    val = np.asarray(values, dtype=np.float64).ravel()
    if dose.shape != val.shape:
        raise ValueError(f"ctdivol_mgy and {what} must have the same length, got {dose.size} "
                         f"and {val.size}.")
    bad = ~(np.isfinite(dose) & np.isfinite(val) & (dose > 0) & (val > 0))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} point(s) have a CTDIvol or {what} that is not a "
                         "positive finite number; a power law needs positive values on both "
                         "axes.")
    levels = np.unique(dose)
    if levels.size < MIN_DOSE_LEVELS:
        raise ValueError(
            f"a {what}-versus-dose curve needs at least {MIN_DOSE_LEVELS} distinct CTDIvol "
            f"levels, got {levels.size} ({', '.join(f'{d:g}' for d in levels)} mGy); scan the "
            "phantom at more dose levels.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    if int(n_bootstrap) < 100:
        raise ValueError(f"n_bootstrap must be >= 100, got {n_bootstrap!r}.")
    x, y = np.log(dose), np.log(val)
    slope, intercept = _line(x, y)
    resid = y - (intercept + slope * x)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
    groups = [np.nonzero(dose == level)[0] for level in levels]
    n_boot = int(n_bootstrap)
    if min(g.size for g in groups) >= 2:
        idx = np.concatenate([g[rng.integers(0, g.size, size=(n_boot, g.size))]
                              for g in groups], axis=1)
        xb, yb = x[idx], y[idx]
    else:
        fitted = intercept + slope * x
        xb = np.broadcast_to(x, (n_boot, x.size))
        yb = fitted + resid[rng.integers(0, x.size, size=(n_boot, x.size))]
    slopes, intercepts = _line(xb, yb)
    alpha = 0.5 * (1 - confidence)
    a_rep = np.exp(intercepts)
    return PowerLawFit(
        a=float(math.exp(intercept)), exponent=float(slope),
        a_ci=_interval(a_rep, alpha), exponent_ci=_interval(slopes, alpha),
        r_squared=r2, n_levels=int(levels.size), n_points=int(dose.size),
        confidence=float(confidence), replicates_a=a_rep, replicates_exponent=slopes,
    )


def dose_reduction(reference: PowerLawFit, evaluated: PowerLawFit, reference_dose_mgy: float,
                   *, criterion: str) -> DoseReduction:
    """Dose reduction at equal value; see :func:`checks.noise.dose_reduction`."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    d_ref = float(reference_dose_mgy)
    if not (math.isfinite(d_ref) and d_ref > 0):
        raise ValueError(f"reference_dose_mgy must be a positive number, got "
                         f"{reference_dose_mgy!r}.")
    target = reference.a * d_ref**reference.exponent
    d_eval = _dose_for(target, evaluated.a, evaluated.exponent)
    n = min(reference.replicates_a.size, evaluated.replicates_a.size)
    targets = reference.replicates_a[:n] * d_ref ** reference.replicates_exponent[:n]
    d_evals = _dose_for(targets, evaluated.replicates_a[:n], evaluated.replicates_exponent[:n])
    reductions = 100.0 * (1.0 - d_evals / d_ref)
    alpha = 0.5 * (1 - min(reference.confidence, evaluated.confidence))
    return DoseReduction(criterion=criterion, reference_dose_mgy=d_ref,
                         target_value=float(target), evaluated_dose_mgy=float(d_eval),
                         reduction_percent=float(100.0 * (1.0 - d_eval / d_ref)),
                         ci_percent=_interval(reductions, alpha),
                         confidence=1 - 2 * alpha)


def _dose_for(target, a, exponent):
    """CTDIvol at which a·D^exponent equals ``target`` (inf/NaN-safe)."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return np.exp((np.log(target) - np.log(a)) / exponent)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept along the last axis."""
    xm = x.mean(axis=-1, keepdims=True)
    ym = y.mean(axis=-1, keepdims=True)
    sxx = ((x - xm) ** 2).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = ((x - xm) * (y - ym)).sum(axis=-1) / sxx
    intercept = ym[..., 0] - slope * xm[..., 0]
    return slope, intercept


def _interval(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return (float(lo), float(hi))
