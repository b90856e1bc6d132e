"""Noise, noise texture, resolution and detectability of CT images (AAPM TG-233).

Public API, each a pure function on plain arrays with the pixel size in mm:

* :func:`noise_in_rois` — noise magnitude σ and mean HU of uniform ROIs.
* :func:`nps_2d` — ensemble 2-D noise power spectrum (HU²·mm²) with its frequency axes.
* :func:`radial_nps` — radial NPS, f_peak and f_av (cycles/mm).
* :func:`ttf_from_disc` — task transfer function of a circular insert, f50 and f10.
* :func:`detectability_index` — d′ of a disc task for the NPW and NPWE observers.
* :func:`fit_power_law` — σ = a·CTDIvol^(−b) or d′ = a·CTDIvol^b with bootstrap intervals.
* :func:`dose_reduction` — dose reduction of one reconstruction against another at iso-d′
  or iso-noise.

The result records (:class:`NoiseResult`, :class:`NPS2D`, :class:`RadialNPS`,
:class:`TTFResult`, :class:`DetectabilityResult`, :class:`PowerLawFit`,
:class:`DoseReduction`) are frozen dataclasses. The per-case engine check is
:class:`checks.noise_check.NoiseCheck`, the cohort check :class:`checks.noise_dose.NoiseDoseCheck`.

Conventions: 2-D arrays are ``(y, x)`` (rows, columns), pixel sizes ``(dy_mm, dx_mm)`` or one
number for square pixels; spatial frequencies in cycles/mm; the zero frequency of 2-D spectra
is at the centre (``numpy.fft.fftshift`` order).

References
----------
.. [1] Samei et al., "Performance evaluation of computed tomography systems: Summary of AAPM
       Task Group 233", Med Phys 46(11):e735-e756 (2019), doi:10.1002/mp.13763.
.. [2] Richard, Husarik, Yadava, Murphy, Samei, "Towards task-based assessment of CT
       performance: system and object MTF across different reconstruction algorithms",
       Med Phys 39(7):4115-4122 (2012), doi:10.1118/1.4725171.
.. [3] Chen, Christianson, Wilson, Samei, "Assessment of volumetric noise and resolution
       performance for linear and nonlinear CT reconstruction methods", Med Phys
       41(7):071909 (2014), doi:10.1118/1.4881519.
"""

from __future__ import annotations

import numpy as np

from checks import _detectability, _dose_fit, _nps, _ttf
from checks._detectability import (
    DEFAULT_DISPLAY_ZOOM,
    DEFAULT_VIEWING_DISTANCE_MM,
    EYE_FILTER_C,
    DetectabilityResult,
    disc_task,
    eye_filter,
)
from checks._dose_fit import MIN_DOSE_LEVELS, DoseReduction, PowerLawFit
from checks._nps import NPS2D, NoiseResult, RadialNPS
from checks._ttf import TTFResult

__all__ = [
    "NoiseResult", "NPS2D", "RadialNPS", "TTFResult", "DetectabilityResult", "PowerLawFit",
    "DoseReduction", "MIN_DOSE_LEVELS", "EYE_FILTER_C", "DEFAULT_VIEWING_DISTANCE_MM",
    "DEFAULT_DISPLAY_ZOOM", "noise_in_rois", "nps_2d", "radial_nps", "ttf_from_disc",
    "detectability_index", "disc_task", "eye_filter", "fit_power_law", "dose_reduction",
]


def noise_in_rois(rois: np.ndarray, *, detrend: str = "mean") -> NoiseResult:
    """Noise magnitude σ (HU) and mean HU of uniform ROIs.

    Parameters
    ----------
    rois : (N, Y, X) or (Y, X) ndarray
        Uniform ROIs in HU (at least 4 × 4 pixels, finite).
    detrend : {"mean", "plane"}
        Remove each ROI's mean (σ with ddof = 1) or its least-squares plane (ddof = 3), so a
        slow cupping gradient is not counted as noise.

    Returns
    -------
    NoiseResult
        ``sigma_hu`` = sqrt(mean over ROIs of the per-ROI variance) (pooled σ [1]_),
        ``mean_hu`` the mean of all pixels, and the per-ROI values.

    Raises
    ------
    ValueError
        Wrong shape, non-finite values (ROI outside the reconstructed field), unknown detrend.

    Examples
    --------
    >>> import numpy as np
    >>> rois = np.random.default_rng(0).normal(40.0, 10.0, (20, 32, 32))
    >>> r = noise_in_rois(rois)
    >>> round(r.sigma_hu), round(r.mean_hu)
    (10, 40)
    """
    return _nps.noise_in_rois(rois, detrend=detrend)


