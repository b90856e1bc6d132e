"""Input drift (great_expectations suites + KS distances) and model fingerprint changes."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from qa.drift import (
    build_drift_suite,
    compare_fingerprints,
    detect_input_drift,
    image_features,
)
from qa.verdicts import Level
from qa.volume import Volume


def commissioning(n: int = 12, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "case_id": [f"C{i:02d}" for i in range(n)],
        "scanner": ["SiteA-Siemens", "SiteB-GE"] * (n // 2),
        "kvp": [120.0] * n,
        "slice_thickness_mm": [5.0] * n,
        "field_strength_t": [1.5] * n,
        "hu_p50": rng.uniform(-20.0, 20.0, n),
    })


def month(**changes) -> pd.DataFrame:
    frame = pd.DataFrame({
        "case_id": ["M1", "M2", "M3"],
        "scanner": ["SiteA-Siemens", "SiteB-GE", "SiteA-Siemens"],
        "kvp": [120.0] * 3,
        "slice_thickness_mm": [5.0] * 3,
        "field_strength_t": [1.5] * 3,
        "hu_p50": [-5.0, 0.0, 6.0],
    })
    for column, values in changes.items():
        frame[column] = values
    return frame


def test_a_month_like_commissioning_raises_nothing():
    report = detect_input_drift(commissioning(), month())
    assert not report.drifted and report.findings == ()
    assert report.validation.success
    assert {d.feature for d in report.distances} == {"kvp", "slice_thickness_mm",
                                                     "field_strength_t", "hu_p50"}


def test_a_new_scanner_is_reported_with_the_case_and_value():
    report = detect_input_drift(commissioning(), month(scanner=["SiteA-Siemens", "SiteC-Philips",
                                                                "SiteB-GE"]))
    assert report.features() == ["scanner"]
    finding = report.findings[0]
    assert finding.reasons == ("outside_commissioning",)
    assert finding.moved == ({"case_id": "M2", "value": "SiteC-Philips"},)
    assert finding.commissioning == "one of SiteA-Siemens, SiteB-GE"
    assert finding.message == ("scanner: 1 case(s) outside commissioning (M2: SiteC-Philips); "
                               "commissioning: one of SiteA-Siemens, SiteB-GE")


def test_a_kvp_and_slice_thickness_change_is_reported():
    report = detect_input_drift(commissioning(), month(kvp=[100.0] * 3,
                                                       slice_thickness_mm=[3.0] * 3))
    assert report.features() == ["kvp", "slice_thickness_mm"]
    kvp = report.findings[0]
    assert kvp.commissioning == "exactly 120 (constant at commissioning)"
    assert [m["value"] for m in kvp.moved] == [100.0, 100.0, 100.0]
    assert kvp.distance.median_shift == pytest.approx(-20.0)
    assert "median 120 -> 100" in kvp.message


def test_an_hu_shift_moves_the_percentile_and_the_distribution():
    ref = commissioning(n=30)
    shifted = pd.DataFrame({"case_id": [f"M{i}" for i in range(10)],
                            "scanner": ["SiteB-GE"] * 10, "kvp": [120.0] * 10,
                            "slice_thickness_mm": [5.0] * 10, "field_strength_t": [1.5] * 10,
                            "hu_p50": np.linspace(45.0, 60.0, 10)})
    report = detect_input_drift(ref, shifted)
    assert report.features() == ["hu_p50"]
    finding = report.findings[0]
    assert finding.reasons == ("outside_commissioning", "distribution_shift")
    assert len(finding.moved) == 10
    # every shifted value lies beyond every commissioning value: D = 1
    assert finding.distance.ks_statistic == 1.0
    assert finding.distance.ks_p_value < 1e-6
    assert finding.distance.median_shift == pytest.approx(
        52.5 - float(np.median(ref["hu_p50"])))


def test_ks_statistic_matches_the_ecdf_distance_by_hand():
    ref = commissioning(n=20, seed=5)
    cur = month(hu_p50=[-30.0, 0.0, 30.0])
    distance = {d.feature: d for d in detect_input_drift(ref, cur).distances}["hu_p50"]
    a, b = np.sort(ref["hu_p50"].to_numpy()), np.sort(cur["hu_p50"].to_numpy())
    grid = np.concatenate([a, b])
    d = np.max(np.abs(np.searchsorted(a, grid, side="right") / a.size
                      - np.searchsorted(b, grid, side="right") / b.size))
    assert distance.ks_statistic == pytest.approx(d)


def test_the_numeric_range_is_widened_by_the_margin():
    ref = pd.DataFrame({"case_id": ["a", "b"], "hu_p50": [0.0, 10.0]})
    suite = build_drift_suite(ref, margin_fraction=0.25)
    item = suite.expectation("hu_p50")
    assert (item.min_value, item.max_value) == (-2.5, 12.5)
    inside = pd.DataFrame({"case_id": ["x", "y"], "hu_p50": [-2.5, 12.5]})
    outside = pd.DataFrame({"case_id": ["x", "y"], "hu_p50": [-2.6, 12.4]})
    assert not detect_input_drift(ref, inside, suite=suite).drifted
    moved = detect_input_drift(ref, outside, suite=suite).findings[0].moved
    assert moved == ({"case_id": "x", "value": -2.6},)


def test_missing_columns_and_values_are_findings():
    cur = month().drop(columns="field_strength_t")
    cur["kvp"] = [120.0, None, 120.0]
    report = detect_input_drift(commissioning(), cur)
    reasons = {f.feature: f.reasons for f in report.findings}
    assert reasons == {"kvp": ("missing_values",),
                       "field_strength_t": ("missing_column",)}


def test_report_is_strict_json():
    report = detect_input_drift(commissioning(), month(kvp=[100.0] * 3))
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["drifted"] is True
    assert payload["findings"][0]["feature"] == "kvp"


@pytest.mark.parametrize(("call", "message"), [
    (lambda: detect_input_drift(commissioning(), month().iloc[:0]),
     "the month's feature frame is empty"),
    (lambda: detect_input_drift(commissioning(), month(), ks_alpha=1.5),
     r"ks_alpha must be in \(0, 1\), got 1.5"),
    (lambda: build_drift_suite(commissioning(), margin_fraction=-0.1),
     "margin_fraction must be a finite number >= 0, got -0.1"),
    (lambda: build_drift_suite(commissioning(), numeric=["ctdivol_mgy"]),
     r"drift feature column\(s\) \['ctdivol_mgy'\] are not in the commissioning frame"),
    (lambda: build_drift_suite(commissioning(), categorical=["kvp"], numeric=["kvp"]),
     r"drift feature\(s\) \['kvp'\] are declared both categorical and numeric"),
    (lambda: build_drift_suite(pd.DataFrame({"x": [np.nan]}), numeric=["x"]),
     "numeric drift feature 'x' has no finite value"),
])
def test_errors_name_the_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- image features ---------------------------------------------------------------------------

def test_image_features_from_metadata_and_voxels():
    rng = np.random.default_rng(0)
    array = rng.normal(40.0, 20.0, (4, 6, 8))
    mask = np.zeros(array.shape, dtype=np.uint8)
    mask[1:3, 1:5, 2:6] = 1
    volume = Volume(array, (3.0, 0.9, 1.1), (0.0, 0.0, 0.0),
                    metadata={"kvp": 120.0, "manufacturer": "ACME", "patient_name": "x"})
    features = image_features(volume, volume.with_array(mask), percentiles=(5, 50, 95))
    assert features["slice_thickness_mm"] == 3.0  # no DICOM SliceThickness: z spacing
    assert features["pixel_spacing_mm"] == pytest.approx(1.0)
    assert (features["kvp"], features["manufacturer"]) == (120.0, "ACME")
    assert "patient_name" not in features
    assert features["hu_p50"] == pytest.approx(np.percentile(array[mask > 0], 50))
    assert features["hu_p05"] == pytest.approx(np.percentile(array[mask > 0], 5))
    assert set(features) == {"slice_thickness_mm", "pixel_spacing_mm", "kvp", "manufacturer",
                             "hu_p05", "hu_p50", "hu_p95"}


def test_image_features_reject_an_empty_mask():
    volume = Volume(np.zeros((2, 2, 2)), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="the mask selects no finite voxel"):
        image_features(volume, volume.with_array(np.zeros((2, 2, 2), dtype=np.uint8)))


# -- model fingerprint ------------------------------------------------------------------------

FINGERPRINT = {"name": "mr2ct-demo", "version": "1.0", "adapter": "torch",
               "sha256": "a" * 64, "device": "cpu", "details": {"torch_version": "2.13"}}


def test_same_model_is_ok_even_on_another_device():
    change = compare_fingerprints(FINGERPRINT, {**FINGERPRINT, "device": "cuda"})
    assert (change.changed, change.level) == (False, Level.OK)


def test_a_silent_weight_swap_is_an_action():
    change = compare_fingerprints(FINGERPRINT, {**FINGERPRINT, "sha256": "b" * 64})
    assert change.changed and change.fields == ("sha256",)
    assert change.level == Level.ACTION
    assert change.message.startswith("model changed — re-commission: sha256 aaaaaaaaaaaa -> "
                                     "bbbbbbbbbbbb.")
    verdict = change.to_verdict()
    assert (verdict.case_id, verdict.level, verdict.check_id) == (None, Level.ACTION,
                                                                  "model_fingerprint")
    assert math.isnan(verdict.value)


def test_store_run_records_are_accepted():
    run = {"model_name": "mr2ct-demo", "model_version": "1.1", "model_adapter": "torch",
           "model_sha256": "a" * 64}
    change = compare_fingerprints(FINGERPRINT, run)
    assert change.fields == ("version",)
    assert "version '1.0' -> '1.1'" in change.message


def test_a_model_without_hash_cannot_be_verified():
    bare = {**FINGERPRINT, "sha256": None}
    change = compare_fingerprints(bare, bare)
    assert change.level == Level.TOLERANCE
    assert "cannot be detected" in change.message
