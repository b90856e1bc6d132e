"""Specification of qa.io.read_image, read_mask and write_nifti.

Independent reference for the axis convention: SimpleITK's own
``TransformIndexToPhysicalPoint`` on the same file, with the index and point reordered.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from scipy.spatial.transform import Rotation

from qa.errors import ReaderError
from qa.io import SUPPORTED_IMAGE_SUFFIXES, read_image, read_mask, write_nifti
from qa.volume import Volume

# an oblique direction in SimpleITK's (x, y, z) convention, and its (z, y, x) counterpart
DIRECTION_XYZ = Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix()
DIRECTION_ZYX = DIRECTION_XYZ[::-1, ::-1]
SPACING_ZYX = (2.9, 1.3, 0.7)
ORIGIN_ZYX = (-78.9, 45.6, -12.3)
INDICES = [(0, 0, 0), (3, 4, 5), (1, 2, 3), (3, 0, 5)]


def _array(dtype) -> np.ndarray:
    return (np.arange(4 * 5 * 6).reshape(4, 5, 6) - 40).astype(dtype)


def _volume(dtype=np.int16) -> Volume:
    return Volume(_array(dtype), SPACING_ZYX, ORIGIN_ZYX, DIRECTION_ZYX)


def _sitk_write(array: np.ndarray, path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_ZYX[::-1])
    image.SetOrigin(ORIGIN_ZYX[::-1])
    image.SetDirection(DIRECTION_XYZ.ravel().tolist())
    sitk.WriteImage(image, str(path))


def _assert_same_points_as_sitk(volume: Volume, path, atol: float) -> None:
    image = sitk.ReadImage(str(path))
    for index in INDICES:
        expected = image.TransformIndexToPhysicalPoint(index[::-1])
        np.testing.assert_allclose(volume.index_to_world(np.array(index)), expected[::-1],
                                   atol=atol)


@pytest.mark.parametrize("suffix", [".mha", ".mhd", ".nrrd"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_read_simpleitk_formats_in_zyx_order(tmp_path, suffix, dtype):
    path = tmp_path / f"image{suffix}"
    _sitk_write(_array(dtype), path)
    volume = read_image(path)
    assert volume.array.dtype == dtype
    np.testing.assert_array_equal(volume.array, _array(dtype))
    assert volume.spacing == pytest.approx(SPACING_ZYX, abs=1e-12)
    assert volume.origin == pytest.approx(ORIGIN_ZYX, abs=1e-12)
    np.testing.assert_allclose(volume.direction_matrix, DIRECTION_ZYX, atol=1e-12)
    _assert_same_points_as_sitk(volume, path, atol=1e-9)
    assert volume.metadata["format"] == SUPPORTED_IMAGE_SUFFIXES[suffix]
    assert volume.metadata["source_path"] == path.name


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32, np.float32])
def test_nifti_round_trip(tmp_path, suffix, dtype):
    volume = _volume(dtype)
    path = tmp_path / f"out{suffix}"
    write_nifti(volume, path)
    back = read_image(path)
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, volume.array)
    # NIfTI stores the origin as float32 and the direction as a float32 quaternion
    assert back.spacing == pytest.approx(volume.spacing, abs=1e-6)
    assert back.origin == pytest.approx(volume.origin, abs=1e-4)
    np.testing.assert_allclose(back.direction_matrix, volume.direction_matrix, atol=1e-6)
    _assert_same_points_as_sitk(volume, path, atol=1e-4)
    assert back.metadata == {"format": "nifti", "source_path": path.name,
                             **({"non_finite_voxels": 0} if dtype == np.float32 else {})}


def test_nifti_gz_is_really_compressed(tmp_path):
    write_nifti(_volume(), tmp_path / "x.nii.gz")
    with gzip.open(tmp_path / "x.nii.gz") as handle:
        assert len(handle.read()) > 4 * 5 * 6 * 2


def test_bool_mask_written_as_uint8_and_read_back_by_read_mask(tmp_path):
    mask = _array(np.int16) % 3 == 0
    write_nifti(Volume(mask, SPACING_ZYX, ORIGIN_ZYX, DIRECTION_ZYX), tmp_path / "m.nii.gz")
    assert sitk.ReadImage(str(tmp_path / "m.nii.gz")).GetPixelIDTypeAsString() == \
        "8-bit unsigned integer"
    assert read_image(tmp_path / "m.nii.gz").array.dtype == np.uint8
    back = read_mask(tmp_path / "m.nii.gz")
    assert back.array.dtype == np.bool_
    np.testing.assert_array_equal(back.array, mask)


def test_float64_becomes_float32_and_non_finite_voxels_are_counted(tmp_path):
    array = _array(np.float64) / 3.0
    array[0, 0, :2] = np.nan
    array[1, 1, 1] = np.inf
    _sitk_write(array, tmp_path / "f.mha")
    volume = read_image(tmp_path / "f.mha")
    assert volume.array.dtype == np.float32
    assert volume.metadata["non_finite_voxels"] == 3
    np.testing.assert_allclose(volume.array, array.astype(np.float32))


@pytest.mark.parametrize("name", ["f.nii", "f.nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nifti_keeps_nan_and_inf(tmp_path, name, dtype):
    # SimpleITK 2.5 (ITK 5.4) alone reads all three as 0 (ITK pull request 6683)
    array = _array(dtype) / 7.0
    array[0, 0, 0], array[2, 3, 4], array[3, 4, 5] = np.nan, np.inf, -np.inf
    write_nifti(Volume(array, SPACING_ZYX, ORIGIN_ZYX, DIRECTION_ZYX), tmp_path / name)
    volume = read_image(tmp_path / name)
    assert volume.metadata["non_finite_voxels"] == 3
    np.testing.assert_array_equal(volume.array, array.astype(np.float32))


def test_identity_direction_is_none(tmp_path):
    write_nifti(Volume(np.zeros((2, 3, 4), np.int16), (1.0, 1.0, 1.0)), tmp_path / "i.nii")
    assert read_image(tmp_path / "i.nii").direction is None


def test_nii_gz_beside_nii_reads_the_gz(tmp_path, caplog):
    # ITK alone would read x.nii when asked for x.nii.gz
    write_nifti(Volume(np.full((2, 2, 2), 1, np.int16), (1, 1, 1)), tmp_path / "x.nii")
    write_nifti(Volume(np.full((2, 2, 2), 2, np.int16), (1, 1, 1)), tmp_path / "x.nii.gz")
    assert np.all(read_image(tmp_path / "x.nii.gz").array == 2)
    assert np.all(read_image(tmp_path / "x.nii").array == 1)
    assert "x.nii also exists" in caplog.text


def test_read_mask_label_and_absent_label(tmp_path):
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[0, 1, 1] = 2
    labels[2, 2:, 2:] = 5
    write_nifti(Volume(labels, (2.0, 1.0, 1.0)), tmp_path / "labels.nii.gz")
    assert read_mask(tmp_path / "labels.nii.gz").array.sum() == 5
    five = read_mask(tmp_path / "labels.nii.gz", label=5)
    assert five.array.sum() == 4 and five.metadata["label"] == 5
    absent = read_mask(tmp_path / "labels.nii.gz", label=7)
    assert not absent.array.any()
    assert "label 7 is absent (values present: 0, 2, 5)" in absent.metadata["warnings"][0]


def test_read_mask_refuses_probability_maps_and_nan(tmp_path):
    soft = np.zeros((2, 3, 3), np.float32)
    soft[0, 1, 1] = 0.37
    write_nifti(Volume(soft, (1, 1, 1)), tmp_path / "p.nii")
    with pytest.raises(ReaderError, match="non-integer values .*threshold it"):
        read_mask(tmp_path / "p.nii")
    soft[0, 1, 1] = np.nan
    write_nifti(Volume(soft, (1, 1, 1)), tmp_path / "n.nii")
    with pytest.raises(ReaderError, match="1 NaN/inf voxels"):
        read_mask(tmp_path / "n.nii")


def test_missing_file_and_unsupported_suffix(tmp_path):
    with pytest.raises(ReaderError, match="file not found: check the path in the case table, "
                                          "relative to the table's folder") as info:
        read_image(tmp_path / "ct.nii.gz")
    assert info.value.path == str(tmp_path / "ct.nii.gz")
    (tmp_path / "ct.png").write_bytes(b"\x89PNG")
    with pytest.raises(ReaderError, match=r"unsupported image suffix '\.png': use one of "
                                          r"\.nii, \.nii\.gz, \.mha, \.mhd, \.nrrd"):
        read_image(tmp_path / "ct.png")


def test_truncated_and_incomplete_files(tmp_path):
    write_nifti(_volume(), tmp_path / "t.nii.gz")
    data = (tmp_path / "t.nii.gz").read_bytes()
    (tmp_path / "t.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReaderError, match="SimpleITK cannot read this nifti file") as info:
        read_image(tmp_path / "t.nii.gz")
    assert info.value.path == str(tmp_path / "t.nii.gz")
    _sitk_write(_array(np.int16), tmp_path / "h.mhd")
    (tmp_path / "h.raw").unlink()
    with pytest.raises(ReaderError, match="an .mhd needs its data file beside it"):
        read_image(tmp_path / "h.mhd")


def test_2d_images_are_refused(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.int16)), str(tmp_path / "s.mha"))
    with pytest.raises(ReaderError, match="expected a 3D scalar image, got 2D"):
        read_image(tmp_path / "s.mha")


def test_write_nifti_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"ending in \.nii or \.nii\.gz, got .*x\.mha"):
        write_nifti(_volume(), tmp_path / "x.mha")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_nifti(_volume(), tmp_path / "missing" / "x.nii")


def test_write_nifti_is_deterministic(tmp_path):
    # dataset hashes (qa.hashing) of generated cohorts rely on identical bytes
    write_nifti(_volume(), tmp_path / "a.nii.gz")
    write_nifti(_volume(), tmp_path / "b.nii.gz")
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
