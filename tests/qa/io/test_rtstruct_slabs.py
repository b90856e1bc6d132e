"""Specification of read_rtstruct's slab convention (contour spacing != slice spacing).

A planar contour stands for the slab centred on its plane whose thickness is the contour
plane spacing (half the local spacing on each side); a reference slice takes the contours of
the nearest plane when its centre lies in that plane's slab. Expected values are analytic:

* a cylinder of radius r drawn every ``s`` mm on n planes is n x s mm long in this
  convention; a grid of spacing h fills the slices whose centres lie in that length, so the
  filled length differs from n x s by less than h;
* a sphere of radius R: 4/3 pi R^3, against which the convention itself (sum of planar
  areas x s) is 0.1 % off for s = 3 mm, R = 20 mm; the rest is grid sampling.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from qa.io import read_rtstruct
from qa.volume import Volume
from tests.qa.io.dicom_factory import circle_lps, square_lps, write_rtstruct

FRAME = "1.2.826.0.1.3680043.10.999.2"
PIXEL_MM = 0.5
N_PIXELS = 96  # 48 mm field in-plane, centred on x = y = 0


def _grid(step_mm: float, z_first_mm: float, z_last_mm: float,
          flipped: bool = False) -> Volume:
    """A reference grid whose slice centres run from ``z_first_mm`` by ``step_mm`` (or
    from the top down when ``flipped``: slice axis along -z)."""
    n_slices = int(round((z_last_mm - z_first_mm) / step_mm)) + 1
    origin_y_x = -(N_PIXELS - 1) * PIXEL_MM / 2
    z0 = z_first_mm + (n_slices - 1) * step_mm if flipped else z_first_mm
    direction = np.diag([-1.0 if flipped else 1.0, 1.0, 1.0])
    return Volume(np.zeros((n_slices, N_PIXELS, N_PIXELS), np.int16),
                  (step_mm, PIXEL_MM, PIXEL_MM), (z0, origin_y_x, origin_y_x), direction,
                  {"frame_of_reference_uid": FRAME})


def _write(tmp_path, rois: dict[str, list[np.ndarray]]):
    return write_rtstruct(tmp_path / "rs.dcm", [
        {"number": k, "name": name, "contours": [("CLOSED_PLANAR", c) for c in contours]}
        for k, (name, contours) in enumerate(rois.items(), start=1)], frame_uid=FRAME)


def _slice_z_mm(mask: Volume) -> np.ndarray:
    """Patient z (mm) of the centres of the slices holding at least one voxel."""
    ks = np.flatnonzero(mask.array.any(axis=(1, 2)))
    return np.sort(mask.index_to_world(np.column_stack([ks, 0 * ks, 0 * ks]))[:, 0])


SPHERE_R_MM = 20.0
SPHERE_PLANES_MM = np.arange(-SPHERE_R_MM + 0.25, SPHERE_R_MM, 3.0)  # -19.75 .. 19.25


def _sphere_contours() -> list[np.ndarray]:
    return [circle_lps(z, (0.0, 0.0), float(np.sqrt(SPHERE_R_MM**2 - z**2)), 256)
            for z in SPHERE_PLANES_MM]


def test_the_slab_convention_itself_is_close_to_the_analytic_sphere():
    """Sum of planar areas x 3 mm, the volume a TPS reports for these contours."""
    slab_mm3 = np.sum(np.pi * (SPHERE_R_MM**2 - SPHERE_PLANES_MM**2)) * 3.0
    assert slab_mm3 == pytest.approx(4 / 3 * np.pi * SPHERE_R_MM**3, rel=2e-3)


# (grid slice spacing mm, first slice centre mm, relative tolerance on 4/3 pi R^3).
# Tolerances: 0.1 % convention + in-plane pixels (0.5 mm, about 0.3 %) + boolean slabs on
# the grid (a slice in or out as a whole: at most one grid slice of the end caps). Measured
# on 2026-11-27: -0.72 % (2.5 mm), +0.03 % (1.25 mm), +1.95 % (5 mm: each slice samples the
# nearest plane); the reader before the slab convention (nearest slice within half a slice,
# other slices left empty): -16.7 % (2.5 mm), -58.4 % (1.25 mm), +1.95 % (5 mm).
@pytest.mark.parametrize(("step_mm", "z_first_mm", "rel"), [
    (2.5, -28.75, 0.01), (1.25, -27.5, 0.01), (5.0, -27.5, 0.03)], ids=["2.5mm", "1.25mm", "5mm"])
def test_sphere_contoured_every_3_mm_keeps_its_volume_on_other_grids(tmp_path, step_mm,
                                                                     z_first_mm, rel):
    path = _write(tmp_path, {"Sphere": _sphere_contours()})
    mask = read_rtstruct(path, _grid(step_mm, z_first_mm, -z_first_mm))["Sphere"]
    volume_mm3 = mask.array.sum() * mask.voxel_volume_mm3
    assert volume_mm3 == pytest.approx(4 / 3 * np.pi * SPHERE_R_MM**3, rel=rel)
    assert mask.metadata["warnings"] == [] if step_mm < 3.0 else \
        "are thicker than the contour spacing" in mask.metadata["warnings"][0]
    # every filled slice lies in the slab of the planes: -21.25 .. 20.75 mm
    z = _slice_z_mm(mask)
    assert z.min() >= -21.25 - 1e-6 and z.max() <= 20.75 + 1e-6
    assert mask.metadata["max_plane_offset_mm"] <= 1.5 + 1e-6


@pytest.mark.parametrize("flipped", [False, True], ids=["slices-along+z", "slices-along-z"])
@pytest.mark.parametrize(("step_mm", "z_first_mm"), [
    (3.0, -9.0), (2.5, -10.0), (2.5, -9.3), (1.25, -10.0), (1.0, -9.8), (5.0, -10.0),
    (5.0, -7.9)])
def test_cylinder_length_is_planes_times_spacing_within_one_grid_slice(tmp_path, step_mm,
                                                                       z_first_mm, flipped):
    radius_mm, planes_mm = 15.0, np.arange(0.0, 31.0, 3.0)  # 11 planes: -1.5 .. 31.5 mm
    path = _write(tmp_path, {"Cylinder": [circle_lps(z, (0, 0), radius_mm, 256)
                                          for z in planes_mm]})
    mask = read_rtstruct(path, _grid(step_mm, z_first_mm, 45.0, flipped))["Cylinder"]
    z = _slice_z_mm(mask)
    # filled slices: exactly the grid centres inside -1.5 .. 31.5 mm, contiguous
    grid_z = np.sort(mask.index_to_world(np.column_stack(
        [np.arange(mask.shape[0]), np.zeros(mask.shape[0]), np.zeros(mask.shape[0])]))[:, 0])
    expected = grid_z[(grid_z >= -1.5 - 1e-6) & (grid_z <= 31.5 + 1e-6)]
    np.testing.assert_allclose(z, expected)
    assert abs(z.size * step_mm - 11 * 3.0) < step_mm
    # each filled slice holds the whole disc: pi r^2 within the in-plane pixel error
    areas_mm2 = mask.array.sum(axis=(1, 2))[mask.array.any(axis=(1, 2))] * PIXEL_MM**2
    np.testing.assert_allclose(areas_mm2, np.pi * radius_mm**2, rtol=0.01)
    if step_mm <= 3.0:  # every plane holds at least one slice centre
        assert mask.metadata["n_contours"] == 11 and mask.metadata["warnings"] == []
    else:  # a 5 mm grid samples the plane nearest each slice centre, and says so
        assert mask.metadata["n_contours"] < 11
        assert f"{11 - mask.metadata['n_contours']} contour plane(s)" in \
            mask.metadata["warnings"][0]
        assert "reference slices (5 mm) are thicker than the contour spacing" in \
            mask.metadata["warnings"][0]


def test_contours_on_the_slices_keep_one_plane_per_slice(tmp_path):
    """The common CT case: contour spacing = slice spacing, each plane on its own slice."""
    sides_mm = [4.0, 6.0, 8.0, 6.0]
    path = _write(tmp_path, {"Box": [square_lps(3.0 * k, (0, 0), side, side)
                                     for k, side in enumerate(sides_mm, start=1)]})
    mask = read_rtstruct(path, _grid(3.0, 0.0, 15.0))["Box"]
    counts = mask.array.sum(axis=(1, 2))
    np.testing.assert_array_equal(counts, [0] + [(2 * s / PIXEL_MM) ** 2 for s in sides_mm]
                                  + [0])
    assert mask.metadata["max_plane_offset_mm"] == pytest.approx(0.0)


def test_slice_centres_on_slab_boundaries_are_counted_once(tmp_path):
    """Planes at 1.5 and 4.5 mm stand for 0 .. 6 mm; a 3 mm grid centred at 0, 3, 6 mm has
    its centres on the slab boundaries: slabs are half-open, so two slices (6 mm) are
    filled, not three."""
    path = _write(tmp_path, {"Box": [square_lps(z, (0, 0), 5, 5) for z in (1.5, 4.5)]})
    mask = read_rtstruct(path, _grid(3.0, -3.0, 9.0))["Box"]
    np.testing.assert_allclose(_slice_z_mm(mask), [0.0, 3.0])
    assert mask.metadata["max_plane_offset_mm"] == pytest.approx(1.5)


def test_non_uniform_spacing_uses_the_local_spacing(tmp_path):
    """Planes every 2 mm then every 5 mm (variable CT slice spacing): slabs meet at the
    midpoints, [-1, 23.5) mm (half-open), with no gap warning."""
    planes_mm = [0.0, 2.0, 4.0, 6.0, 11.0, 16.0, 21.0]
    path = _write(tmp_path, {"Box": [square_lps(z, (0, 0), 5, 5) for z in planes_mm]})
    mask = read_rtstruct(path, _grid(0.5, -5.0, 30.0))["Box"]
    z = _slice_z_mm(mask)
    np.testing.assert_allclose(z, np.arange(-1.0, 23.5 - 1e-9, 0.5))
    assert mask.metadata["warnings"] == []


def test_single_plane_gets_one_slab_of_the_structure_set_spacing(tmp_path):
    """One plane: the slab is the structure set's typical plane spacing (3 mm here, from the
    other ROI), else the reference slice spacing when the file has a single plane."""
    path = _write(tmp_path, {"Body": [square_lps(z, (0, 0), 20, 20) for z in range(0, 31, 3)],
                             "Seed": [square_lps(12.0, (0, 0), 2, 2)]})
    seed = read_rtstruct(path, _grid(1.0, 0.0, 30.0), names=["Seed"])["Seed"]
    np.testing.assert_allclose(_slice_z_mm(seed), [11.0, 12.0, 13.0])  # 10.5 .. 13.5 mm
    alone = _write(tmp_path, {"Seed": [square_lps(12.0, (0, 0), 2, 2)]})
    seed = read_rtstruct(alone, _grid(1.0, 0.0, 30.0))["Seed"]
    np.testing.assert_allclose(_slice_z_mm(seed), [12.0])


def test_a_gap_between_planes_stays_empty_and_is_warned(tmp_path, caplog):
    """Planes every 3 mm with 9 mm missing (or two separate parts): each side fills only
    its own slab and the warning names the ROI and the planes. dicompyler-core 0.5.6 also
    leaves a gap empty: 20 x 20 mm squares at 0, 3, 6, 15, 18 mm on a 2.5 mm dose grid give
    6.0 cc there and here (5 planes x 3 mm x 4 cm^2; filling the gap would give 8.4 cc),
    measured on 2026-11-27 with the helpers of tests/checks/test_dvh_peer.py."""
    planes_mm = [0.0, 3.0, 6.0, 12.0, 15.0]
    path = _write(tmp_path, {"Node": [square_lps(z, (0, 0), 5, 5) for z in planes_mm]})
    with caplog.at_level(logging.WARNING, logger="qa.io.rtstruct"):
        on_slices = read_rtstruct(path, _grid(3.0, -3.0, 18.0))["Node"]
    np.testing.assert_allclose(_slice_z_mm(on_slices), planes_mm)
    assert on_slices.array.sum() * on_slices.voxel_volume_mm3 == pytest.approx(5 * 3.0 * 100)
    fine = read_rtstruct(path, _grid(1.0, -3.0, 18.0))["Node"]
    np.testing.assert_allclose(_slice_z_mm(fine), [*range(-1, 8), *range(11, 17)])
    note = ("no contour between the planes z = 6.00 mm and z = 12.00 mm (6.00 mm apart, "
            "more than 1.5 x the neighbouring plane spacing)")
    assert any(note in w for w in fine.metadata["warnings"])
    assert any("ROI 'Node'" in r.getMessage() and note in r.getMessage()
               for r in caplog.records)


def test_plane_tolerance_caps_the_slab(tmp_path):
    path = _write(tmp_path, {"Box": [square_lps(z, (0, 0), 5, 5) for z in (0.0, 3.0, 6.0)]})
    mask = read_rtstruct(path, _grid(1.0, -3.0, 9.0), plane_tolerance_mm=0.6)["Box"]
    np.testing.assert_allclose(_slice_z_mm(mask), [0.0, 3.0, 6.0])
    with pytest.raises(ValueError, match="plane_tolerance_mm must be >= 0 mm, got -1"):
        read_rtstruct(path, _grid(1.0, -3.0, 9.0), plane_tolerance_mm=-1)


def test_tilted_contours_are_skipped_as_not_parallel(tmp_path):
    tilted = square_lps(3.0, (0, 0), 5, 5)
    tilted[:, 2] += np.array([0.0, 2.0, 2.0, 0.0])  # the plane tilts along x
    path = _write(tmp_path, {"Box": [square_lps(0.0, (0, 0), 5, 5), tilted]})
    mask = read_rtstruct(path, _grid(1.0, -3.0, 9.0))["Box"]
    assert "plane z = 4.00 mm) is not parallel to the reference slices; skipped" in \
        mask.metadata["warnings"][0]
    assert mask.metadata["n_contours"] == 1
