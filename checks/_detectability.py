"""Private core of :mod:`checks.noise`: detectability index d′ of a disc task (NPW, NPWE).

Formulas (AAPM TG-233 §6, Samei et al. 2019, doi:10.1002/mp.13763; Chen et al. 2014,
doi:10.1118/1.4881519), integrated in polar form on the radial NPS and TTF (both assumed
rotationally symmetric in the axial plane):

* task  W(f) = C·πR²·2J₁(2πfR)/(2πfR)          (HU·mm², disc of contrast C, radius R)
* NPW   d′² = [∫ W²T² dA]² / ∫ W²T²·NPS dA
* NPWE  d′² = [∫ W²T²E² dA]² / ∫ W²T²E⁴·NPS dA  (no internal noise)

with dA = 2πf df, f in cycles/mm from 0 to the Nyquist frequency of the NPS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import j1

#: Eye-filter constant of E(ρ) = ρ^1.5·exp(−c·ρ^0.68), ρ in cycles/degree (Burgess 1994 form
#: used by Richard & Samei and TG-233). Public codes differ (0.98 vs 3.22); we fix 0.98.
EYE_FILTER_C = 0.98
#: Default viewing distance (mm) and display zoom (displayed size / true size).
DEFAULT_VIEWING_DISTANCE_MM = 500.0
DEFAULT_DISPLAY_ZOOM = 1.0
OBSERVERS = ("npw", "npwe")


@dataclass(frozen=True)
class DetectabilityResult:
    """d′ of one disc task for one observer model (dimensionless)."""

    d_prime: float
    observer: str
    contrast_hu: float
    diameter_mm: float


def disc_task(frequency_per_mm: np.ndarray, contrast_hu: float, diameter_mm: float
              ) -> np.ndarray:
    """Fourier transform of a disc of contrast C and diameter D, W(f) in HU·mm²."""
    radius = 0.5 * float(diameter_mm)
    f = np.asarray(frequency_per_mm, dtype=np.float64)
    arg = 2.0 * math.pi * f * radius
    with np.errstate(invalid="ignore", divide="ignore"):
        jinc = np.where(arg > 1e-12, 2.0 * j1(arg) / np.where(arg > 1e-12, arg, 1.0), 1.0)
    return float(contrast_hu) * math.pi * radius**2 * jinc


def eye_filter(frequency_per_mm: np.ndarray, *,
               viewing_distance_mm: float = DEFAULT_VIEWING_DISTANCE_MM,
               display_zoom: float = DEFAULT_DISPLAY_ZOOM) -> np.ndarray:
    """E(ρ) = ρ^1.5·exp(−0.98·ρ^0.68), ρ = f·zoom·distance·π/180 (cycles/degree), max 1."""
    rho = (np.asarray(frequency_per_mm, dtype=np.float64) * display_zoom
           * viewing_distance_mm * math.pi / 180.0)
    e = rho**1.5 * np.exp(-EYE_FILTER_C * rho**0.68)
    peak = e.max() if e.size and e.max() > 0 else 1.0
    return e / peak


def detectability(
    nps_frequency_per_mm: np.ndarray,
    nps_hu2_mm2: np.ndarray,
    ttf_frequency_per_mm: np.ndarray,
    ttf: np.ndarray,
    *,
    contrast_hu: float,
    diameter_mm: float,
    observer: str = "npwe",
    viewing_distance_mm: float = DEFAULT_VIEWING_DISTANCE_MM,
    display_zoom: float = DEFAULT_DISPLAY_ZOOM,
    n_samples: int = 2048,
) -> DetectabilityResult:
    """d′ for a disc task; see :func:`checks.noise.detectability_index`."""
    if observer not in OBSERVERS:
        raise ValueError(f"observer must be one of {OBSERVERS}, got {observer!r}.")
    if not (math.isfinite(diameter_mm) and diameter_mm > 0):
        raise ValueError(f"diameter_mm must be a positive number, got {diameter_mm!r}.")
    if not math.isfinite(contrast_hu) or contrast_hu == 0:
        raise ValueError(f"contrast_hu must be a non-zero number, got {contrast_hu!r}.")
    if viewing_distance_mm <= 0 or display_zoom <= 0:
        raise ValueError("viewing_distance_mm and display_zoom must be positive, got "
                         f"{viewing_distance_mm!r} and {display_zoom!r}.")
    f_nps = np.asarray(nps_frequency_per_mm, dtype=np.float64)
    nps = np.asarray(nps_hu2_mm2, dtype=np.float64)
    f_ttf = np.asarray(ttf_frequency_per_mm, dtype=np.float64)
    t = np.asarray(ttf, dtype=np.float64)
    ok = np.isfinite(nps)
    if f_nps.shape != nps.shape or ok.sum() < 2:
        raise ValueError("the radial NPS needs matching frequency and value arrays with at "
                         f"least two finite values, got shapes {f_nps.shape} and {nps.shape}.")
    if f_ttf.shape != t.shape or f_ttf.size < 2:
        raise ValueError("the TTF needs matching frequency and value arrays, got shapes "
                         f"{f_ttf.shape} and {t.shape}.")
    f_max = float(f_nps[ok].max())
    f = np.linspace(0.0, f_max, int(n_samples))
    nps_f = np.interp(f, f_nps[ok], nps[ok])
    ttf_f = np.interp(f, f_ttf, t, right=0.0)
    w2t2 = disc_task(f, contrast_hu, diameter_mm) ** 2 * ttf_f**2
    area = 2.0 * math.pi * f
    if observer == "npw":
        num = np.trapezoid(w2t2 * area, f) ** 2
        den = np.trapezoid(w2t2 * nps_f * area, f)
    else:
        e2 = eye_filter(f, viewing_distance_mm=viewing_distance_mm,
                        display_zoom=display_zoom) ** 2
        num = np.trapezoid(w2t2 * e2 * area, f) ** 2
        den = np.trapezoid(w2t2 * e2**2 * nps_f * area, f)
    d_prime = math.sqrt(num / den) if den > 0 else math.inf
    return DetectabilityResult(d_prime=float(d_prime), observer=observer,
                               contrast_hu=float(contrast_hu), diameter_mm=float(diameter_mm))
