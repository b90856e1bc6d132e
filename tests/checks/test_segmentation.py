"""Specification of checks.segmentation.compare_masks: overlap, surface distances, APL.

Expected values are exact: closed-form sphere distances and lens volumes integrated on
400,000 area-equal nodes (tests/checks/_segmentation_analytic.py), circle lengths for the
added path length, hand counts for cubes. The tolerances stated here are what the default
(``exact``) method reaches; DeepMind-style surfels miss the same values by 5 to 20 times more
(REFERENCE.md: HD95 2.94 vs 3.31 mm, ASSD 1.16 vs 1.56 mm, surface Dice 0.72 vs 0.625).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from checks.segmentation import SegmentationResult, compare_masks, weighted_percentile
from qa.volume import GridMismatchError, Volume
from tests.checks._segmentation_analytic import (
    Ellipsoid,
    Sphere,
    exact_metrics,
    exact_metrics_sampled,
    reference_pair,
    reference_pair_result,
)

ANISO_MM = (2.5, 0.98, 0.98)
ISO_MM = (1.0, 1.0, 1.0)


def _pair(spacing, shape, r_ref, r_pred, shift_mm, offset=(0.3, 0.17, -0.21), islands=()):
    centre = np.array(shape) * np.array(spacing) / 2 + np.array(offset)
    ref = Sphere(tuple(centre), r_ref)
    pred = [Sphere(tuple(centre + np.array(shift_mm)), r_pred), *islands]
    ref_mask = ref.mask(shape, spacing)
    pred_mask = np.any([s.mask(shape, spacing) for s in pred], axis=0)
    return ([ref], pred, Volume(ref_mask, spacing), Volume(pred_mask, spacing))


@pytest.fixture(scope="module")
def reference_spheres():
    """REFERENCE.md's pair: r 30 mm vs 31.5 mm shifted 2 mm, 2.5 x 0.98 x 0.98 mm voxels."""
    return (reference_pair()[0], reference_pair_result("exact"),
            reference_pair_result("deepmind"))


def test_exact_values_of_the_reference_pair_are_those_quoted_in_reference_md(
        reference_spheres):
    exact, _, _ = reference_spheres
    assert (round(exact.dice, 3), round(exact.hd95_mm, 2), round(exact.assd_mm, 2),
            round(exact.surface_dice, 3)) == (0.924, 3.31, 1.56, 0.625)


@pytest.mark.slow
def test_default_method_converges_to_the_continuous_answer_at_2_5_mm(reference_spheres):
    exact, ours, _ = reference_spheres
    assert ours.dice == pytest.approx(exact.dice, abs=0.002)
    assert ours.hd95_mm == pytest.approx(exact.hd95_mm, abs=0.05)
    assert ours.assd_mm == pytest.approx(exact.assd_mm, abs=0.04)
    assert ours.masd_mm == pytest.approx(exact.masd_mm, abs=0.04)
    assert ours.hd95_pooled_mm == pytest.approx(exact.hd95_pooled_mm, abs=0.05)
    assert ours.surface_dice == pytest.approx(exact.surface_dice, abs=0.03)
    # surface area of the mesh: within 2 % of 4 pi r^2 (voxel-face count: +50 %)
    assert ours.surface_area_ref_mm2 == pytest.approx(4 * math.pi * 30.0**2, rel=0.02)


def test_deepmind_method_reproduces_the_peer_numbers_quoted_in_reference_md(
        reference_spheres):
    _, _, dm = reference_spheres
    assert (round(dm.hd95_mm, 2), round(dm.assd_mm, 1), round(dm.surface_dice, 2)) == (
        2.94, 1.1, 0.72)


def test_default_method_is_closer_to_exact_than_deepmind_surfels(reference_spheres):
    exact, ours, dm = reference_spheres
    for field in ("hd95_mm", "assd_mm", "masd_mm", "surface_dice"):
        err_ours = abs(getattr(ours, field) - getattr(exact, field))
        err_dm = abs(getattr(dm, field) - getattr(exact, field))
        assert err_ours < err_dm / 4, field


