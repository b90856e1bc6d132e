"""Specification of checks.hu: HU accuracy of a synthetic CT (SynthRAD conventions).

Expected numbers come from hand calculation (stated next to them) or from scikit-image
0.26 (``peak_signal_noise_ratio``, ``structural_similarity``) run in the test on the same
clipped arrays, following SynthRAD2023 ``ImageMetrics.ssim`` step by step.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.util import crop

from checks import _hu_core
from checks.hu import (
    DEFAULT_TISSUE_THRESHOLDS_HU,
    HUAccuracyCheck,
    hu_metrics,
)
from checks.registry import get_check
from qa.errors import QAInputError
from qa.volume import GridMismatchError, Volume

SPACING = (2.0, 1.0, 1.0)


def _vol(array, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> Volume:
    return Volume(np.asarray(array), spacing, origin)


def _phantom(rng: np.random.Generator, shape=(18, 22, 26)) -> tuple[np.ndarray, np.ndarray]:
    """Smooth CT-like volume spanning beyond the clip range, and an sCT with errors."""
    field = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    ct = np.interp(field, [field.min(), field.max()], [-2000.0, 4000.0])
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 1.0) * 300.0
    return ct, ct + 15.0 + noise


def _ball(shape, radius_fraction=0.4) -> np.ndarray:
    zz, yy, xx = np.indices(shape, dtype=float)
    centre = [(n - 1) / 2 for n in shape]
    r2 = sum(((g - c) / (n / 2)) ** 2 for g, c, n in zip((zz, yy, xx), centre, shape,
                                                           strict=True))
    return r2 <= radius_fraction**2 * 3


def _synthrad_ssim(ct, sct, mask, lo, hi, pad=3):
    """SynthRAD2023 ImageMetrics.ssim (github.com/SynthRAD2023/metrics), step by step."""
    gt = np.clip(ct, lo, hi)
    pred = np.clip(sct, lo, hi)
    if mask is not None:
        gt = np.where(mask == 0, lo, gt)
        pred = np.where(mask == 0, lo, pred)
    gt, pred = gt - lo, pred - lo
    full, ssim_map = structural_similarity(gt, pred, data_range=hi - lo, full=True)
    if mask is None:
        return full
    return crop(ssim_map, pad)[crop(mask, pad).astype(bool)].mean(dtype=np.float64)


# -- analytic cases ------------------------------------------------------------------------

def test_constant_offset_gives_exact_errors_and_zero_spread():
    ct = np.full((8, 9, 10), 40.0)
    ct[:, :, :3] = 3500.0  # above the clip range: MAE/ME/RMSE are not clipped
    ct[:, :, 3:5] = -2000.0
    r = hu_metrics(_vol(ct), _vol(ct + 25.0))
    assert (r.mae_hu, r.me_hu, r.rmse_hu) == (25.0, 25.0, 25.0)
    ba = r.bland_altman
    assert (ba.bias_hu, ba.sd_hu, ba.loa_lower_hu, ba.loa_upper_hu) == (25.0, 0.0, 25.0, 25.0)
    assert r.n_voxels == ct.size
    # all errors are +25 HU -> bin [20, 30) of the default -1000..1000/10 edges
    hist = r.error_histogram
    assert hist.counts[hist.edges_hu.index(20.0)] == ct.size
    assert (hist.underflow, hist.overflow) == (0, 0)


def test_hand_computed_errors_on_four_voxels():
    ct = np.array([0.0, 100.0, -50.0, 1000.0]).reshape(1, 2, 2)
    err = np.array([-10.0, 20.0, 0.0, 30.0]).reshape(1, 2, 2)
    r = hu_metrics(_vol(ct), _vol(ct + err))
    assert r.mae_hu == pytest.approx(15.0)  # (10 + 20 + 0 + 30) / 4
    assert r.me_hu == pytest.approx(10.0)  # (-10 + 20 + 0 + 30) / 4
    assert r.rmse_hu == pytest.approx(math.sqrt(350.0))  # (100 + 400 + 0 + 900) / 4
    sd = math.sqrt(1000.0 / 3.0)  # deviations -20, 10, -10, 20; ddof = 1
    assert r.bland_altman.sd_hu == pytest.approx(sd)
    assert r.bland_altman.loa_lower_hu == pytest.approx(10.0 - 1.96 * sd)
    assert r.bland_altman.loa_upper_hu == pytest.approx(10.0 + 1.96 * sd)
    # PSNR by hand: nothing clipped, MSE 350, R = 4095
    assert r.psnr_db == pytest.approx(10 * math.log10(4095.0**2 / 350.0))
    # 1x2x2 is smaller than the 7-voxel SSIM window: NaN plus a warning, no crash
    assert math.isnan(r.ssim)
    assert any("smaller than the 7-voxel SSIM window" in w for w in r.warnings)


def test_identical_images_give_infinite_psnr_and_ssim_one():
    ct = _phantom(np.random.default_rng(1))[0]
    r = hu_metrics(_vol(ct), _vol(ct))
    assert r.psnr_db == math.inf and r.mae_hu == 0.0
    assert r.ssim == pytest.approx(1.0)
    assert any("PSNR is infinite" in w for w in r.warnings)
    assert r.to_dict()["psnr_db"] is None


# -- external reference: scikit-image on the same clipped arrays ---------------------------

def test_psnr_and_ssim_match_skimage_without_mask():
    ct, sct = _phantom(np.random.default_rng(2))
    r = hu_metrics(_vol(ct), _vol(sct))
    ct_c, sct_c = np.clip(ct, -1024, 3071), np.clip(sct, -1024, 3071)
    assert r.psnr_db == pytest.approx(peak_signal_noise_ratio(ct_c, sct_c, data_range=4095),
                                      rel=1e-12)
    expected = structural_similarity(ct_c + 1024, sct_c + 1024, data_range=4095)
    assert r.ssim == pytest.approx(expected, rel=1e-10)
    assert r.data_range_hu == 4095.0 and r.clip_range_hu == (-1024.0, 3071.0)


@pytest.mark.parametrize("clip_range, data_range", [((-1024.0, 3071.0), 4095.0),
                                                    ((-1024.0, 3000.0), 4024.0)])
def test_masked_psnr_and_ssim_reproduce_synthrad(clip_range, data_range):
    ct, sct = _phantom(np.random.default_rng(3))
    mask = _ball(ct.shape)
    r = hu_metrics(_vol(ct), _vol(sct), _vol(mask), clip_range_hu=clip_range)
    lo, hi = clip_range
    ct_c, sct_c = np.clip(ct, lo, hi), np.clip(sct, lo, hi)
    psnr = peak_signal_noise_ratio(ct_c[mask], sct_c[mask], data_range=data_range)
    assert r.psnr_db == pytest.approx(psnr, rel=1e-12)
    assert r.ssim == pytest.approx(_synthrad_ssim(ct, sct, mask, lo, hi), rel=1e-10)
    assert r.data_range_hu == data_range
    # MAE is never clipped (SynthRAD): Σ|sCT − CT|·m / Σm on the raw values
    assert r.mae_hu == pytest.approx(np.abs(sct - ct)[mask].mean(), rel=1e-12)
    assert r.n_voxels == int(mask.sum())


def test_slab_wise_computation_equals_whole_volume(monkeypatch):
    ct, sct = _phantom(np.random.default_rng(4), shape=(23, 16, 17))
    mask = _ball(ct.shape, 0.5)
    whole = hu_metrics(_vol(ct), _vol(sct), _vol(mask))
    plane = ct.shape[1] * ct.shape[2]
    monkeypatch.setattr(_hu_core, "_STAT_SLAB_VOXELS", 3 * plane)
    monkeypatch.setattr(_hu_core, "_SSIM_SLAB_VOXELS", 8 * plane)  # 2 core planes per slab
    for workers in (1, 2):
        slabs = hu_metrics(_vol(ct), _vol(sct), _vol(mask), workers=workers)
        assert slabs.ssim == pytest.approx(whole.ssim, rel=1e-10)
        assert slabs.mae_hu == pytest.approx(whole.mae_hu, rel=1e-12)
        assert slabs.bland_altman.sd_hu == pytest.approx(whole.bland_altman.sd_hu, rel=1e-12)
        assert slabs.error_histogram == whole.error_histogram
    assert whole.ssim == pytest.approx(_synthrad_ssim(ct, sct, mask, -1024, 3071), rel=1e-10)
    few_planes = np.zeros(ct.shape, bool)  # most slabs hold no mask voxel and are skipped
    few_planes[10:13, 4:12, 5:9] = True
    r = hu_metrics(_vol(ct), _vol(sct), _vol(few_planes))
    assert r.ssim == pytest.approx(_synthrad_ssim(ct, sct, few_planes, -1024, 3071),
                                   rel=1e-10)


@pytest.mark.parametrize("crop_voxels", [0, 5])
def test_ssim_crop_is_applied_at_each_edge(crop_voxels):
    ct, sct = _phantom(np.random.default_rng(5), shape=(16, 17, 18))
    mask = np.ones(ct.shape, bool)
    r = hu_metrics(_vol(ct), _vol(sct), _vol(mask), ssim_crop_voxels=crop_voxels)
    assert r.ssim == pytest.approx(
        _synthrad_ssim(ct, sct, mask, -1024, 3071, pad=crop_voxels), rel=1e-10)


def test_ssim_nan_when_crop_leaves_no_mask_voxel():
    ct = np.zeros((10, 10, 10))
    mask = np.zeros(ct.shape, bool)
    mask[0, 0, 0] = True
    r = hu_metrics(_vol(ct), _vol(ct + 5.0), _vol(mask))
    assert math.isnan(r.ssim) and r.mae_hu == 5.0
    assert any("no mask voxel lies inside the volume after cropping" in w for w in r.warnings)
    assert any("only one voxel evaluated" in w for w in r.warnings)


# -- tissue classes ------------------------------------------------------------------------

def _tissue_case():
    # value: count; boundaries -200, -30, 150 belong to the class that starts there
    values = [(-500.0, 100), (-200.0, 20), (-100.0, 80), (-30.0, 12), (40.0, 150),
              (150.0, 10), (700.0, 140)]
    ct = np.concatenate([np.full(n, v) for v, n in values]).reshape(8, 8, 8)
    offset = np.select([ct < -200, ct < -30, ct < 150], [50.0, -10.0, 5.0], -100.0)
    return ct, ct + offset


def test_tissue_classes_count_voxels_on_the_reference_ct():
    ct, sct = _tissue_case()
    r = hu_metrics(_vol(ct), _vol(sct))
    got = {t.name: (t.n_voxels, t.mae_hu, t.me_hu) for t in r.tissues}
    assert got == {"air_lung": (100, 50.0, 50.0), "fat": (100, 10.0, -10.0),
                   "soft_tissue": (162, 5.0, 5.0), "bone": (150, 100.0, -100.0)}
    assert [(t.lower_hu, t.upper_hu) for t in r.tissues] == list(
        DEFAULT_TISSUE_THRESHOLDS_HU.values())
    mask = np.ones(ct.shape, bool)
    mask.flat[:50] = False  # drop half of the air voxels
    r = hu_metrics(_vol(ct), _vol(sct), _vol(mask))
    assert r.tissues[0].n_voxels == 50 and r.n_voxels == 462


def test_empty_class_and_gaps_are_not_errors():
    ct, sct = _tissue_case()
    r = hu_metrics(_vol(ct), _vol(sct), tissue_thresholds_hu={
        "air": (None, -400.0), "water_like": (-50.0, 100.0), "metal": (3000.0, math.inf)})
    by_name = {t.name: t for t in r.tissues}
    assert by_name["air"].n_voxels == 100
    assert by_name["water_like"].n_voxels == 162  # -30 and 40 HU
    metal = by_name["metal"]
    assert metal.n_voxels == 0 and math.isnan(metal.mae_hu) and math.isnan(metal.me_hu)


@pytest.mark.parametrize("thresholds, text", [
    ({"fat": (-200, -30), "soft": (-50, 150)}, "'fat' [-200.0, -30.0) and 'soft' [-50.0"),
    ({"bone": (150, None), "fat": (-200, -30)}, "overlap or are out of order"),
    ({"fat": (-30, -200)}, "tissue_thresholds_hu['fat'] must satisfy lower < upper"),
    ({"fat": (float("nan"), 0)}, "must satisfy lower < upper"),
    ({"fat": (-30,)}, "tissue_thresholds_hu['fat'] must be [lower_hu, upper_hu]"),
])
def test_threshold_validation_names_the_classes(thresholds, text):
    ct = np.zeros((2, 2, 2))
    with pytest.raises(ValueError) as info:
        hu_metrics(_vol(ct), _vol(ct), tissue_thresholds_hu=thresholds)
    assert text in str(info.value)


# -- histogram -----------------------------------------------------------------------------

def test_histogram_is_half_open_with_under_and_overflow():
    ct = np.zeros((1, 1, 6))
    sct = np.array([-1500.0, -1000.0, -0.5, 0.0, 999.9, 1000.0]).reshape(1, 1, 6)
    h = hu_metrics(_vol(ct), _vol(sct)).error_histogram
    edges = list(h.edges_hu)
    assert len(edges) == 201 and edges[0] == -1000.0 and edges[-1] == 1000.0
    assert h.underflow == 1 and h.overflow == 1  # -1500, and 1000 (>= last edge)
    assert h.counts[0] == 1  # -1000 in [-1000, -990)
    assert h.counts[edges.index(-10.0)] == 1 and h.counts[edges.index(0.0)] == 1
    assert h.counts[-1] == 1  # 999.9 in [990, 1000)
    assert sum(h.counts) + h.underflow + h.overflow == 6


def test_non_uniform_edges_are_half_open_too():
    ct = np.zeros((1, 1, 6))
    sct = np.array([-600.0, -500.0, -1.0, 0.0, 7.0, 20.0]).reshape(1, 1, 6)
    h = hu_metrics(_vol(ct), _vol(sct), histogram_edges_hu=[-500, 0, 7, 20]).error_histogram
    assert (h.underflow, h.counts, h.overflow) == (1, (2, 1, 1), 1)


def test_histogram_total_equals_n_voxels_with_custom_edges():
    ct, sct = _phantom(np.random.default_rng(6))
    mask = _ball(ct.shape)
    r = hu_metrics(_vol(ct), _vol(sct), _vol(mask), histogram_edges_hu=[-100, 0, 50, 100])
    h = r.error_histogram
    assert sum(h.counts) + h.underflow + h.overflow == r.n_voxels == int(mask.sum())
    err = (sct - ct)[mask]
    assert h.counts == tuple(int(np.count_nonzero((err >= a) & (err < b)))
                             for a, b in [(-100, 0), (0, 50), (50, 100)])
    assert h.overflow == int(np.count_nonzero(err >= 100))


# -- resampling ----------------------------------------------------------------------------

def _linear_hu(vol_shape, spacing, origin):
    zz, yy, xx = (o + s * g for o, s, g in zip(origin, spacing,
                                                np.indices(vol_shape, dtype=float),
                                                strict=True))
    return 100.0 + 3.0 * zz - 2.0 * yy + 5.0 * xx  # trilinear interpolation is exact


def test_resample_true_moves_sct_and_mask_onto_the_ct_grid():
    ct_grid = ((10, 12, 14), (2.0, 1.5, 1.0), (0.0, 0.0, 0.0))
    sct_grid = ((16, 18, 22), (1.5, 1.25, 0.8), (-3.0, -2.0, -2.0))
    ct = Volume(_linear_hu(*ct_grid) - 25.0, ct_grid[1], ct_grid[2])
    sct = Volume(_linear_hu(*sct_grid), sct_grid[1], sct_grid[2])
    x_sct = -2.0 + 0.8 * np.arange(22)
    mask = Volume(np.broadcast_to(x_sct < 5.6, sct_grid[0]), sct_grid[1], sct_grid[2])
    with pytest.raises(GridMismatchError, match="ct and sct are on different grids"):
        hu_metrics(ct, sct)
    r = hu_metrics(ct, sct, mask, resample=True)
    # nearest: CT columns x = 0..5 mm map to sCT x <= 5.2 mm (inside), x = 6 mm to 6.0 mm
    assert r.n_voxels == 10 * 12 * 6
    assert r.me_hu == pytest.approx(25.0, abs=1e-9)
    assert r.mae_hu == pytest.approx(25.0, abs=1e-9)
    assert r.warnings == () or all("outside the sCT grid" not in w for w in r.warnings)


def test_resample_excludes_mask_voxels_outside_the_sct_extent():
    ct_grid = ((10, 12, 14), (2.0, 1.5, 1.0), (0.0, 0.0, 0.0))
    sct_grid = ((8, 18, 22), (1.5, 1.25, 0.8), (-3.0, -2.0, -2.0))  # z covers -3 .. 7.5 mm
    ct = Volume(_linear_hu(*ct_grid), ct_grid[1], ct_grid[2])
    sct = Volume(_linear_hu(*sct_grid) + 10.0, sct_grid[1], sct_grid[2])
    r = hu_metrics(ct, sct, resample=True)
    # CT planes z = 0, 2, 4, 6, 8 mm lie within half a voxel of the sCT (<= 8.25 mm)
    assert r.n_voxels == 5 * 12 * 14
    assert any("840 voxel(s) of the mask lie outside the sCT grid" in w for w in r.warnings)
    # qa.volume.resample_like clamps within half a voxel of the edge: the z = 8 mm plane
    # takes the sCT's last plane (z = 7.5 mm), 3 HU/mm * 0.5 mm = 1.5 HU low on 1 plane of 5
    assert r.me_hu == pytest.approx(10.0 - 1.5 / 5, abs=1e-9)


# -- input errors --------------------------------------------------------------------------

def test_grid_mismatch_names_both_inputs_and_the_difference():
    ct = _vol(np.zeros((4, 5, 6)))
    sct = _vol(np.zeros((4, 5, 6)), origin=(0.0, 0.0, 1.0))
    with pytest.raises(GridMismatchError) as info:
        hu_metrics(ct, sct)
    assert "ct and sct are on different grids (origin" in str(info.value)
    with pytest.raises(GridMismatchError, match="ct and mask are on different grids"):
        hu_metrics(ct, ct, _vol(np.ones((4, 5, 5), bool)))


def test_nan_inside_mask_is_an_error_with_count_but_outside_is_ignored():
    ct = np.zeros((8, 8, 8))
    sct = ct + 3.0
    sct[0, 0, :2] = np.nan
    ct[7, 7, 7] = np.inf
    with pytest.raises(ValueError) as info:
        hu_metrics(_vol(ct), _vol(sct))
    assert "ct has 1 non-finite value(s)" in str(info.value)
    assert "sct has 2 non-finite value(s) (NaN or inf) inside the mask" in str(info.value)
    mask = np.ones(ct.shape, bool)
    mask[0, 0, :2] = False
    mask[7, 7, 7] = False
    r = hu_metrics(_vol(ct), _vol(sct), _vol(mask))
    assert r.mae_hu == 3.0 and np.isfinite(r.ssim) and np.isfinite(r.psnr_db)


def test_empty_mask_is_an_error():
    ct = _vol(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="mask 'mask' is empty: no voxel to evaluate"):
        hu_metrics(ct, ct, _vol(np.zeros((4, 4, 4), np.uint8)))


def test_mask_must_be_boolean_like():
    ct, sct = _phantom(np.random.default_rng(7), shape=(9, 9, 9))
    labels = _ball(ct.shape).astype(np.uint8) * 2
    with pytest.raises(ValueError, match=r"mask 'mask' must be boolean-like .*\(e\.g\. 2\)"):
        hu_metrics(_vol(ct), _vol(sct), _vol(labels))
    as_bool = hu_metrics(_vol(ct), _vol(sct), _vol(labels > 0))
    as_01 = hu_metrics(_vol(ct), _vol(sct), _vol((labels > 0).astype(np.float32)))
    assert as_bool == as_01


@pytest.mark.parametrize("kwargs, text", [
    ({"clip_range_hu": (3071, -1024)}, "clip_range_hu must be finite with lower < upper"),
    ({"ssim_crop_voxels": -1}, "ssim_crop_voxels must be an integer >= 0, got -1"),
    ({"histogram_edges_hu": [0, 0, 10]}, "histogram_edges_hu must be at least 2 finite"),
    ({"workers": 0}, "workers must be an integer >= 1, got 0"),
])
def test_bad_options_name_the_parameter(kwargs, text):
    ct = _vol(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=text.replace("(", r"\(")):
        hu_metrics(ct, ct, **kwargs)


# -- serialisation and the check -----------------------------------------------------------

def test_to_dict_is_strict_json():
    ct, sct = _tissue_case()
    d = hu_metrics(_vol(ct), _vol(sct)).to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["tissues"][0]["lower_hu"] is None  # -inf encoded as null


def test_check_runs_and_reports_rows_and_json_details():
    assert get_check("hu_accuracy") is HUAccuracyCheck
    ct, sct = _phantom(np.random.default_rng(8))
    mask = _ball(ct.shape)
    options = HUAccuracyCheck.Options(
        tissue_thresholds_hu={"soft": [None, 150], "bone": [150, None]},
        clip_range_hu=[-1024, 3000])
    out = HUAccuracyCheck(options).run(
        {"reference": _vol(ct), "evaluated": _vol(sct), "mask": _vol(mask)})
    rows = {(m.metric, m.label): m for m in out.measurements}
    direct = hu_metrics(_vol(ct), _vol(sct), _vol(mask), clip_range_hu=(-1024, 3000),
                        tissue_thresholds_hu={"soft": (None, 150), "bone": (150, None)})
    assert rows[("mae_hu", "")].value == direct.mae_hu and rows[("mae_hu", "")].unit == "HU"
    assert rows[("ssim", "")].value == direct.ssim and rows[("ssim", "")].unit == "1"
    assert rows[("ba_loa_upper_hu", "")].value == direct.bland_altman.loa_upper_hu
    assert rows[("n_voxels", "bone")].value == direct.tissues[1].n_voxels
    assert set(HUAccuracyCheck.metrics) == {m for m, label in rows if label == ""}
    details = json.loads(json.dumps(out.details, allow_nan=False))
    assert details["tissue_thresholds_hu"] == {"soft": [None, 150.0], "bone": [150.0, None]}
    assert details["clip_range_hu"] == [-1024.0, 3000.0] and details["data_range_hu"] == 4024
    hist = details["error_histogram"]
    assert sum(hist["counts"]) + hist["underflow"] + hist["overflow"] == int(mask.sum())


def test_check_without_mask_and_with_default_options():
    ct, sct = _phantom(np.random.default_rng(9), shape=(8, 8, 8))
    out = HUAccuracyCheck().run({"reference": _vol(ct), "evaluated": _vol(sct)})
    labels = {m.label for m in out.measurements}
    assert labels == {"", *DEFAULT_TISSUE_THRESHOLDS_HU}
    assert out.details["tissue_thresholds_hu"]["air_lung"] == [None, -200.0]


def test_check_input_errors_name_the_slot_at_fault():
    ct = _vol(np.zeros((8, 8, 8)))
    sct = _vol(np.zeros((8, 8, 8)), spacing=(1.0, 1.0, 1.0))
    check = HUAccuracyCheck()
    with pytest.raises(GridMismatchError) as info:
        check.run({"reference": ct, "evaluated": sct})
    assert str(info.value).startswith("input 'evaluated': ct and sct are on different grids")
    nan_array = np.zeros((8, 8, 8))
    nan_array[0, :, 0] = np.nan
    nan_ct = ct.with_array(nan_array)
    with pytest.raises(ValueError, match="^input 'reference': ct has 8 non-finite value"):
        check.run({"reference": nan_ct, "evaluated": ct})
    with pytest.raises(ValueError, match="^input 'mask': mask 'mask' is empty"):
        check.run({"reference": ct, "evaluated": ct,
                   "mask": _vol(np.zeros((8, 8, 8), bool))})
    with pytest.raises(QAInputError, match="input 'evaluated' .* is missing"):
        check.run({"reference": ct})


def test_options_reject_unknown_keys_and_bad_thresholds():
    with pytest.raises(ValidationError, match="clip_range"):
        HUAccuracyCheck.Options(clip_range=[-1024, 3071])
    with pytest.raises(ValidationError, match="'a' \\[0.0, 10.0\\) and 'b' \\[5.0, 20.0\\)"):
        HUAccuracyCheck.Options(tissue_thresholds_hu={"a": [0, 10], "b": [5, 20]})
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        HUAccuracyCheck.Options(ssim_crop_voxels=-2)


# -- invariances ---------------------------------------------------------------------------

_HU = st.integers(-1100, 3200).map(float)


@settings(max_examples=25, deadline=None)
@given(ct=arrays(np.float64, (7, 8, 9), elements=_HU),
       sct=arrays(np.float64, (7, 8, 9), elements=_HU),
       shift=st.integers(-300, 300).map(float))
def test_swapping_inputs_negates_bias_and_keeps_symmetric_metrics(ct, sct, shift):
    forward = hu_metrics(_vol(ct), _vol(sct))
    backward = hu_metrics(_vol(sct), _vol(ct))
    assert backward.me_hu == pytest.approx(-forward.me_hu, abs=1e-9)
    assert backward.mae_hu == pytest.approx(forward.mae_hu)
    assert backward.rmse_hu == pytest.approx(forward.rmse_hu)
    assert backward.bland_altman.sd_hu == pytest.approx(forward.bland_altman.sd_hu)
    if math.isfinite(forward.psnr_db):
        assert backward.psnr_db == pytest.approx(forward.psnr_db)
    assert backward.ssim == pytest.approx(forward.ssim)
    shifted = hu_metrics(_vol(ct), _vol(sct + shift))
    assert shifted.me_hu == pytest.approx(forward.me_hu + shift, abs=1e-9)
    assert shifted.bland_altman.sd_hu == pytest.approx(forward.bland_altman.sd_hu, abs=1e-9)
