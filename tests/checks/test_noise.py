"""Specification of checks.noise: analytic answers for σ, NPS, TTF, d′ and the dose fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from checks.noise import (
    MIN_DOSE_LEVELS,
    detectability_index,
    disc_task,
    dose_reduction,
    fit_power_law,
    noise_in_rois,
    nps_2d,
    radial_nps,
    ttf_from_disc,
)

# -- noise magnitude -------------------------------------------------------------------------


def test_sigma_and_mean_of_white_noise():
    rois = np.random.default_rng(0).normal(40.0, 12.0, (40, 32, 32))
    result = noise_in_rois(rois)
    assert result.sigma_hu == pytest.approx(12.0, rel=0.02)
    assert result.mean_hu == pytest.approx(40.0, abs=0.2)
    assert len(result.sigma_per_roi_hu) == 40


def test_plane_detrend_removes_a_gradient_that_mean_removal_counts_as_noise():
    rng = np.random.default_rng(1)
    ramp = np.linspace(-30.0, 30.0, 32)[None, None, :]
    rois = rng.normal(0.0, 5.0, (10, 32, 32)) + ramp
    assert noise_in_rois(rois, detrend="mean").sigma_hu > 15.0
    assert noise_in_rois(rois, detrend="plane").sigma_hu == pytest.approx(5.0, rel=0.03)


def test_roi_with_nan_outside_the_field_is_refused_with_advice():
    rois = np.zeros((2, 8, 8))
    rois[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="1 non-finite value.*inside the reconstructed field"):
        noise_in_rois(rois)


# -- NPS -------------------------------------------------------------------------------------


def test_parseval_nps_integral_equals_variance_within_2_percent():
    sigma = 15.0
    rois = np.random.default_rng(2).normal(0.0, sigma, (64, 64, 64))
    nps = nps_2d(rois, (0.7, 0.5))
    assert nps.integral_hu2() == pytest.approx(nps.variance_hu2, rel=1e-10)
    assert nps.integral_hu2() == pytest.approx(sigma**2, rel=0.02)
    assert nps.nps_hu2_mm2.shape == (64, 64)
    assert nps.fx_per_mm[0] == pytest.approx(-1.0) and nps.fy_per_mm[0] == pytest.approx(
        -1 / 1.4)


def test_white_noise_nps_is_flat_at_sigma2_dx_dy():
    sigma, pixel = 10.0, 0.5
    rois = np.random.default_rng(3).normal(0.0, sigma, (200, 32, 32))
    radial = radial_nps(nps_2d(rois, pixel, detrend="mean"))
    level = sigma**2 * pixel * pixel  # analytic white-noise NPS, HU²·mm²
    values = radial.nps_hu2_mm2[1:]  # bin 0 is emptied by the mean removal
    assert np.all(np.abs(values / level - 1) < 0.1)
    assert radial.frequency_per_mm[-1] == pytest.approx(1.0)  # Nyquist of 0.5 mm pixels


def filtered_noise(rng, n_rois, size, pixel_mm, f0_per_mm):
    """Gaussian noise with power |H|² = f²·exp(−f²/f0²): radial NPS peaks at f0 exactly."""
    big = 4 * size
    noise = rng.normal(0.0, 1.0, (n_rois, big, big))
    f = np.fft.fftfreq(big, d=pixel_mm)
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    gain = radius * np.exp(-radius**2 / (2 * f0_per_mm**2))
    field = np.fft.ifft2(np.fft.fft2(noise) * gain).real
    return field[:, :size, :size] * 100.0


def test_known_f_peak_and_f_av_of_filtered_noise():
    pixel, f0 = 0.5, 0.3
    rois = filtered_noise(np.random.default_rng(4), 60, 64, pixel, f0)
    radial = radial_nps(nps_2d(rois, pixel))
    width = radial.frequency_per_mm[1]
    assert radial.f_peak_per_mm == pytest.approx(f0, abs=width)
    # f_av of f²·exp(−f²/f0²) on [0, ∞): Γ(2)/Γ(3/2)·f0 = 2f0/√π
    assert radial.f_av_per_mm == pytest.approx(2 * f0 / math.sqrt(math.pi), rel=0.05)


def test_a_smoother_reconstruction_moves_the_nps_to_lower_frequencies():
    rng = np.random.default_rng(5)
    white = rng.normal(0.0, 20.0, (30, 64, 64))
    smooth = ndimage.gaussian_filter(white, sigma=(0, 1.5, 1.5))
    sharp_r, smooth_r = (radial_nps(nps_2d(r, 0.5)) for r in (white, smooth))
    assert smooth_r.f_av_per_mm < 0.6 * sharp_r.f_av_per_mm


def test_nps_refuses_a_missing_pixel_size():
    with pytest.raises(ValueError, match="pixel_size_mm must be a positive number"):
        nps_2d(np.zeros((2, 8, 8)), 0.0)


# -- TTF -------------------------------------------------------------------------------------


def blurred_disc(radius_mm, blur_sigma_mm, pixel_mm, size, center_mm, contrast=100.0,
                 fine=4):
    """Disc blurred by a Gaussian, point-sampled at pixel centres (no pixel aperture)."""
    fine_px = pixel_mm / fine
    n = size * fine
    coords = np.arange(n) * fine_px
    r = np.hypot(coords[:, None] - center_mm[0], coords[None, :] - center_mm[1])
    image = np.where(r <= radius_mm, contrast, 0.0)
    image = ndimage.gaussian_filter(image, blur_sigma_mm / fine_px, mode="nearest")
    return image[::fine, ::fine]


def test_ttf_of_a_gaussian_blurred_disc_matches_the_analytic_mtf():
    pixel, blur = 0.5, 0.6
    center = (32.2, 31.7)
    image = blurred_disc(10.0, blur, pixel, 128, center)
    result = ttf_from_disc(image, pixel, center, 10.0, refine_center=False)
    analytic = np.exp(-2 * math.pi**2 * blur**2 * result.frequency_per_mm**2)
    band = analytic > 0.05
    assert np.max(np.abs(result.ttf[band] - analytic[band])) < 0.03
    f50 = math.sqrt(math.log(2) / (2 * math.pi**2 * blur**2))
    f10 = math.sqrt(math.log(10) / (2 * math.pi**2 * blur**2))
    assert result.f50_per_mm == pytest.approx(f50, rel=0.03)
    assert result.f10_per_mm == pytest.approx(f10, rel=0.03)
    assert result.contrast_hu == pytest.approx(100.0, rel=0.02)


def test_ttf_does_not_depend_on_contrast_sign_and_survives_noise_with_centre_refinement():
    pixel, blur = 0.5, 0.6
    center = (32.0, 32.0)
    rng = np.random.default_rng(6)
    clean = blurred_disc(10.0, blur, pixel, 128, center, contrast=-200.0)
    stack = clean + rng.normal(0.0, 5.0, (8, 128, 128))
    result = ttf_from_disc(stack, pixel, (33.0, 31.2), 10.0)
    f50 = math.sqrt(math.log(2) / (2 * math.pi**2 * blur**2))
    assert result.f50_per_mm == pytest.approx(f50, rel=0.06)
    assert result.contrast_hu == pytest.approx(-200.0, rel=0.03)


def test_insert_outside_the_image_is_refused_with_geometry():
    with pytest.raises(ValueError, match=r"does not fit in the image \(16 x 16 mm"):
        ttf_from_disc(np.zeros((32, 32)), 0.5, (4.0, 4.0), 3.0)


# -- detectability ---------------------------------------------------------------------------


def test_npw_dprime_of_white_noise_with_perfect_ttf_is_analytic():
    contrast, diameter, n0 = 10.0, 5.0, 4.0  # HU, mm, HU²·mm²
    f = np.linspace(0.0, 20.0, 201)  # far beyond the disc spectrum: the tail is < 0.5 %
    result = detectability_index(f, np.full_like(f, n0), f, np.ones_like(f),
                                 contrast_hu=contrast, diameter_mm=diameter, observer="npw")
    expected = math.sqrt(contrast**2 * math.pi * (diameter / 2) ** 2 / n0)
    assert result.d_prime == pytest.approx(expected, rel=0.01)


def test_dprime_scales_with_contrast_and_inverse_noise_for_both_observers():
    f = np.linspace(0.0, 1.0, 101)
    nps = 50.0 * f * np.exp(-f / 0.3)
    ttf = np.exp(-(f / 0.5) ** 2)
    for observer in ("npw", "npwe"):
        base = detectability_index(f, nps, f, ttf, contrast_hu=10, diameter_mm=5,
                                   observer=observer).d_prime
        twice = detectability_index(f, nps, f, ttf, contrast_hu=20, diameter_mm=5,
                                    observer=observer).d_prime
        quieter = detectability_index(f, nps / 4, f, ttf, contrast_hu=10, diameter_mm=5,
                                      observer=observer).d_prime
        assert twice == pytest.approx(2 * base, rel=1e-9)
        assert quieter == pytest.approx(2 * base, rel=1e-9)


def test_disc_task_at_zero_frequency_is_contrast_times_area():
    assert disc_task(np.array([0.0]), 10.0, 4.0)[0] == pytest.approx(10.0 * math.pi * 4.0)


def test_unknown_observer_is_named():
    f = np.linspace(0, 1, 10)
    with pytest.raises(ValueError, match="observer must be one of .*got 'ideal'"):
        detectability_index(f, f + 1, f, f, contrast_hu=1, diameter_mm=1, observer="ideal")


# -- fits and dose reduction -----------------------------------------------------------------

DOSES = np.array([1.0, 2.0, 4.0, 8.0, 12.6, 16.0])


def test_fit_recovers_b_of_synthetic_noise_data_with_an_interval_covering_it():
    rng = np.random.default_rng(7)
    dose = np.repeat(DOSES, 5)
    sigma = 40.0 * dose**-0.5 * np.exp(rng.normal(0.0, 0.03, dose.size))
    fit = fit_power_law(dose, sigma, rng=np.random.default_rng(0), what="noise")
    assert -fit.exponent == pytest.approx(0.5, abs=0.02)
    assert fit.exponent_ci[0] < -0.5 < fit.exponent_ci[1]
    assert fit.a == pytest.approx(40.0, rel=0.03)
    assert fit.n_levels == 6 and fit.n_points == 30


def test_fit_is_reproducible_with_the_same_seed():
    dose = np.repeat(DOSES, 3)
    values = 30 * dose**-0.45 * (1 + 0.02 * np.sin(np.arange(dose.size)))
    a = fit_power_law(dose, values, rng=np.random.default_rng(3))
    b = fit_power_law(dose, values, rng=np.random.default_rng(3))
    assert a.exponent_ci == b.exponent_ci


def test_fewer_than_three_dose_levels_are_refused_with_the_levels():
    with pytest.raises(ValueError, match=f"at least {MIN_DOSE_LEVELS} distinct CTDIvol levels, "
                                         r"got 2 \(4, 8 mGy\); scan the phantom"):
        fit_power_law([4, 4, 8, 8], [10, 11, 7, 7], rng=np.random.default_rng(0),
                      what="noise")


def test_dose_reduction_of_exact_power_laws():
    # reference d' = 1·D^0.5; evaluated d' = 2·D^0.5 reaches the reference's d'(12) at 3 mGy
    dose = np.repeat(DOSES, 2)
    ref = fit_power_law(dose, dose**0.5, rng=np.random.default_rng(0))
    dl = fit_power_law(dose, 2 * dose**0.5, rng=np.random.default_rng(1))
    result = dose_reduction(ref, dl, 12.0, criterion="iso_dprime")
    assert result.evaluated_dose_mgy == pytest.approx(3.0)
    assert result.reduction_percent == pytest.approx(75.0)
    assert result.ci_percent[0] == pytest.approx(75.0) and result.ci_percent[1] == \
        pytest.approx(75.0)
    # noise: reference 20·D^-0.5, evaluated 10·D^-0.5: same answer
    ref_n = fit_power_law(dose, 20 * dose**-0.5, rng=np.random.default_rng(0))
    dl_n = fit_power_law(dose, 10 * dose**-0.5, rng=np.random.default_rng(1))
    assert dose_reduction(ref_n, dl_n, 12.0, criterion="iso_noise").reduction_percent == \
        pytest.approx(75.0)
