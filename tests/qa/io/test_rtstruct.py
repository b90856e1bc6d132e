"""Specification of qa.io.read_rtstruct and normalise_roi_name.

Expected areas are analytic: polygon edges are placed between voxel centres, so the
number of voxel centres inside is exact; a circle's rasterised area is compared with πr².
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from qa.errors import ReaderError
from qa.io import normalise_roi_name, read_rtstruct
from qa.volume import Volume
from tests.qa.io.dicom_factory import circle_lps, square_lps, write_rtstruct

FRAME = "1.2.826.0.1.3680043.10.999.1"


def _reference(shape=(5, 80, 60), spacing=(3.0, 0.5, 1.0), origin=(0.0, -19.75, -29.5),
               direction=None, frame=FRAME) -> Volume:
    return Volume(np.zeros(shape, np.int16), spacing, origin, direction,
                  {"frame_of_reference_uid": frame})


def test_pydicom_rtstruct_patient_outline_has_the_analytic_volume():
    path = get_testdata_file("rtstruct.dcm")
    dataset = pydicom.dcmread(path, force=True)
    points = np.concatenate([np.asarray(c.ContourData, float).reshape(-1, 3)
                             for c in dataset.ROIContourSequence[0].ContourSequence])
    low, high = points.min(axis=0), points.max(axis=0)  # (x, y, z) bounding box, LPS mm
    assert low.tolist() == [-200, -150, -200] and high.tolist() == [200, 150, -180]
    # grid: 5 mm pixels with centres half a pixel off the edges, 10 mm slices on the planes
    spacing = (10.0, 5.0, 5.0)
    origin = (low[2] - 10.0, low[1] - 7.5, low[0] - 7.5)
    shape = (5, int((high[1] - low[1]) / 5) + 3, int((high[0] - low[0]) / 5) + 3)
    reference = Volume(np.zeros(shape), spacing, origin,
                       metadata={"frame_of_reference_uid": dataset.FrameOfReferenceUID
                                 if "FrameOfReferenceUID" in dataset else None})
    rois = read_rtstruct(path, reference)
    assert list(rois) == ["patient"]  # the two isocentre ROIs hold only points
    mask = rois["patient"]
    per_slice_mm2 = mask.array.sum(axis=(1, 2)) * 25.0
    np.testing.assert_array_equal(per_slice_mm2, [0, 400 * 300, 400 * 300, 400 * 300, 0])
    assert mask.array.sum() * mask.voxel_volume_mm3 == pytest.approx(3 * 400 * 300 * 10)
    meta = mask.metadata
    assert meta["roi_number"] == 1 and meta["roi_key"] == "patient"
    assert meta["roi_interpreted_type"] == "EXTERNAL" and meta["n_contours"] == 3
    assert meta["warnings"] == [] and meta["max_plane_offset_mm"] == pytest.approx(0.0)
    with pytest.raises(ReaderError, match="holds only points"):
        read_rtstruct(path, reference, names=["Isocenter 1"])


def test_square_with_a_hole_follows_the_even_odd_rule(tmp_path):
    outer = [("CLOSED_PLANAR", square_lps(z, (0, 0), 10, 10)) for z in (3.0, 6.0)]
    inner = [("CLOSED_PLANAR", square_lps(z, (0, 0), 5, 2.5)) for z in (3.0, 6.0)]
    path = write_rtstruct(tmp_path / "rs.dcm", [
        {"number": 4, "name": "Ring", "contours": inner + outer}], frame_uid=FRAME)
    ring = read_rtstruct(path, _reference())["Ring"]
    assert ring.array.dtype == np.bool_
    counts = ring.array.sum(axis=(1, 2))
    # outer 20 x 20 mm minus inner 10 x 5 mm = 350 mm2 = 700 voxels of 0.5 mm2
    np.testing.assert_array_equal(counts, [0, 700, 700, 0, 0])
    centre = np.rint(ring.world_to_index(np.array([3.0, 0.0, 0.0]) + [0, 0.25, 0.5]))
    assert not ring.array[tuple(centre.astype(int))]  # inside the hole
    in_ring = np.rint(ring.world_to_index(np.array([3.0, 7.75, 7.5]))).astype(int)
    assert ring.array[tuple(in_ring)]
    assert ring.metadata["n_contours"] == 4 and ring.metadata["roi_number"] == 4


@pytest.mark.parametrize("direction", [None, [[1, 0, 0], [0, 0, -1], [0, 1, 0]]],
                         ids=["identity", "rotated-in-plane"])
def test_circle_area_matches_pi_r_squared(tmp_path, direction):
    radius_mm, centre = 20.0, (4.0, -6.0)
    contours = [("CLOSED_PLANAR", circle_lps(2.0 * k, centre, radius_mm)) for k in range(1, 4)]
    path = write_rtstruct(tmp_path / "rs.dcm", [{"number": 1, "name": "Circle",
                                                 "contours": contours}], frame_uid=FRAME)
    origin = (0.0, -40.0, -40.0) if direction is None else (0.0, 40.0, -40.0)
    reference = _reference(shape=(5, 81, 81), spacing=(2.0, 1.0, 1.0), origin=origin,
                           direction=direction)
    mask = read_rtstruct(path, reference)["Circle"]
    area_mm2 = mask.array[2].sum() * 1.0
    assert area_mm2 == pytest.approx(np.pi * radius_mm**2, rel=0.02)
    np.testing.assert_array_equal(mask.array.sum(axis=(1, 2))[[0, 4]], [0, 0])
    # every selected voxel centre lies within the circle (in physical space)
    world = mask.index_to_world(np.argwhere(mask.array))
    distance = np.hypot(world[:, 2] - centre[0], world[:, 1] - centre[1])
    assert distance.max() <= radius_mm + 1e-6


def test_contours_between_and_beyond_slices_are_skipped_with_warnings(tmp_path):
    contours = [("CLOSED_PLANAR", square_lps(3.0, (0, 0), 10, 10)),
                ("CLOSED_PLANAR", square_lps(7.2, (0, 0), 10, 10)),   # 1.2 mm off slice 2
                ("CLOSED_PLANAR", square_lps(99.0, (0, 0), 10, 10))]  # beyond the grid
    path = write_rtstruct(tmp_path / "rs.dcm", [{"number": 1, "name": "Box",
                                                 "contours": contours}], frame_uid=FRAME)
    box = read_rtstruct(path, _reference(), plane_tolerance_mm=0.5)["Box"]
    np.testing.assert_array_equal(box.array.sum(axis=(1, 2)), [0, 800, 0, 0, 0])
    warnings = " | ".join(box.metadata["warnings"])
    assert "plane z = 7.20 mm) lies 1.20 mm from the nearest reference slice" in warnings
    assert "plane z = 99.00 mm) lies outside the reference grid's slices" in warnings
    # default (slab convention): planes 3.0 and 7.2 mm are 4.2 mm apart, so the 7.2 mm
    # plane represents 5.1 .. 9.3 mm and fills the slices centred at 6 and 9 mm
    box = read_rtstruct(path, _reference())["Box"]
    np.testing.assert_array_equal(box.array.sum(axis=(1, 2)), [0, 800, 800, 800, 0])
    assert box.metadata["max_plane_offset_mm"] == pytest.approx(1.8)


def test_several_planes_on_one_thick_slice_keep_the_nearest(tmp_path):
    contours = [("CLOSED_PLANAR", square_lps(4.0, (0, 0), 5, 5)),
                ("CLOSED_PLANAR", square_lps(3.0, (0, 0), 10, 10))]
    path = write_rtstruct(tmp_path / "rs.dcm", [{"number": 1, "name": "Box",
                                                 "contours": contours}], frame_uid=FRAME)
    box = read_rtstruct(path, _reference())["Box"]
    assert box.array[1].sum() == 800  # the 20 x 20 mm square at z = 3 mm, no XOR with z = 4
    assert "only the plane nearest the slice centre" in box.metadata["warnings"][0]


def test_clipping_and_empty_rois_are_flagged(tmp_path):
    path = write_rtstruct(tmp_path / "rs.dcm", [
        {"number": 1, "name": "Big", "contours": [("CLOSED_PLANAR",
                                                   square_lps(3.0, (0, 0), 100, 100))]},
        {"number": 2, "name": "Empty", "contours": []}], frame_uid=FRAME)
    rois = read_rtstruct(path, _reference())
    assert rois["Big"].array[1].all()
    assert "clipped" in rois["Big"].metadata["warnings"][0]
    assert not rois["Empty"].array.any()
    assert "the mask is empty" in rois["Empty"].metadata["warnings"][0]


def test_names_exact_then_normalised_and_missing_names_listed(tmp_path):
    square = [("CLOSED_PLANAR", square_lps(3.0, (0, 0), 5, 5))]
    path = write_rtstruct(tmp_path / "rs.dcm", [
        {"number": 1, "name": "PTV-High Risk", "contours": square},
        {"number": 2, "name": "Tête fémorale-G", "contours": square}], frame_uid=FRAME)
    rois = read_rtstruct(path, _reference(), names=["ptv high risk"])
    assert list(rois) == ["PTV-High Risk"]
    assert rois["PTV-High Risk"].metadata["roi_key"] == "ptv_high_risk"
    femur = read_rtstruct(path, _reference(), names=["Tête fémorale-G"])["Tête fémorale-G"]
    assert femur.metadata["roi_key"] == "tete_femorale_g"
    assert femur.metadata["roi_name"] == "Tête fémorale-G"
    with pytest.raises(ReaderError, match="'Bladder' is not in this structure set") as info:
        read_rtstruct(path, _reference(), names=["Bladder"])
    assert "'PTV-High Risk', 'Tête fémorale-G'" in str(info.value)


def test_duplicate_names_are_refused(tmp_path):
    square = [("CLOSED_PLANAR", square_lps(3.0, (0, 0), 5, 5))]
    path = write_rtstruct(tmp_path / "rs.dcm", [
        {"number": 1, "name": "Rectum", "contours": square},
        {"number": 2, "name": "Rectum", "contours": square}], frame_uid=FRAME)
    with pytest.raises(ReaderError, match=r"two ROIs are named 'Rectum' \(numbers 1 and 2\)"):
        read_rtstruct(path, _reference())


def test_frame_of_reference_mismatch_is_refused(tmp_path):
    square = [("CLOSED_PLANAR", square_lps(3.0, (0, 0), 5, 5))]
    path = write_rtstruct(tmp_path / "rs.dcm", [{"number": 1, "name": "Box",
                                                 "contours": square}], frame_uid=FRAME)
    with pytest.raises(ReaderError, match="not in the same patient coordinates") as info:
        read_rtstruct(path, _reference(frame="1.2.3.4"))
    assert info.value.field == "ReferencedFrameOfReferenceUID"
    # an unknown reference frame is accepted
    assert read_rtstruct(path, _reference(frame=None))["Box"].array.any()


def test_bad_files(tmp_path):
    with pytest.raises(ReaderError, match="file not found"):
        read_rtstruct(tmp_path / "absent.dcm", _reference())
    note = tmp_path / "rs.dcm"
    note.write_text("structure set to follow\n")
    with pytest.raises(ReaderError, match="not a DICOM file"):
        read_rtstruct(note, _reference())
    with pytest.raises(ReaderError, match="expected an RTSTRUCT file, this one has Modality"):
        read_rtstruct(get_testdata_file("CT_small.dcm"), _reference())


@pytest.mark.parametrize(("name", "key"), [
    ("Rectum", "rectum"), ("  PTV - 70 ", "ptv_70"), ("CTV_High-Risk", "ctv_high_risk"),
    ("Vessie", "vessie"), ("Tête fémorale D", "tete_femorale_d"), ("Ö\tsophagus", "o_sophagus"),
])
def test_normalise_roi_name(name, key):
    assert normalise_roi_name(name) == key