def test_default_method_at_1_mm_on_scaled_and_shifted_spheres():
    ref, pred, a, b = _pair(ISO_MM, (40, 40, 40), 14.0, 15.2, (0.7, -0.9, 1.1))
    exact = exact_metrics(ref, pred, 1.5)
    ours = compare_masks(a, b, 1.5)
    assert ours.dice == pytest.approx(exact.dice, abs=0.003)
    assert ours.hd95_mm == pytest.approx(exact.hd95_mm, abs=0.06)
    assert ours.assd_mm == pytest.approx(exact.assd_mm, abs=0.03)
    assert ours.masd_mm == pytest.approx(exact.masd_mm, abs=0.03)
    assert ours.surface_dice == pytest.approx(exact.surface_dice, abs=0.02)
    assert ours.centroid_distance_mm == pytest.approx(math.hypot(0.7, 0.9, 1.1), abs=0.1)
    assert ours.volume_ref_cm3 == pytest.approx(ref[0].volume_mm3 / 1000, rel=0.01)


def test_false_positive_island_separates_directed_and_pooled_hd95():
    # island: r 3.5 mm ball 10 mm beyond the predicted surface: 5.9 % of the predicted
    # area (above 5 %: it sets the directed HD95) but 3.2 % of both surfaces pooled
    shape = (40, 40, 72)
    centre = np.array(shape, float) / 2 + np.array([0.3, 0.17, -0.21])
    island = Sphere(tuple(centre + np.array([0.0, 0.0, 14.0 + 10.0 + 3.5])), 3.5)
    ref, pred, a, b = _pair(ISO_MM, shape, 13.0, 14.0, (0.5, -0.4, 0.3), islands=[island])
    exact = exact_metrics(ref, pred, 2.0)
    ours = compare_masks(a, b, 2.0)
    assert exact.hd95_mm > 10.0 > 2.0 > exact.hd95_pooled_mm
    assert ours.hd95_mm == pytest.approx(exact.hd95_mm, abs=0.3)
    assert ours.hd95_pooled_mm == pytest.approx(exact.hd95_pooled_mm, abs=0.1)
    assert ours.hd_mm == pytest.approx(exact.hd_mm, abs=0.6)
    assert ours.assd_mm == pytest.approx(exact.assd_mm, abs=0.1)
    assert ours.surface_dice == pytest.approx(exact.surface_dice, abs=0.02)
    assert ours.dice == pytest.approx(exact.dice, abs=0.005)


@pytest.fixture(scope="module")
def ellipsoid_and_sphere():
    """Ellipsoid 12 x 16 x 20 mm against a 15.5 mm sphere shifted (0, 0.73, 0.71) mm.
    Exact: distances by Eberly's secular equation, Dice on a 0.25 mm integration grid."""
    ref = Ellipsoid((20.3, 24.17, 27.79), (12.0, 16.0, 20.0))
    pred = Ellipsoid((20.3, 24.9, 28.5), (15.5, 15.5, 15.5))
    exact = exact_metrics_sampled(ref, pred, 1.5, box_mm=((4, 7, 6), (37, 42, 49)),
                                  step_mm=0.25)
    return ref, pred, exact


@pytest.mark.parametrize(("spacing", "shape", "tol"), [
    (ISO_MM, (42, 50, 58), {"dice": 0.002, "hd95_mm": 0.05, "assd_mm": 0.03,
                            "masd_mm": 0.03, "surface_dice": 0.01}),
    (ANISO_MM, (17, 51, 59), {"dice": 0.003, "hd95_mm": 0.15, "assd_mm": 0.03,
                              "masd_mm": 0.03, "surface_dice": 0.03}),
])
def test_default_method_on_an_ellipsoid_against_a_sphere(ellipsoid_and_sphere, spacing, shape,
                                                         tol):
    ref, pred, exact = ellipsoid_and_sphere
    a, b = Volume(ref.mask(shape, spacing), spacing), Volume(pred.mask(shape, spacing), spacing)
    ours = compare_masks(a, b, 1.5)
    deepmind = compare_masks(a, b, 1.5, method="deepmind")
    for field, tolerance in tol.items():
        assert getattr(ours, field) == pytest.approx(getattr(exact, field), abs=tolerance), field
    for field in ("assd_mm", "surface_dice"):  # surfels miss by 0.3-0.4 mm and 0.14
        assert abs(getattr(ours, field) - getattr(exact, field)) < abs(
            getattr(deepmind, field) - getattr(exact, field)) / 5


