"""Bad files for every reader: images, DICOM series, doses, masks and RT structure sets.

:data:`READER_INPUTS` lists them; each builder writes one bad file or folder (a few kB)
under the folder it is given.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.uid import generate_uid

from qa.errors import QAInputError
from qa.io import write_nifti
from qa.volume import Volume
from tests.bad_inputs.cohort import (
    ORIGIN_MM,
    REFERENCE_FRAME_UID,
    SHAPE,
    SPACING_MM,
    BadInput,
    good_ct,
    good_dose,
)
from tests.qa.io.dicom_factory import write_rtdose, write_rtstruct, write_series, write_slice


# -- image files ----------------------------------------------------------------------------
def _nifti(folder: Path, name: str, array: np.ndarray) -> Path:
    path = folder / name
    write_nifti(Volume(array, SPACING_MM, ORIGIN_MM), path)
    return path


def _truncated_nii(folder: Path) -> Path:
    path = _nifti(folder, "ct.nii", good_ct(1).array)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_nii_gz(folder: Path) -> Path:
    path = _nifti(folder, "ct.nii.gz", good_ct(1).array)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _text_as_nifti(folder: Path) -> Path:
    path = folder / "ct.nii.gz"
    path.write_text("patient export failed, see log\n", encoding="utf-8")
    return path


def _empty_file(folder: Path) -> Path:
    path = folder / "ct.nii"
    path.write_bytes(b"")
    return path


def _png_suffix(folder: Path) -> Path:
    path = folder / "ct.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return path


def _four_d(folder: Path) -> Path:
    import SimpleITK as sitk  # noqa: N813

    image = sitk.GetImageFromArray(np.zeros((2, *SHAPE), dtype=np.int16))
    path = folder / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def _nifti_header_dims(folder: Path, dims: tuple[int, int, int]) -> Path:
    """A small int16 NIfTI-1 whose header then claims ``dims`` voxels."""
    path = _nifti(folder, "ct.nii", good_ct(2).array.astype(np.int16))
    data = bytearray(path.read_bytes())
    struct.pack_into("<8h", data, 40, 3, *dims, 1, 1, 1, 1)
    path.write_bytes(bytes(data))
    return path


def _gigantic_nifti(folder: Path) -> Path:
    return _nifti_header_dims(folder, (30000, 30000, 30000))


def _nifti_larger_than_file(folder: Path) -> Path:
    return _nifti_header_dims(folder, (1000, 1000, 100))  # 1e8 voxels, under the cap


def _gigantic_gz(folder: Path) -> Path:
    raw = _nifti_header_dims(folder, (2000, 2000, 300))  # 1.2e9 voxels, 2.4 GB, under the cap
    path = folder / "ct.nii.gz"
    path.write_bytes(gzip.compress(raw.read_bytes(), mtime=0))
    raw.unlink()
    return path


def _gigantic_mha(folder: Path) -> Path:
    path = folder / "ct.mha"
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\n"
              "ElementType = MET_SHORT\nElementSpacing = 1 1 1\nElementByteOrderMSB = False\n"
              "ElementDataFile = LOCAL\n")
    path.write_bytes(header.encode("ascii") + bytes(64))
    return path


def _mhd_without_raw(folder: Path) -> Path:
    path = folder / "ct.mhd"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 10 8 6\nElementType = MET_SHORT\n"
                    "ElementSpacing = 2 2 3\nElementDataFile = ct.raw\n", encoding="ascii")
    return path


def _single_ct_dcm(folder: Path) -> Path:
    return write_slice(folder / "ct.dcm", np.zeros(SHAPE[1:], np.int16), position_lps=(0, 0, 0),
                       series_uid="1.2.3.4", frame_uid="1.2.3.5")


# -- DICOM series ---------------------------------------------------------------------------
def _series(folder: Path, **kwargs: Any) -> Path:
    stored = np.full((3, *SHAPE[1:]), 1024, dtype=np.int16)
    target = folder / "ct_dicom"
    options: dict[str, Any] = {"origin_lps": (-10.0, -8.0, -9.0), "step_mm": 3.0}
    options.update(kwargs)
    write_series(target, stored, **options)
    return target


def _series_only_text(folder: Path) -> Path:
    target = folder / "ct_dicom"
    target.mkdir()
    (target / "README.txt").write_text("series to follow\n", encoding="utf-8")
    return target


def _series_truncated_slice(folder: Path) -> Path:
    target = _series(folder)
    victim = sorted(target.iterdir())[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 60])
    return target


def _series_mixed(folder: Path) -> Path:
    target = _series(folder, series_uid="1.2.826.0.1.3680043.8.498.1")
    write_series(target, np.zeros((2, *SHAPE[1:]), np.int16), origin_lps=(0.0, 0.0, 40.0),
                 step_mm=3.0, series_uid="1.2.826.0.1.3680043.8.498.2", prefix="other")
    return target


def _series_non_orthogonal(folder: Path) -> Path:
    return _series(folder, orientation=(1.0, 0.0, 0.0, 0.6, 0.6, 0.0))


def _series_sheared(folder: Path) -> Path:
    target = _series(folder)
    for number, path in enumerate(sorted(target.iterdir())):
        ds = dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 1.5 * number, z]  # gantry tilt: y drifts with z
        ds.save_as(path)
    return target


def _series_localiser(folder: Path) -> Path:
    target = _series(folder)
    write_slice(target / "zz_localiser.dcm", np.zeros(SHAPE[1:], np.int16),
                position_lps=(0.0, 0.0, 0.0), orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
                series_uid=str(dcmread(sorted(target.iterdir())[0]).SeriesInstanceUID),
                frame_uid="1.2.3")
    return target


def _series_mr(folder: Path) -> Path:
    return _series(folder, modality="MR")


def _series_no_rescale(folder: Path) -> Path:
    """Stored values (HU + 1024) without RescaleSlope / RescaleIntercept."""
    target = _series(folder)
    for path in target.iterdir():
        ds = dcmread(path)
        del ds.RescaleSlope, ds.RescaleIntercept
        ds.save_as(path)
    return target


def _series_missing_slice(folder: Path) -> Path:
    target = _series(folder)
    stored = np.zeros((4, *SHAPE[1:]), np.int16)
    shutil.rmtree(target)
    write_series(target, stored, origin_lps=(-10.0, -8.0, -9.0), step_mm=3.0)
    sorted(target.iterdir())[2].unlink()
    return target


def _series_duplicate(folder: Path) -> Path:
    target = _series(folder)
    first = sorted(target.iterdir())[0]
    ds = dcmread(first)
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(target / "copy.dcm")
    return target


def _series_no_pixel_spacing(folder: Path) -> Path:
    target = _series(folder)
    for path in target.iterdir():
        ds = dcmread(path)
        del ds.PixelSpacing
        ds.save_as(path)
    return target


# -- doses ----------------------------------------------------------------------------------
def _rtdose(folder: Path, **kwargs: Any) -> Path:
    stored = np.arange(3 * 4 * 5, dtype=np.uint32).reshape(3, 4, 5) * 100
    options: dict[str, Any] = {"position_lps": (-10.0, -8.0, -9.0), "offsets": (0.0, 3.0, 6.0)}
    options.update(kwargs)
    return write_rtdose(folder / "dose.dcm", stored, **options)


def _rtdose_negative(folder: Path) -> Path:
    path = _rtdose(folder)
    ds = dcmread(path)
    values = np.arange(3 * 4 * 5, dtype=np.int32).reshape(3, 4, 5) * 100 - 500
    ds.PixelRepresentation = 1
    ds.DoseType = "PHYSICAL"
    ds.PixelData = values.tobytes()
    ds.save_as(path)
    return path


def _rtdose_truncated(folder: Path) -> Path:
    path = _rtdose(folder)
    ds = dcmread(path)
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(path)
    return path


def _dose_nifti(folder: Path, value: float) -> Path:
    dose = good_dose().array.copy()
    dose[2, 3, 4] = value
    return _nifti(folder, "dose.nii.gz", dose)


def rtstruct_file(folder: Path, roi_frame_uid: str) -> Path:
    from tests.qa.io.dicom_factory import square_lps

    return write_rtstruct(folder / "rtstruct.dcm", [{
        "number": 1, "name": "Bladder", "frame_uid": roi_frame_uid,
        "contours": [("CLOSED_PLANAR", square_lps(-3.0, (0.0, 0.0), 4.0, 4.0))]}],
        frame_uid=roi_frame_uid)


def _truncate(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


# -- masks ----------------------------------------------------------------------------------
def _mask_with(folder: Path, value: float) -> Path:
    mask = (good_ct(0).array > -500).astype(np.float32)
    mask[2, 3, 4] = value
    return _nifti(folder, "body.nii.gz", mask)


def _empty_mask(folder: Path) -> Path:
    return _nifti(folder, "body.nii.gz", np.zeros(SHAPE, dtype=np.uint8))


READER_INPUTS: tuple[BadInput, ...] = (
    BadInput("nifti-truncated", "ct", _truncated_nii, "dim", "file can hold at most"),
    BadInput("nifti-gz-truncated", "ct", _truncated_nii_gz, None, "truncated"),
    BadInput("text-named-nii-gz", "ct", _text_as_nifti, None, "cannot read"),
    BadInput("empty-file", "ct", _empty_file, None, "cannot read"),
    BadInput("unsupported-suffix", "ct", _png_suffix, None, "unsupported image suffix"),
    BadInput("nifti-4d", "sct", _four_d, None, "expected a 3D scalar image"),
    BadInput("header-30000-cubed-nifti", "ct", _gigantic_nifti, "dim", "more than"),
    BadInput("header-1e8-voxels-tiny-file", "ct", _nifti_larger_than_file, "dim",
             "file can hold at most"),
    BadInput("header-1.2e9-voxels-gz", "ct", _gigantic_gz, "dim", "file can hold at most"),
    BadInput("header-100000-cubed-mha", "sct", _gigantic_mha, "DimSize", "more than"),
    BadInput("mhd-without-raw", "sct", _mhd_without_raw, None, "data file"),
    BadInput("single-ct-dcm-as-image", "ct", _single_ct_dcm, "Modality", "not read as an image"),
    BadInput("series-only-non-dicom", "ct", _series_only_text, None, "no DICOM image slices"),
    BadInput("series-truncated-slice", "ct", _series_truncated_slice, "PixelData", "truncated"),
    BadInput("series-mixed", "ct", _series_mixed, "SeriesInstanceUID", "holds 2 series"),
    BadInput("series-oblique-non-orthogonal", "ct", _series_non_orthogonal,
             "ImageOrientationPatient", "not two orthogonal unit vectors"),
    BadInput("series-gantry-tilt", "ct", _series_sheared, "ImagePositionPatient",
             "gantry tilt"),
    BadInput("series-with-localiser", "ct", _series_localiser, "ImageOrientationPatient",
             "mixes orientations"),
    BadInput("series-mr-in-the-ct-column", "ct", _series_mr, "Modality",
             "Modality is MR but the protocol declares roles.ct.modality: CT",
             error=QAInputError, reader_raises=False),
    BadInput("series-hu-without-rescale", "ct", _series_no_rescale, "RescaleIntercept",
             "cannot be turned into HU"),
    BadInput("series-missing-slice", "ct", _series_missing_slice, "ImagePositionPatient",
             "non-uniform slice spacing"),
    BadInput("series-duplicate-slice", "ct", _series_duplicate, "ImagePositionPatient",
             "same position"),
    BadInput("series-no-pixel-spacing", "ct", _series_no_pixel_spacing, "PixelSpacing",
             "missing or malformed"),
    BadInput("rtdose-without-scaling", "dose_ref", lambda f: _rtdose(f, scaling=None),
             "DoseGridScaling", "missing"),
    BadInput("rtdose-relative", "dose_ref", lambda f: _rtdose(f, units="RELATIVE"),
             "DoseUnits", "RELATIVE"),
    BadInput("rtdose-wrong-modality", "dose_ref", lambda f: _rtdose(f, modality="CT"),
             "Modality", "expected an RTDOSE"),
    BadInput("rtdose-offsets-wrong-length", "dose_ref",
             lambda f: _rtdose(f, offsets=(0.0, 3.0)), "GridFrameOffsetVector", "2 values"),
    BadInput("rtdose-oblique-with-absolute-offsets", "dose_ref",
             lambda f: _rtdose(f, orientation=(0.8, 0.6, 0.0, -0.6, 0.8, 0.0),
                               offsets=(-9.0, -6.0, -3.0)),
             "GridFrameOffsetVector", "not axial"),
    BadInput("rtdose-negative", "dose_ref", _rtdose_negative, "PixelData", "negative"),
    BadInput("rtdose-truncated-pixels", "dose_ref", _rtdose_truncated, "PixelData",
             "pixel data"),
    BadInput("dose-nifti-nan", "dose_ref", lambda f: _dose_nifti(f, np.nan), "PixelData",
             "NaN/inf"),
    BadInput("dose-nifti-inf", "dose_ref", lambda f: _dose_nifti(f, np.inf), "PixelData",
             "NaN/inf"),
    BadInput("dose-nifti-negative", "dose_ref", lambda f: _dose_nifti(f, -0.5), "PixelData",
             "negative"),
    BadInput("mask-nan", "body", lambda f: _mask_with(f, np.nan), None, "NaN/inf"),
    BadInput("mask-probability", "body", lambda f: _mask_with(f, 0.4), None, "non-integer"),
    BadInput("mask-empty", "body", _empty_mask, None, "empty", error=QAInputError,
             reader_raises=False),
    BadInput("rtstruct-other-frame", "rtstruct",
             lambda f: rtstruct_file(f, "1.2.826.0.1.3680043.8.498.999"),
             "ReferencedFrameOfReferenceUID", "not in the same patient coordinates"),
    BadInput("rtstruct-given-a-dose", "rtstruct", lambda f: _rtdose(f), "Modality",
             "expected an RTSTRUCT"),
    BadInput("rtstruct-truncated", "rtstruct",
             lambda f: _truncate(rtstruct_file(f, REFERENCE_FRAME_UID), 700), None, "truncated"),
)
