"""Private core of :mod:`checks.noise`: noise magnitude and the noise power spectrum (NPS).

Conventions (AAPM TG-233, Samei et al. 2019, doi:10.1002/mp.13763): ROIs are 2-D arrays
``(ny, nx)`` with pixel size ``(dy_mm, dx_mm)``; frequencies are in cycles/mm; the 2-D NPS is in
HU²·mm² and its integral over the frequency plane equals the variance of the detrended ROIs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

DETRENDS = ("mean", "plane")


@dataclass(frozen=True)
class NoiseResult:
    """Noise magnitude over a set of uniform ROIs.

    ``sigma_hu``: square root of the mean (over ROIs) of the variance of each detrended ROI
    (ddof = 1 per ROI). ``sigma_per_roi_hu``: the same for each ROI. ``mean_hu``: mean of all
    ROI pixels before detrending.
    """

    sigma_hu: float
    mean_hu: float
    sigma_per_roi_hu: tuple[float, ...]
    mean_per_roi_hu: tuple[float, ...]
    detrend: str


@dataclass(frozen=True)
class NPS2D:
    """2-D noise power spectrum, zero frequency at the centre (``fftshift`` order).

    ``nps_hu2_mm2`` has shape ``(ny, nx)``; ``fy_per_mm`` and ``fx_per_mm`` are its axes in
    cycles/mm. ``variance_hu2`` is the mean variance of the detrended ROIs (ddof = 0), equal to
    the integral of the NPS (Parseval). ``n_rois`` ROIs were averaged.
    """

    nps_hu2_mm2: np.ndarray
    fy_per_mm: np.ndarray
    fx_per_mm: np.ndarray
    variance_hu2: float
    n_rois: int
    detrend: str

    def integral_hu2(self) -> float:
        """∬ NPS dfx dfy in HU² (rectangle rule on the DFT grid; equals ``variance_hu2``)."""
        dfy = float(self.fy_per_mm[1] - self.fy_per_mm[0])
        dfx = float(self.fx_per_mm[1] - self.fx_per_mm[0])
        return float(self.nps_hu2_mm2.sum() * dfx * dfy)


@dataclass(frozen=True)
class RadialNPS:
    """Radially averaged NPS with its summary frequencies.

    ``frequency_per_mm``: bin centres (cycles/mm) from 0 to the Nyquist frequency of the
    coarser axis; ``nps_hu2_mm2``: mean of the 2-D NPS over each annulus (NaN for an empty
    bin); ``f_peak_per_mm``: frequency of the maximum; ``f_av_per_mm``:
    ∫ f·NPS(f) df / ∫ NPS(f) df over the bins.
    """

    frequency_per_mm: np.ndarray
    nps_hu2_mm2: np.ndarray
    f_peak_per_mm: float
    f_av_per_mm: float


def as_roi_stack(rois: np.ndarray, pixel_size_mm: tuple[float, float] | float
                 ) -> tuple[np.ndarray, float, float]:
    """Validate ``rois`` (2-D or stack of 2-D) and the pixel size; return float64 stack."""
    arr = np.asarray(rois, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"rois must be a 2-D ROI (ny, nx) or a stack (n_rois, ny, nx), got "
                         f"shape {np.shape(rois)}.")
    if arr.shape[0] < 1 or arr.shape[1] < 4 or arr.shape[2] < 4:
        raise ValueError(f"rois must hold at least one ROI of at least 4 x 4 pixels, got "
                         f"shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"rois hold {int(np.count_nonzero(~np.isfinite(arr)))} non-finite "
                         "value(s); place the ROIs inside the reconstructed field of view.")
    dy, dx = pixel_pair(pixel_size_mm)
    return arr, dy, dx


def pixel_pair(pixel_size_mm: tuple[float, float] | float) -> tuple[float, float]:
    """``(dy_mm, dx_mm)`` from a scalar or a pair; refuses non-positive or non-finite."""
    values = np.atleast_1d(np.asarray(pixel_size_mm, dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, 2)
    if values.size != 2 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"pixel_size_mm must be a positive number or a pair (dy_mm, dx_mm), "
                         f"got {pixel_size_mm!r}.")
    return float(values[0]), float(values[1])


def detrended(stack: np.ndarray, detrend: str) -> np.ndarray:
    """Each ROI minus its mean (``"mean"``) or minus its least-squares plane (``"plane"``)."""
    if detrend not in DETRENDS:
        raise ValueError(f"detrend must be one of {DETRENDS}, got {detrend!r}.")
    if detrend == "mean":
        return stack - stack.mean(axis=(1, 2), keepdims=True)
    n, ny, nx = stack.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    design = np.column_stack([np.ones(ny * nx), yy.ravel() - (ny - 1) / 2,
                              xx.ravel() - (nx - 1) / 2])
    coef, *_ = np.linalg.lstsq(design, stack.reshape(n, -1).T, rcond=None)
    return stack - (design @ coef).T.reshape(n, ny, nx)


def noise_in_rois(rois: np.ndarray, *, detrend: str = "mean") -> NoiseResult:
    """Noise magnitude σ and mean HU of uniform ROIs; see :func:`checks.noise.noise_in_rois`."""
    stack, _, _ = as_roi_stack(rois, 1.0)
    residual = detrended(stack, detrend)
    n_pix = stack.shape[1] * stack.shape[2]
    ddof = 1 if detrend == "mean" else 3
    var = (residual**2).sum(axis=(1, 2)) / (n_pix - ddof)
    means = stack.mean(axis=(1, 2))
    return NoiseResult(sigma_hu=math.sqrt(float(var.mean())), mean_hu=float(stack.mean()),
                       sigma_per_roi_hu=tuple(float(v) for v in np.sqrt(var)),
                       mean_per_roi_hu=tuple(float(m) for m in means), detrend=detrend)


def nps_2d(rois: np.ndarray, pixel_size_mm: tuple[float, float] | float, *,
           detrend: str = "plane") -> NPS2D:
    """Ensemble 2-D NPS; see :func:`checks.noise.nps_2d`."""
    stack, dy, dx = as_roi_stack(rois, pixel_size_mm)
    n, ny, nx = stack.shape
    residual = detrended(stack, detrend)
    power = np.abs(np.fft.fft2(residual)) ** 2
    nps = (dx * dy / (nx * ny)) * power.mean(axis=0)
    return NPS2D(
        nps_hu2_mm2=np.fft.fftshift(nps),
        fy_per_mm=np.fft.fftshift(np.fft.fftfreq(ny, d=dy)),
        fx_per_mm=np.fft.fftshift(np.fft.fftfreq(nx, d=dx)),
        variance_hu2=float((residual**2).mean()),
        n_rois=n, detrend=detrend,
    )


def radial_nps(nps: NPS2D, *, bin_width_per_mm: float | None = None) -> RadialNPS:
    """Annulus average of a 2-D NPS; see :func:`checks.noise.radial_nps`."""
    fy, fx = nps.fy_per_mm, nps.fx_per_mm
    dfy = float(fy[1] - fy[0])
    dfx = float(fx[1] - fx[0])
    width = max(dfx, dfy) if bin_width_per_mm is None else float(bin_width_per_mm)
    if not math.isfinite(width) or width <= 0:
        raise ValueError(f"bin_width_per_mm must be positive, got {bin_width_per_mm!r}.")
    nyquist = min(0.5 / _step(fy), 0.5 / _step(fx))
    radius = np.hypot(*np.meshgrid(fy, fx, indexing="ij"))
    n_bins = int(math.floor(nyquist / width + 0.5)) + 1
    index = np.floor(radius / width + 0.5).astype(np.int64)
    keep = index < n_bins
    sums = np.bincount(index[keep], weights=nps.nps_hu2_mm2[keep], minlength=n_bins)
    counts = np.bincount(index[keep], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    freq = np.arange(n_bins) * width
    valid = np.isfinite(curve)
    f_peak = float(freq[valid][np.argmax(curve[valid])]) if valid.any() else math.nan
    total = float(np.sum(curve[valid]))
    f_av = float(np.sum(freq[valid] * curve[valid]) / total) if total > 0 else math.nan
    return RadialNPS(frequency_per_mm=freq, nps_hu2_mm2=curve, f_peak_per_mm=f_peak,
                     f_av_per_mm=f_av)


def _step(axis: np.ndarray) -> float:
    """Pixel size (mm) behind an fftshifted frequency axis of ``axis.size`` samples."""
    # fftfreq spacing is 1/(n d); recover d from the spacing.
    df = float(axis[1] - axis[0])
    return 1.0 / (axis.size * df)