@pytest.mark.parametrize("method", ["exact", "deepmind"])
def test_identical_masks_agree_perfectly(method):
    mask = np.zeros((12, 14, 16), bool)
    mask[3:9, 4:10, 5:12] = True
    result = compare_masks(Volume(mask, ANISO_MM), Volume(mask.copy(), ANISO_MM), method=method)
    assert (result.dice, result.jaccard, result.surface_dice) == (1.0, 1.0, 1.0)
    assert result.hd_mm == pytest.approx(0.0, abs=1e-9)
    assert result.apl_mm == pytest.approx(0.0, abs=1e-9)
    assert result.volume_diff_percent == 0.0
    assert result.volume_ref_cm3 == pytest.approx(6 * 6 * 7 * 2.5 * 0.98 * 0.98 / 1000)
    assert result.empty == "none"


@pytest.mark.parametrize("method", ["exact", "deepmind"])
def test_swapping_the_masks_swaps_the_directed_values_only(method):
    rng = np.random.default_rng(3)
    a = _blob(rng, (14, 20, 20))
    b = _blob(rng, (14, 20, 20))
    ab = compare_masks(Volume(a, ANISO_MM), Volume(b, ANISO_MM), method=method)
    ba = compare_masks(Volume(b, ANISO_MM), Volume(a, ANISO_MM), method=method)
    for sym in ("dice", "hd_mm", "hd95_mm", "hd95_pooled_mm", "assd_mm", "masd_mm",
                "surface_dice", "centroid_distance_mm"):
        assert getattr(ab, sym) == pytest.approx(getattr(ba, sym), rel=1e-12), sym
    assert ab.mean_distance_ref_to_pred_mm == pytest.approx(ba.mean_distance_pred_to_ref_mm)
    assert ab.apl_mm == pytest.approx(ba.removed_path_length_mm)


def test_result_does_not_depend_on_the_empty_margin_around_the_masks():
    # equal to float32 rounding: marching cubes returns float32 vertices
    rng = np.random.default_rng(4)
    a, b = _blob(rng, (12, 16, 16)), _blob(rng, (12, 16, 16))
    small = compare_masks(Volume(a, ANISO_MM), Volume(b, ANISO_MM))
    pad = ((5, 2), (0, 7), (3, 3))
    big = compare_masks(Volume(np.pad(a, pad), ANISO_MM), Volume(np.pad(b, pad), ANISO_MM))
    for field, value in small.to_dict().items():
        assert getattr(big, field) == (value if isinstance(value, str) else
                                       pytest.approx(value, rel=1e-6, abs=1e-6)), field


# -- added path length ------------------------------------------------------------------

def _cylinder(shape, spacing, radius_mm, centre_yx_mm, slices):
    y = np.arange(shape[1])[:, None] * spacing[1]
    x = np.arange(shape[2])[None, :] * spacing[2]
    disk = (y - centre_yx_mm[0]) ** 2 + (x - centre_yx_mm[1]) ** 2 <= radius_mm**2
    mask = np.zeros(shape, bool)
    mask[slices] = disk
    return mask