def nps_2d(rois: np.ndarray, pixel_size_mm: tuple[float, float] | float, *,
           detrend: str = "plane") -> NPS2D:
    """Ensemble-averaged 2-D noise power spectrum of uniform ROIs.

    Parameters
    ----------
    rois : (N, Y, X) or (Y, X) ndarray
        Uniform ROIs in HU (the same size; ROIs of several slices stacked together).
    pixel_size_mm : float or (dy_mm, dx_mm)
        Pixel size; required (never defaulted to 1).
    detrend : {"plane", "mean"}
        Trend removed from each ROI before the DFT (TG-233 recommends at least the mean; the
        plane also removes a slow gradient).

    Returns
    -------
    NPS2D
        ``NPS(fy, fx) = Δx·Δy / (Nx·Ny) · ⟨|DFT(ROI − trend)|²⟩`` in HU²·mm², zero frequency at
        the centre, axes in cycles/mm. Its integral ``sum(NPS)·Δfx·Δfy`` equals the mean
        variance (ddof = 0) of the detrended ROIs exactly (Parseval) [1]_.

    Raises
    ------
    ValueError
        Wrong shape, non-finite values, bad pixel size, unknown detrend.

    Examples
    --------
    >>> import numpy as np
    >>> rois = np.random.default_rng(1).normal(0.0, 10.0, (50, 32, 32))
    >>> nps = nps_2d(rois, 0.5)
    >>> round(nps.integral_hu2() / nps.variance_hu2, 6)
    1.0
    """
    return _nps.nps_2d(rois, pixel_size_mm, detrend=detrend)


def radial_nps(nps: NPS2D, *, bin_width_per_mm: float | None = None) -> RadialNPS:
    """Radial average of a 2-D NPS with its peak and average frequencies.

    Parameters
    ----------
    nps : NPS2D
        From :func:`nps_2d`.
    bin_width_per_mm : float, optional
        Annulus width in cycles/mm; default the coarser DFT frequency step.

    Returns
    -------
    RadialNPS
        Bins centred on 0, w, 2w … up to the Nyquist frequency of the coarser axis (corners
        beyond it are left out). ``f_peak_per_mm`` = argmax of the radial NPS;
        ``f_av_per_mm`` = Σ f·NPS(f) / Σ NPS(f) over the bins (TG-233 [1]_).
    """
    return _nps.radial_nps(nps, bin_width_per_mm=bin_width_per_mm)


def ttf_from_disc(images: np.ndarray, pixel_size_mm: tuple[float, float] | float,
                  center_yx_mm: tuple[float, float], radius_mm: float, *,
                  edge_half_width_mm: float | None = None, supersampling: int = 10,
                  refine_center: bool = True) -> TTFResult:
    """Task transfer function from a circular insert (radial edge method, TG-233).

    Parameters
    ----------
    images : (N, Y, X) or (Y, X) ndarray
        Slices through the insert (HU); their edge profiles are pooled, which averages noise.
    pixel_size_mm : float or (dy_mm, dx_mm)
        Pixel size.
    center_yx_mm : (float, float)
        Insert centre in mm from the centre of pixel [0, 0] (row, column directions).
    radius_mm : float
        Nominal insert radius (more than two pixels).
    edge_half_width_mm : float, optional
        Half-width of the radial window around the edge used for the ESF (default
        min(radius, 15 mm)).
    supersampling : int
        ESF bins per pixel (10).
    refine_center : bool
        Replace the centre by the centroid of the pixels above half the insert contrast
        (kept as given if that moves it by more than half the radius).

    Returns
    -------
    TTFResult
        TTF on 0 … Nyquist (cycles/mm) normalised to 1 at 0, ``f50_per_mm``, ``f10_per_mm``,
        the insert ``contrast_hu`` and the supersampled ESF. The LSF is tapered by a Tukey
        window (α = 0.5) over the radial window before the FFT [2]_ [1]_.

    Raises
    ------
    ValueError
        The insert plus its edge window is not inside the image (the message gives the
        geometry); no contrast; bad options.
    """
    return _ttf.ttf_from_disc(images, pixel_size_mm, center_yx_mm, radius_mm,
                              edge_half_width_mm=edge_half_width_mm,
                              supersampling=supersampling, refine_center=refine_center)


