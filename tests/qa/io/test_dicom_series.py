"""Specification of qa.io.read_dicom_series.

Independent references: pydicom's own ``apply_modality_lut`` for HU values, and SimpleITK's
GDCM series reader (``ImageSeriesReader``) for slice order and geometry.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from pydicom.uid import generate_uid

from qa.errors import ReaderError
from qa.io import read_dicom_series, read_image
from tests.qa.io.dicom_factory import write_rtstruct, write_series, write_slice

# An oblique orientation: row cosine rotated 30° about z, column cosine tilted 20° out of
# the axial plane (orthonormalised below).
_ROW = np.array([np.cos(np.pi / 6), np.sin(np.pi / 6), 0.0])
_COL0 = np.array([-np.sin(np.pi / 6) * np.cos(np.pi / 9), np.cos(np.pi / 6) * np.cos(np.pi / 9),
                  np.sin(np.pi / 9)])
OBLIQUE = tuple(_ROW) + tuple(_COL0 - (_COL0 @ _ROW) * _ROW)


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _stored(rng: np.random.Generator, shape=(5, 6, 7)) -> np.ndarray:
    return rng.integers(-200, 3000, size=shape).astype(np.int16)


@pytest.mark.parametrize("orientation", [(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), OBLIQUE],
                         ids=["axial", "oblique"])
def test_shuffled_series_matches_simpleitk_geometry_and_values(tmp_path, orientation):
    rng = np.random.default_rng(1)
    stored = _stored(rng)
    write_series(tmp_path, stored, origin_lps=(-40.5, 12.25, 101.0), step_mm=2.5,
                 orientation=orientation, slopes=[0.5] * 5, intercept=-1000.0,
                 order=[3, 0, 4, 1, 2])
    volume = read_dicom_series(tmp_path)
    assert volume.array.dtype == np.float32
    # values: stored * slope + intercept, slices in order along the normal
    np.testing.assert_array_equal(volume.array, stored * 0.5 - 1000.0)
    assert volume.spacing == pytest.approx((2.5, 0.8, 0.6))
    assert volume.origin == pytest.approx((101.0, 12.25, -40.5))
    reference = _sitk_series(tmp_path)
    np.testing.assert_allclose(volume.array, sitk.GetArrayFromImage(reference), atol=1e-4)
    for index in [(0, 0, 0), (4, 5, 6), (2, 1, 3), (1, 5, 0)]:
        expected = reference.TransformIndexToPhysicalPoint(tuple(int(i) for i in index[::-1]))
        np.testing.assert_allclose(volume.index_to_world(np.array(index)), expected[::-1],
                                   atol=1e-4)


def test_each_slice_uses_its_own_rescale_slope(tmp_path):
    stored = _stored(np.random.default_rng(2), (3, 4, 4))
    write_series(tmp_path, stored, origin_lps=(0, 0, 0), step_mm=3.0, slopes=[1.0, 2.0, 0.25],
                 intercept=-1024.0, order=[2, 1, 0])
    volume = read_dicom_series(tmp_path)
    for k, slope in enumerate([1.0, 2.0, 0.25]):
        np.testing.assert_array_equal(volume.array[k], stored[k] * slope - 1024.0)


def test_ct_small_hu_equal_pydicom_modality_lut_and_metadata(tmp_path):
    source = get_testdata_file("CT_small.dcm")
    shutil.copy(source, tmp_path / "ct.dcm")
    volume = read_dicom_series(tmp_path)
    dataset = pydicom.dcmread(source)
    expected = apply_modality_lut(dataset.pixel_array, dataset)
    assert volume.shape == (1, 128, 128)
    np.testing.assert_array_equal(volume.array[0], expected.astype(np.float32))
    # single slice: thickness from SliceThickness (5 mm in the file)
    assert volume.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    assert volume.origin == pytest.approx((-75.699997, -179.035797, -158.135803))
    meta = volume.metadata
    assert meta["modality"] == "CT" and meta["kvp"] == 120.0
    assert meta["exposure_mas"] == 170.0 and meta["tube_current_ma"] == 170.0
    assert meta["convolution_kernel"] == "STANDARD"
    assert meta["manufacturer_model_name"] == "RHAPSODE"
    assert meta["frame_of_reference_uid"] == dataset.FrameOfReferenceUID
    assert meta["format"] == "dicom_series" and meta["source_path"] == tmp_path.name
    assert meta["warnings"] == [] and meta["non_finite_voxels"] == 0
    # UIDs are kept for linking; this vendor's UIDs embed a date, so look outside them
    text = repr({k: v for k, v in meta.items() if not k.endswith("_uid")})
    for value in ("CompressedSamples", "1CT1", "JFK IMAGING", "ABCD1234", "20040119",
                  "19970430"):
        assert value not in text


def test_acquisition_metadata_averaged_over_slices(tmp_path):
    stored = _stored(np.random.default_rng(3), (3, 4, 4))
    series_uid, frame_uid = generate_uid(), generate_uid()
    for k, ma in enumerate([100, 200, 300]):
        write_slice(tmp_path / f"s{k}.dcm", stored[k], position_lps=(0, 0, 2.0 * k),
                    series_uid=series_uid, frame_uid=frame_uid,
                    extra={"XRayTubeCurrent": ma, "Exposure": ma // 2, "CTDIvol": 5.0 + k,
                           "KVP": 100, "ConvolutionKernel": "Br40"})
    meta = read_dicom_series(tmp_path).metadata
    assert meta["tube_current_ma"] == pytest.approx(200.0)
    assert meta["exposure_mas"] == pytest.approx(100.0)
    assert meta["ctdivol_mgy"] == pytest.approx(6.0)
    assert meta["kvp"] == 100.0 and meta["convolution_kernel"] == "Br40"
    assert meta["n_slices"] == 3


def test_mr_field_strength(tmp_path):
    write_slice(tmp_path / "mr.dcm", np.zeros((4, 4)), position_lps=(0, 0, 0),
                series_uid=generate_uid(), frame_uid=generate_uid(), modality="MR",
                slope=None, intercept=None, extra={"MagneticFieldStrength": 1.5})
    volume = read_dicom_series(tmp_path)
    assert volume.metadata["modality"] == "MR"
    assert volume.metadata["field_strength_t"] == 1.5


def test_single_slice_without_thickness_gets_1mm_and_a_note(tmp_path):
    write_slice(tmp_path / "one.dcm", np.ones((3, 3)), position_lps=(1, 2, 3),
                series_uid=generate_uid(), frame_uid=generate_uid(), slice_thickness=None)
    volume = read_dicom_series(tmp_path)
    assert volume.spacing[0] == 1.0
    assert "set to 1 mm" in volume.metadata["warnings"][0]


def test_missing_slice_is_named(tmp_path):
    stored = _stored(np.random.default_rng(4), (5, 4, 4))
    paths = write_series(tmp_path, stored, origin_lps=(0, 0, -10.0), step_mm=2.5)
    paths[2].unlink()
    with pytest.raises(ReaderError, match="non-uniform slice spacing") as info:
        read_dicom_series(tmp_path)
    assert "gap of 5.000 mm" in str(info.value) and "-7.500 and -2.500 mm" in str(info.value)


def test_duplicate_positions_are_refused(tmp_path):
    stored = _stored(np.random.default_rng(5), (2, 4, 4))
    uid, frame = generate_uid(), generate_uid()
    for k in range(2):
        write_slice(tmp_path / f"s{k}.dcm", stored[k], position_lps=(0, 0, 5.0),
                    series_uid=uid, frame_uid=frame)
    with pytest.raises(ReaderError, match="same position 5.000 mm"):
        read_dicom_series(tmp_path)


def test_sheared_stack_is_refused(tmp_path):
    uid, frame = generate_uid(), generate_uid()
    for k in range(3):  # origins drift in y as z increases (gantry tilt)
        write_slice(tmp_path / f"s{k}.dcm", np.zeros((4, 4)), position_lps=(0, 0.5 * k, 2.0 * k),
                    series_uid=uid, frame_uid=frame)
    with pytest.raises(ReaderError, match="gantry tilt"):
        read_dicom_series(tmp_path)


def test_two_series_need_a_uid(tmp_path):
    rng = np.random.default_rng(6)
    a, b = _stored(rng, (2, 4, 4)), _stored(rng, (3, 4, 4))
    uid_a, uid_b = "1.2.3.4.1", "1.2.3.4.2"
    write_series(tmp_path, a, origin_lps=(0, 0, 0), step_mm=2.0, series_uid=uid_a, prefix="a")
    write_series(tmp_path, b, origin_lps=(0, 0, 0), step_mm=3.0, series_uid=uid_b, prefix="b")
    with pytest.raises(ReaderError, match="holds 2 series") as info:
        read_dicom_series(tmp_path)
    message = str(info.value)
    assert uid_a in message and uid_b in message and "series_uid=" in message
    assert read_dicom_series(tmp_path, series_uid=uid_b).shape == (3, 4, 4)
    with pytest.raises(ReaderError, match="'9.9' is not in this folder"):
        read_dicom_series(tmp_path, series_uid="9.9")


def test_truncated_slice_names_the_file(tmp_path):
    paths = write_series(tmp_path, _stored(np.random.default_rng(7), (3, 16, 16)),
                         origin_lps=(0, 0, 0), step_mm=2.0)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 200])
    with pytest.raises(ReaderError, match="truncated") as info:
        read_dicom_series(tmp_path)
    assert info.value.path == str(paths[1])


def test_header_cut_short_is_an_error_not_a_skip(tmp_path):
    paths = write_series(tmp_path, _stored(np.random.default_rng(8), (2, 4, 4)),
                         origin_lps=(0, 0, 0), step_mm=2.0)
    paths[0].write_bytes(paths[0].read_bytes()[:300])
    with pytest.raises(ReaderError) as info:
        read_dicom_series(tmp_path)
    assert info.value.path == str(paths[0])
    assert "export" in str(info.value)


def test_non_dicom_files_are_skipped_with_a_warning(tmp_path, caplog):
    write_series(tmp_path, _stored(np.random.default_rng(9), (2, 4, 4)), origin_lps=(0, 0, 0),
                 step_mm=2.0)
    (tmp_path / "README.txt").write_text("exported by the PACS\n")
    write_rtstruct(tmp_path / "rs.dcm", [], frame_uid=generate_uid())
    with caplog.at_level(logging.WARNING, logger="qa.io.dicom_series"):
        volume = read_dicom_series(tmp_path)
    assert volume.shape == (2, 4, 4)
    assert "README.txt (not a DICOM file)" in caplog.text
    assert "RTSTRUCT (not an image slice)" in caplog.text


def test_folder_without_dicom_is_an_error(tmp_path):
    (tmp_path / "README.txt").write_text("nothing here\n")
    with pytest.raises(ReaderError, match=r"no DICOM image slices .*README\.txt"):
        read_dicom_series(tmp_path)


def test_missing_folder_and_file_instead_of_folder(tmp_path):
    with pytest.raises(ReaderError, match="file not found: check the path in the case table"):
        read_dicom_series(tmp_path / "absent")
    (tmp_path / "x.dcm").write_bytes(b"x")
    with pytest.raises(ReaderError, match="expected a folder"):
        read_dicom_series(tmp_path / "x.dcm")


def test_mixed_pixel_spacing_is_refused(tmp_path):
    uid, frame = generate_uid(), generate_uid()
    write_slice(tmp_path / "a.dcm", np.zeros((4, 4)), position_lps=(0, 0, 0), series_uid=uid,
                frame_uid=frame)
    write_slice(tmp_path / "b.dcm", np.zeros((4, 4)), position_lps=(0, 0, 2), series_uid=uid,
                frame_uid=frame, pixel_spacing=(1.0, 1.0))
    with pytest.raises(ReaderError, match="PixelSpacing") as info:
        read_dicom_series(tmp_path)
    assert info.value.field == "PixelSpacing"


def test_read_image_dispatches_folders(tmp_path):
    write_series(tmp_path, _stored(np.random.default_rng(10), (2, 4, 4)),
                 origin_lps=(0, 0, 0), step_mm=2.0)
    assert read_image(tmp_path).metadata["format"] == "dicom_series"


@pytest.mark.parametrize(("keyword", "values", "message"), [
    ("ConvolutionKernel", ["B30f", "B30f", "B70f"], "mix reconstruction kernels"),
    ("SliceThickness", [1.0, 1.0, 3.0], "mix slice thicknesses"),
])
def test_a_folder_mixing_two_reconstructions_is_refused(tmp_path, keyword, values, message):
    stored = np.zeros((3, 4, 5), dtype=np.int16)
    paths = write_series(tmp_path / "s", stored, origin_lps=(0, 0, 0), step_mm=1.0)
    for path, value in zip(paths, values, strict=True):
        ds = pydicom.dcmread(path)
        setattr(ds, keyword, value)
        ds.save_as(path)
    with pytest.raises(ReaderError, match=message) as info:
        read_dicom_series(tmp_path / "s")
    assert info.value.field == keyword
