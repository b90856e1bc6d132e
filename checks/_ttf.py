"""Private core of :mod:`checks.noise`: task transfer function (TTF) from a circular insert.

Method (AAPM TG-233 §4, after Richard et al. 2012, doi:10.1118/1.4725171, and Chen et al.
2014, doi:10.1118/1.4881519): every pixel near the insert is placed at its distance r from
the insert centre; the values are averaged in bins of ``pixel/supersampling`` to give a
supersampled radial edge-spread function (ESF); its derivative along r is the line-spread
function (LSF), tapered by a Tukey window centred on the edge; TTF = |FFT(LSF)| normalised
to 1 at zero frequency.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.signal.windows import tukey

from checks._nps import pixel_pair

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TTFResult:
    """TTF of one circular insert.

    ``frequency_per_mm`` from 0 to the Nyquist frequency of the image (cycles/mm);
    ``ttf`` (1 at 0); ``f50_per_mm`` / ``f10_per_mm``: first frequency where the TTF falls to
    0.5 / 0.1 (linear interpolation; NaN when it stays above up to Nyquist);
    ``contrast_hu``: mean inside (r < R - edge half-width) minus mean of the background
    annulus; ``esf_radius_mm`` / ``esf_hu``: the supersampled ESF.
    """

    frequency_per_mm: np.ndarray
    ttf: np.ndarray
    f50_per_mm: float
    f10_per_mm: float
    contrast_hu: float
    esf_radius_mm: np.ndarray
    esf_hu: np.ndarray


def ttf_from_disc(
    images: np.ndarray,
    pixel_size_mm: tuple[float, float] | float,
    center_yx_mm: tuple[float, float],
    radius_mm: float,
    *,
    edge_half_width_mm: float | None = None,
    supersampling: int = 10,
    refine_center: bool = True,
) -> TTFResult:
    """TTF from a circular insert; see :func:`checks.noise.ttf_from_disc`."""
    stack = np.asarray(images, dtype=np.float64)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise ValueError(f"images must be one slice (ny, nx) or a stack (n, ny, nx), got shape "
                         f"{np.shape(images)}.")
    dy, dx = pixel_pair(pixel_size_mm)
    radius_mm = float(radius_mm)
    if not math.isfinite(radius_mm) or radius_mm <= 2 * max(dy, dx):
        raise ValueError(f"radius_mm must be larger than two pixels ({2 * max(dy, dx):g} mm), "
                         f"got {radius_mm!r}.")
    if isinstance(supersampling, bool) or int(supersampling) != supersampling \
            or supersampling < 1:
        raise ValueError(f"supersampling must be an integer >= 1, got {supersampling!r}.")
    half = (min(radius_mm, 15.0) if edge_half_width_mm is None
            else float(edge_half_width_mm))
    if not 0 < half <= radius_mm:
        raise ValueError(f"edge_half_width_mm must be in (0, radius_mm = {radius_mm:g}], got "
                         f"{edge_half_width_mm!r}.")
    ny, nx = stack.shape[1:]
    cy, cx = (float(c) for c in center_yx_mm)
    r_out = radius_mm + half
    if (cy - r_out < 0 or cx - r_out < 0 or cy + r_out > (ny - 1) * dy
            or cx + r_out > (nx - 1) * dx):
        raise ValueError(
            f"the insert (centre y={cy:g} mm, x={cx:g} mm, radius {radius_mm:g} mm) plus its "
            f"{half:g} mm edge margin does not fit in the image ({ny * dy:g} x {nx * dx:g} mm, "
            "origin at the centre of pixel [0, 0]); move the insert position or reduce "
            "edge_half_width_mm.")
    yy = np.arange(ny)[:, None] * dy
    xx = np.arange(nx)[None, :] * dx
    mean_img = stack.mean(axis=0)
    if refine_center:
        cy, cx = _refined_center(mean_img, yy, xx, cy, cx, radius_mm, half)
    r = np.hypot(yy - cy, xx - cx)
    near = (r >= radius_mm - half) & (r < radius_mm + half)
    inside = r < radius_mm - half / 2
    outside = (r >= radius_mm + half / 2) & (r < radius_mm + half)
    contrast = float(mean_img[inside].mean() - mean_img[outside].mean())
    step = min(dy, dx) / int(supersampling)
    edges = np.arange(radius_mm - half, radius_mm + half + step / 2, step)
    index = np.digitize(r[near], edges) - 1
    n_bins = edges.size - 1
    values = stack[:, near].mean(axis=0)
    sums = np.bincount(index, weights=values, minlength=n_bins)[:n_bins]
    counts = np.bincount(index, minlength=n_bins)[:n_bins]
    centres = 0.5 * (edges[:-1] + edges[1:])
    filled = counts > 0
    if filled.sum() < 0.5 * n_bins:
        raise ValueError("too few pixels near the insert edge to build the edge profile; "
                         "use a larger insert or a lower supersampling.")
    esf = np.interp(centres, centres[filled], sums[filled] / counts[filled])
    lsf = np.gradient(esf, step) * tukey(esf.size, alpha=0.5)
    n_fft = max(4096, 1 << int(math.ceil(math.log2(esf.size))) + 2)
    spectrum = np.abs(np.fft.rfft(lsf, n=n_fft))
    freq = np.fft.rfftfreq(n_fft, d=step)
    if spectrum[0] <= 0 or contrast == 0:
        raise ValueError("the insert shows no contrast against its background (zero edge "
                         "response); check the insert position and radius.")
    ttf = spectrum / spectrum[0]
    keep = freq <= 0.5 / max(dy, dx) + 1e-12
    freq, ttf = freq[keep], ttf[keep]
    return TTFResult(frequency_per_mm=freq, ttf=ttf, f50_per_mm=first_crossing(freq, ttf, 0.5),
                     f10_per_mm=first_crossing(freq, ttf, 0.1), contrast_hu=contrast,
                     esf_radius_mm=centres, esf_hu=esf)


def first_crossing(freq: np.ndarray, curve: np.ndarray, level: float) -> float:
    """First frequency where ``curve`` drops to ``level`` (linear interpolation), else NaN."""
    below = np.nonzero(curve <= level)[0]
    if below.size == 0:
        return math.nan
    i = int(below[0])
    if i == 0:
        return float(freq[0])
    f0, f1, c0, c1 = freq[i - 1], freq[i], curve[i - 1], curve[i]
    return float(f0 + (c0 - level) * (f1 - f0) / (c0 - c1))


def _refined_center(image: np.ndarray, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float,
                    radius_mm: float, half_mm: float) -> tuple[float, float]:
    """Centroid of the pixels above half the insert contrast, near the given centre.

    Two passes; a move of more than half the radius is refused (the given centre is kept,
    with a logged warning) because it means another object was picked up.
    """
    y0, x0 = cy, cx
    for _ in range(2):
        r = np.hypot(yy - cy, xx - cx)
        ring = (r >= radius_mm + half_mm / 2) & (r < radius_mm + half_mm)
        core = r < radius_mm / 2
        background = float(np.median(image[ring]))
        signal = float(np.median(image[core])) - background
        if signal == 0:
            return y0, x0
        mask = (r < radius_mm + half_mm / 2) & ((image - background) / signal > 0.5)
        if not mask.any():
            return y0, x0
        ys, xs = np.broadcast_arrays(yy, xx)
        cy, cx = float(ys[mask].mean()), float(xs[mask].mean())
    if math.hypot(cy - y0, cx - x0) > radius_mm / 2:
        logger.warning("insert centre refinement moved %.1f mm; kept the given centre",
                       math.hypot(cy - y0, cx - x0))
        return y0, x0
    return cy, cx