def detectability_index(nps_frequency_per_mm: np.ndarray, nps_hu2_mm2: np.ndarray,
                        ttf_frequency_per_mm: np.ndarray, ttf: np.ndarray, *,
                        contrast_hu: float, diameter_mm: float, observer: str = "npwe",
                        viewing_distance_mm: float = DEFAULT_VIEWING_DISTANCE_MM,
                        display_zoom: float = DEFAULT_DISPLAY_ZOOM) -> DetectabilityResult:
    """Detectability index d′ of a disc of given contrast and diameter.

    Parameters
    ----------
    nps_frequency_per_mm, nps_hu2_mm2 : (M,) ndarray
        Radial NPS (cycles/mm, HU²·mm²), e.g. from :func:`radial_nps` (NaN bins skipped).
    ttf_frequency_per_mm, ttf : (K,) ndarray
        Radial TTF (cycles/mm, dimensionless), e.g. from :func:`ttf_from_disc`, taken as 0
        beyond its last frequency.
    contrast_hu, diameter_mm : float
        The task: a disc of this contrast (HU) and diameter (mm).
    observer : {"npwe", "npw"}
        Non-prewhitening observer with eye filter, or without.
    viewing_distance_mm, display_zoom : float
        Display geometry of the eye filter (NPWE only): ρ (cycles/degree) =
        f·zoom·distance·π/180. Defaults 500 mm and 1.

    Returns
    -------
    DetectabilityResult
        ``d_prime``: NPW d′² = [∫W²T² dA]² / ∫W²T²·NPS dA; NPWE d′² = [∫W²T²E² dA]² /
        ∫W²T²E⁴·NPS dA, with W the disc's Fourier transform C·πR²·2J₁(2πfR)/(2πfR),
        E(ρ) = ρ^1.5·exp(−0.98·ρ^0.68) (:data:`EYE_FILTER_C`), dA = 2πf df up to the NPS's
        last frequency (rotational symmetry assumed) [1]_ [3]_. No internal noise.

    Notes
    -----
    d′ scales linearly with the contrast and as 1/σ with the noise; it does not depend on the
    scale of E. White noise NPS N₀ with TTF = 1 gives NPW d′² = C²πR²/N₀ (Parseval on W).
    """
    return _detectability.detectability(
        nps_frequency_per_mm, nps_hu2_mm2, ttf_frequency_per_mm, ttf,
        contrast_hu=contrast_hu, diameter_mm=diameter_mm, observer=observer,
        viewing_distance_mm=viewing_distance_mm, display_zoom=display_zoom)


def fit_power_law(ctdivol_mgy: np.ndarray, values: np.ndarray, *, rng: np.random.Generator,
                  n_bootstrap: int = 2000, confidence: float = 0.95,
                  what: str = "value") -> PowerLawFit:
    """Fit ``values = a·CTDIvol^k`` on log-log axes, with bootstrap percentile intervals.

    Parameters
    ----------
    ctdivol_mgy, values : (N,) ndarray
        One point per image (repeats at one dose level are separate points); positive.
    rng : numpy.random.Generator
        Bootstrap random source (seed it for a reproducible report).
    n_bootstrap : int
        Bootstrap replicates (>= 100). Within each dose level the points are resampled with
        replacement; when a level has one point only, log-residuals are resampled.
    confidence : float
        Two-sided level of the percentile intervals.
    what : str
        Name of the quantity in error messages ("noise", "d′" …).

    Returns
    -------
    PowerLawFit
        ``a`` and ``exponent`` (noise: exponent = −b, b ≈ 0.5 for FBP quantum noise), their
        intervals, R² of the log fit, and the replicates.

    Raises
    ------
    ValueError
        Fewer than :data:`MIN_DOSE_LEVELS` distinct doses (the message lists them), or a
        non-positive value.
    """
    return _dose_fit.fit_power_law(ctdivol_mgy, values, rng=rng, n_bootstrap=n_bootstrap,
                                   confidence=confidence, what=what)


def dose_reduction(reference: PowerLawFit, evaluated: PowerLawFit, reference_dose_mgy: float,
                   *, criterion: str) -> DoseReduction:
    """Dose reduction of ``evaluated`` against ``reference`` at equal d′ or equal noise.

    Parameters
    ----------
    reference, evaluated : PowerLawFit
        Fits of the same quantity (d′ for ``"iso_dprime"``, σ for ``"iso_noise"``) for the
        reference reconstruction (FBP or iterative) and the evaluated one (DL).
    reference_dose_mgy : float
        CTDIvol at which the reference reconstruction sets the target value.
    criterion : {"iso_dprime", "iso_noise"}
        Labels the result. Iso-d′ is the verdict; iso-noise ignores noise texture and is an
        optimistic bound for reconstructions that shift the NPS to low frequencies.

    Returns
    -------
    DoseReduction
        ``reduction_percent`` = 100·(1 − D_eval/D_ref), D_eval = (target/a_e)^(1/k_e), with a
        percentile interval from pairing the two fits' bootstrap replicates.
    """
    return _dose_fit.dose_reduction(reference, evaluated, reference_dose_mgy,
                                    criterion=criterion)
