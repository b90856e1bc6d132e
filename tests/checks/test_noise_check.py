"""Specification of the per-case ``noise`` check on simulated phantom series (and DICOM)."""

from __future__ import annotations

import numpy as np
import pytest

from checks.noise_check import NoiseCheck, NoiseOptions
from checks.registry import get_check
from fixtures.ct_simulator import write_ct_series
from qa.errors import QAInputError
from qa.io import read_dicom_series
from tests.checks._noise_phantom import ACQ, NOISE_OPTIONS, SLICE_MM, fbp_stack, smoothed, volume


def values(output, metric, label=""):
    found = [m.value for m in output.measurements if m.metric == metric and m.label == label]
    assert len(found) == 1, (metric, label)
    return found[0]


def run(stack, ctdivol=12.6, **overrides):
    options = NoiseOptions(**{**NOISE_OPTIONS, **overrides})
    return NoiseCheck(options).run({"image": volume(stack, ctdivol)})


def test_check_is_registered_under_noise():
    assert get_check("noise") is NoiseCheck


def test_fbp_series_through_dicom_gives_ctdivol_noise_ttf_and_dprime(tmp_path):
    stack = fbp_stack(12.6, 0)
    write_ct_series(tmp_path / "fbp", stack, pixel_mm=ACQ.pixel_mm, slice_mm=SLICE_MM,
                    ctdivol_mgy=12.6, kernel="FBP-ramp", description="FBP 12.6 mGy")
    image = read_dicom_series(tmp_path / "fbp")
    out = NoiseCheck(NoiseOptions(**NOISE_OPTIONS)).run({"image": image})
    assert values(out, "ctdivol_mgy") == pytest.approx(12.6)
    assert values(out, "slice_thickness_mm") == pytest.approx(SLICE_MM)
    # σ of the centre ROI measured independently with numpy on the same pixels (HU rounded
    # to integers by the DICOM writer: rounding adds 1/12 HU² of variance at most)
    centre = np.rint(stack[:, 84:108, 84:108])
    assert values(out, "noise_hu", "centre") == pytest.approx(
        np.sqrt(np.mean(centre.var(axis=(1, 2), ddof=1))), rel=0.05)
    assert 8.0 < values(out, "noise_hu") < 16.0
    assert abs(values(out, "mean_hu")) < 2.0
    assert values(out, "insert_contrast_hu", "acrylic") == pytest.approx(120.0, abs=6.0)
    assert values(out, "insert_contrast_hu", "air") == pytest.approx(-1000.0, abs=10.0)
    assert 0.15 < values(out, "ttf_f50_per_mm", "bone") < 0.4
    assert values(out, "d_prime_npw", "lc_10hu_5mm") > values(out, "d_prime_npwe",
                                                              "lc_10hu_5mm") > 0
    assert len(out.details["nps"]["frequency_per_mm"]) == len(out.details["nps"]["nps_hu2_mm2"])
    assert set(out.details["ttf"]) == {"polyethylene", "acrylic", "bone", "air"}


def test_smoothing_lowers_sigma_and_f_av_and_the_ttf():
    fbp = run(fbp_stack(12.6, 0))
    smooth = run(smoothed(fbp_stack(12.6, 0)))
    assert values(smooth, "noise_hu") < 0.6 * values(fbp, "noise_hu")
    assert values(smooth, "nps_f_av_per_mm") < 0.8 * values(fbp, "nps_f_av_per_mm")
    assert values(smooth, "ttf_f50_per_mm", "acrylic") < values(fbp, "ttf_f50_per_mm",
                                                                 "acrylic")


def test_missing_ctdivol_asks_for_the_case_table_column():
    with pytest.raises(QAInputError, match="CTDIvol is missing.*add a ctdivol_mgy attribute "
                                           "column"):
        run(fbp_stack(12.6, 0), ctdivol=None)


def test_ctdivol_may_be_left_to_the_case_table():
    out = run(fbp_stack(12.6, 0), ctdivol=None, ctdivol_required=False)
    assert not [m for m in out.measurements if m.metric == "ctdivol_mgy"]


def test_roi_outside_the_phantom_is_named():
    with pytest.raises(QAInputError, match="ROI 'edge' .*dx=95 mm.* extends outside the phantom"):
        run(fbp_stack(12.6, 0), noise_rois={"edge": (0.0, 95.0)})


def test_roi_outside_the_image_is_named():
    with pytest.raises(QAInputError, match="ROI 'far' .* extends outside the image"):
        run(fbp_stack(12.6, 0), noise_rois={"far": (0.0, 130.0)})


def test_insert_not_found_says_which_and_where():
    inserts = {"ghost": {"position_mm": (0.0, 0.0), "diameter_mm": 25.0}}
    with pytest.raises(QAInputError, match="insert 'ghost' .* not found: its contrast .* below "
                                           "min_insert_contrast_hu = 20 HU"):
        run(fbp_stack(12.6, 0), inserts=inserts, tasks={})


def test_task_with_an_undeclared_insert_is_refused_at_option_time():
    with pytest.raises(ValueError, match="ttf_insert 'teflon' is not one of the inserts"):
        NoiseOptions(**{**NOISE_OPTIONS, "tasks": {"t": {"contrast_hu": 5,
                                                          "ttf_insert": "teflon"}}})
