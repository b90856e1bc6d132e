"""Specification of qa.io.read_rtdose.

Independent references: pydicom's ``rtdose.dcm`` (15 frames of 10 x 10, 10 mm pixels,
5 mm frames, DoseGridScaling 1e-6, DoseUnits RELATIVE), SimpleITK's GDCM reader for its
geometry (it does not apply DoseGridScaling), and synthetic files written by the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813
from pydicom.data import get_testdata_file

from qa.errors import ReaderError
from qa.io import read_image, read_rtdose
from tests.qa.io.dicom_factory import write_rtdose, write_slice


def _stored(shape=(4, 3, 5)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.uint32).reshape(shape) * 1000 + 7


def test_pydicom_rtdose_is_relative_and_refused():
    with pytest.raises(ReaderError, match="relative dose cannot be compared in Gy") as info:
        read_rtdose(get_testdata_file("rtdose.dcm"))
    assert info.value.field == "DoseUnits"


def test_pydicom_rtdose_in_gy_matches_simpleitk_geometry(tmp_path):
    source = get_testdata_file("rtdose.dcm")
    dataset = pydicom.dcmread(source)
    dataset.DoseUnits = "GY"
    path = tmp_path / "dose.dcm"
    dataset.save_as(path)
    volume = read_rtdose(path)
    assert volume.shape == (15, 10, 10)
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array, dataset.pixel_array * 1e-6, rtol=1e-6)
    assert volume.array.min() == pytest.approx(0.795) and volume.array.max() == pytest.approx(
        1.254)
    assert volume.spacing == pytest.approx((5.0, 10.0, 10.0))
    assert volume.origin == pytest.approx((-761.87, 199.43125, 189.43125))
    reference = sitk.ReadImage(str(path))
    assert volume.spacing == pytest.approx(reference.GetSpacing()[::-1])
    for index in [(0, 0, 0), (14, 9, 9), (7, 2, 5)]:
        expected = reference.TransformIndexToPhysicalPoint(index[::-1])
        np.testing.assert_allclose(volume.index_to_world(np.array(index)), expected[::-1])
    meta = volume.metadata
    assert meta["dose_type"] == "PHYSICAL" and meta["dose_summation_type"] == "BEAM"
    assert meta["frame_of_reference_uid"] == dataset.FrameOfReferenceUID
    assert meta["grid_frame_offset_convention"] == "relative"
    assert "Lastname" not in repr(meta) and "id11111" not in repr(meta)


@pytest.mark.parametrize("convention", ["relative", "absolute"])
def test_both_offset_conventions_give_the_same_grid(tmp_path, convention):
    stored = _stored()
    z0 = -30.0
    relative = [0.0, 2.5, 5.0, 7.5]
    offsets = relative if convention == "relative" else [z0 + o for o in relative]
    path = write_rtdose(tmp_path / "d.dcm", stored, position_lps=(-10.0, 20.0, z0),
                        offsets=offsets, scaling=2.5e-4)
    volume = read_rtdose(path)
    assert volume.metadata["grid_frame_offset_convention"] == convention
    assert volume.spacing == pytest.approx((2.5, 2.0, 3.0))
    assert volume.origin == pytest.approx((z0, 20.0, -10.0))
    assert volume.direction is None
    np.testing.assert_allclose(volume.array, stored * 2.5e-4, rtol=1e-6)
    assert volume.metadata["dose_units"] == "GY"


def test_descending_offsets_are_put_in_ascending_order(tmp_path):
    stored = _stored()
    path = write_rtdose(tmp_path / "d.dcm", stored, position_lps=(0.0, 0.0, 10.0),
                        offsets=[0.0, -3.0, -6.0, -9.0], scaling=1e-3)
    volume = read_rtdose(path)
    assert volume.spacing[0] == pytest.approx(3.0)
    assert volume.origin[0] == pytest.approx(1.0)  # the frame at offset -9 mm
    np.testing.assert_allclose(volume.array, stored[::-1] * 1e-3, rtol=1e-6)
    # physical z of each frame is preserved
    z_of_frame = volume.index_to_world(np.array([[k, 0, 0] for k in range(4)]))[:, 0]
    np.testing.assert_allclose(z_of_frame, [1.0, 4.0, 7.0, 10.0])


def test_oblique_dose_grid_runs_along_the_normal(tmp_path):
    row = np.array([0.0, 1.0, 0.0])
    col = np.array([0.0, 0.0, -1.0])  # sagittal frames: normal = row x col = (-1, 0, 0)
    path = write_rtdose(tmp_path / "d.dcm", _stored(), position_lps=(5.0, -2.0, 3.0),
                        offsets=[0.0, 2.0, 4.0, 6.0], orientation=(*row, *col))
    volume = read_rtdose(path)
    np.testing.assert_allclose(volume.index_to_world(np.array([3, 0, 0])),
                               [3.0, -2.0, 5.0 - 6.0])
    np.testing.assert_allclose(volume.index_to_world(np.array([0, 1, 1])),
                               [3.0 - 2.0, -2.0 + 3.0, 5.0])


def test_non_uniform_offsets_are_refused(tmp_path):
    path = write_rtdose(tmp_path / "d.dcm", _stored(), position_lps=(0, 0, 0),
                        offsets=[0.0, 2.5, 5.0, 10.0])
    with pytest.raises(ReaderError, match="gap of 5.000 mm") as info:
        read_rtdose(path)
    assert info.value.field == "GridFrameOffsetVector"


def test_ambiguous_first_offset_is_refused(tmp_path):
    path = write_rtdose(tmp_path / "d.dcm", _stored(), position_lps=(0, 0, -50.0),
                        offsets=[3.0, 5.5, 8.0, 10.5])
    with pytest.raises(ReaderError, match="neither 0 .* nor ImagePositionPatient z"):
        read_rtdose(path)


def test_offset_count_must_match_frames(tmp_path):
    path = write_rtdose(tmp_path / "d.dcm", _stored(), position_lps=(0, 0, 0),
                        offsets=[0.0, 2.0, 4.0])
    with pytest.raises(ReaderError, match="3 values for 4 frames"):
        read_rtdose(path)


def test_missing_scaling_is_refused_not_taken_as_one(tmp_path):
    path = write_rtdose(tmp_path / "d.dcm", _stored(), position_lps=(0, 0, 0),
                        offsets=[0.0, 2.0, 4.0, 6.0], scaling=None)
    with pytest.raises(ReaderError, match="DoseGridScaling is missing") as info:
        read_rtdose(path)
    assert info.value.field == "DoseGridScaling"


def test_other_units_and_modalities_are_refused(tmp_path):
    path = write_rtdose(tmp_path / "d.dcm", _stored(), position_lps=(0, 0, 0),
                        offsets=[0.0, 2.0, 4.0, 6.0], units="CGY")
    with pytest.raises(ReaderError, match="DoseUnits is CGY; only GY"):
        read_rtdose(path)
    ct = write_slice(tmp_path / "ct.dcm", np.zeros((2, 2)), position_lps=(0, 0, 0),
                     series_uid="1.2.3", frame_uid="1.2.4")
    with pytest.raises(ReaderError, match="expected an RTDOSE file, this one has Modality CT"):
        read_rtdose(ct)


def test_single_frame(tmp_path):
    path = write_rtdose(tmp_path / "d.dcm", _stored((1, 3, 5)), position_lps=(0, 0, 7.0),
                        offsets=[0.0])
    volume = read_rtdose(path)
    assert volume.shape == (1, 3, 5) and volume.spacing[0] == 1.0
    assert volume.metadata["grid_frame_offset_convention"] == "single_frame"
    assert "set to 1 mm" in volume.metadata["warnings"][0]


def test_missing_non_dicom_and_truncated_files(tmp_path):
    with pytest.raises(ReaderError, match="file not found: check the path in the case table"):
        read_rtdose(tmp_path / "absent.dcm")
    text = tmp_path / "notes.dcm"
    text.write_text("not a dose\n")
    with pytest.raises(ReaderError, match="not a DICOM file.*expected an RTDOSE"):
        read_rtdose(text)
    path = write_rtdose(tmp_path / "d.dcm", _stored((4, 30, 30)), position_lps=(0, 0, 0),
                        offsets=[0.0, 2.0, 4.0, 6.0])
    data = Path(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReaderError, match="truncated") as info:
        read_rtdose(path)
    assert info.value.path == str(path)


def test_read_image_dispatches_rtdose_and_refuses_a_lone_ct_slice(tmp_path):
    path = write_rtdose(tmp_path / "d.dcm", _stored(), position_lps=(0, 0, 0),
                        offsets=[0.0, 2.0, 4.0, 6.0])
    assert read_image(path).metadata["format"] == "rtdose"
    ct = write_slice(tmp_path / "ct.dcm", np.zeros((2, 2)), position_lps=(0, 0, 0),
                     series_uid="1.2.3", frame_uid="1.2.4")
    with pytest.raises(ReaderError, match="give the folder holding the whole CT/MR series"):
        read_image(ct)