def test_apl_of_concentric_cylinders_is_the_whole_circle_when_beyond_tolerance():
    shape, spacing = (10, 64, 64), (3.0, 1.0, 1.0)
    ref = _cylinder(shape, spacing, 20.0, (31.6, 32.3), slice(2, 8))
    pred = _cylinder(shape, spacing, 17.0, (31.6, 32.3), slice(2, 7))  # one slice missing
    far = compare_masks(Volume(ref, spacing), Volume(pred, spacing), 2.0)
    # 6 reference circles of r 20 mm (3 mm > 2 mm everywhere); 5 predicted circles removed
    assert far.apl_mm == pytest.approx(6 * 2 * math.pi * 20.0, rel=0.01)
    assert far.removed_path_length_mm == pytest.approx(5 * 2 * math.pi * 17.0, rel=0.01)
    near = compare_masks(Volume(ref, spacing), Volume(pred, spacing), 4.0)
    # within 4 mm on 5 slices; the slice without prediction is drawn in full
    assert near.apl_mm == pytest.approx(2 * math.pi * 20.0, rel=0.01)
    assert near.removed_path_length_mm == pytest.approx(0.0, abs=1e-9)
    assert near.reference_contour_length_mm == pytest.approx(6 * 2 * math.pi * 20.0, rel=0.01)


# -- empty masks and bad input --------------------------------------------------------

def test_both_masks_empty_is_flagged_and_undefined_not_perfect():
    empty = Volume(np.zeros((5, 6, 7), bool), ISO_MM)
    result = compare_masks(empty, empty)
    assert result.empty == "both"
    for field in ("dice", "jaccard", "hd95_mm", "assd_mm", "surface_dice",
                  "centroid_distance_mm", "volume_diff_percent"):
        assert math.isnan(getattr(result, field)), field
    assert (result.volume_ref_cm3, result.apl_mm) == (0.0, 0.0)


@pytest.mark.parametrize("method", ["exact", "deepmind"])
def test_one_empty_mask_scores_zero_overlap_and_undefined_distances(method):
    mask = np.zeros((8, 9, 10), bool)
    mask[2:6, 2:7, 3:8] = True
    full, empty = Volume(mask, ISO_MM), Volume(np.zeros_like(mask), ISO_MM)
    missed = compare_masks(full, empty, method=method)
    assert missed.empty == "predicted"
    assert (missed.dice, missed.surface_dice, missed.volume_diff_percent) == (0.0, 0.0, -100.0)
    assert math.isnan(missed.hd95_mm) and math.isnan(missed.assd_mm)
    assert missed.apl_mm == pytest.approx(missed.reference_contour_length_mm)
    assert missed.apl_mm > 0
    invented = compare_masks(empty, full, method=method)
    assert invented.empty == "reference"
    assert invented.dice == 0.0 and math.isnan(invented.volume_diff_percent)
    assert invented.apl_mm == 0.0 and invented.removed_path_length_mm > 0


def test_masks_on_different_grids_are_refused_with_both_names():
    a = Volume(np.ones((4, 4, 4), bool), ISO_MM)
    b = Volume(np.ones((4, 4, 4), bool), ISO_MM, origin=(0.0, 0.0, 0.5))
    with pytest.raises(GridMismatchError, match=r"reference and predicted are on different "
                                                r"grids \(origin"):
        compare_masks(a, b)
    assert compare_masks(a, b, resample=True).empty == "none"


def test_non_binary_labels_are_refused_naming_the_values():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1:3, 1:4, 1:5] = 2
    labels[1, 1, 1] = 1
    ref = Volume(labels > 0, ISO_MM)
    with pytest.raises(ValueError, match=r"predicted mask is not binary: it holds values "
                                         r"0, 1, 2\. Pass one structure as a boolean mask"):
        compare_masks(ref, Volume(labels, ISO_MM))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "medpy"}, "method must be one of exact, deepmind, got 'medpy'"),
    ({"tolerance_mm": -1.0}, "tolerance_mm must be a finite number >= 0 mm, got -1.0"),
    ({"percentile": 101}, r"percentile must be within \[0, 100\], got 101"),
])
def test_bad_parameters_are_named(kwargs, message):
    mask = Volume(np.ones((3, 3, 3), bool), ISO_MM)
    with pytest.raises(ValueError, match=message):
        compare_masks(mask, mask, **kwargs)


def test_weighted_percentile_uses_the_lower_inverted_cdf_rule():
    values, weights = np.array([3.0, 1.0, 2.0]), np.array([2.0, 1.0, 1.0])
    assert weighted_percentile(values, weights, 25) == 1.0
    assert weighted_percentile(values, weights, 50) == 2.0
    assert weighted_percentile(values, weights, 51) == 3.0
    assert math.isnan(weighted_percentile(np.array([]), np.array([]), 95))


def test_result_is_a_frozen_record_with_units_in_its_field_names():
    mask = Volume(np.ones((3, 3, 3), bool), ISO_MM)
    result = compare_masks(mask, mask)
    assert isinstance(result, SegmentationResult)
    with pytest.raises(AttributeError):
        result.dice = 0.5  # type: ignore[misc]
    assert {"hd95_mm", "volume_ref_cm3", "volume_diff_percent", "apl_mm"} <= set(
        result.to_dict())


def _blob(rng: np.random.Generator, shape) -> np.ndarray:
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    mask = field > np.quantile(field, 0.6)
    mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1] = (False,) * 6
    return mask


@pytest.mark.parametrize("method", ["exact", "deepmind"])
def test_single_voxels_and_thin_sheets_keep_their_surface(method):
    # smoothing would erase them: the default method falls back to less or no smoothing
    one = np.zeros((5, 5, 6), bool)
    one[2, 2, 2] = True
    moved = np.roll(one, 1, axis=2)
    result = compare_masks(Volume(one, ISO_MM), Volume(moved, ISO_MM), method=method)
    assert result.dice == 0.0 and result.empty == "none"
    assert result.hd95_mm == pytest.approx(1.0)  # the voxel moved by 1 mm
    assert result.surface_dice == 1.0  # every surface point within 2 mm of the other
    sheet = np.zeros((12, 20, 20), bool)
    sheet[6, 3:17, 3:17] = True
    same = compare_masks(Volume(sheet, ISO_MM), Volume(sheet.copy(), ISO_MM), method=method)
    assert (same.dice, same.surface_dice) == (1.0, 1.0)
    assert same.surface_area_ref_mm2 > 2 * 13 * 13  # both faces of the 14 x 14 mm sheet


def test_centroid_distance_is_scipys_centre_of_mass_distance():
    from scipy import ndimage

    rng = np.random.default_rng(5)
    spacing = (2.5, 0.98, 0.7)
    for _ in range(5):
        a, b = (rng.random((9, 14, 17)) > 0.6 for _ in range(2))
        expected = np.linalg.norm((np.asarray(ndimage.center_of_mass(a))
                                   - np.asarray(ndimage.center_of_mass(b))) * spacing)
        got = compare_masks(Volume(a, spacing), Volume(b, spacing)).centroid_distance_mm
        assert got == pytest.approx(expected, rel=1e-12)


def test_one_thread_when_numba_is_capped_to_one_same_values(monkeypatch):
    import numba

    import checks.segmentation as seg

    ref, pred, a, b = _pair(ISO_MM, (30, 30, 30), 9.0, 10.0, (0.5, -0.4, 0.8))
    threaded = compare_masks(a, b, 1.5)
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        def no_threads(*args, **kwargs):
            raise AssertionError("a helper thread was started")

        monkeypatch.setattr(seg, "ThreadPoolExecutor", no_threads)
        serial = compare_masks(a, b, 1.5)
    finally:
        numba.set_num_threads(previous)
    assert serial == threaded or all(
        (x == y) or (x != x and y != y)
        for x, y in zip(serial.to_dict().values(), threaded.to_dict().values(), strict=True))


def test_an_error_in_the_inline_executor_surfaces_at_result():
    from checks.segmentation import _InlineExecutor

    future = _InlineExecutor().submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        future.result()
