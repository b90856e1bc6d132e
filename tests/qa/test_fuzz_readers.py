"""Fuzzing the readers: random bytes and randomised headers give a volume or a ReaderError.

hypothesis drives every reader of :mod:`qa.io` with (a) random bytes under each suffix,
(b) valid DICOM CT slices and RT doses whose header fields (Rows, Columns, BitsAllocated,
PixelSpacing, orientation, frames, scaling ...) are randomised, and (c) valid NIfTI and
MetaImage files whose header dims, spacing and data type are randomised. The only allowed
outcomes are a result or :class:`qa.errors.QAInputError` (no other exception type, no hang,
no huge allocation: a result from these few-kB files holds at most a few MB). Python
warnings are recorded, not raised, as in production.

Deterministic (``derandomize=True``, no example database) and bounded (``max_examples``
modest, a per-example deadline); ``QA_FUZZ_EXAMPLES`` raises the number of examples.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import tempfile
import warnings
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread

from qa.errors import QAInputError
from qa.io import (
    read_dicom_series,
    read_dose,
    read_image,
    read_mask,
    read_rtdose,
    read_rtstruct,
    read_structures,
    write_nifti,
)
from qa.volume import Volume
from tests.bad_inputs.corpus import REFERENCE_FRAME_UID, reference_volume, rtstruct_file
from tests.qa.io.dicom_factory import write_rtdose, write_series

#: Examples per test; raise it for a longer search (``QA_FUZZ_EXAMPLES=2000 pytest ...``).
EXAMPLES = int(os.environ.get("QA_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None,
                deadline=timedelta(seconds=10),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: Largest array a reader may return from the fuzzed few-kB files (bytes).
MAX_RESULT_BYTES = 16 * 2**20


def outcome(read: Callable[[], Any]) -> str:
    """Run a reader; return "ok" or "refused"; any other exception fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = read()
        except QAInputError as exc:
            assert "\n" not in str(exc), str(exc)
            return "refused"
    volumes = result.values() if isinstance(result, Mapping) else [result]  # structure sets
    for volume in volumes:
        assert isinstance(volume, Volume)
        assert volume.array.nbytes <= MAX_RESULT_BYTES, volume.shape
    return "ok"


# -- (a) random bytes -----------------------------------------------------------------------
SUFFIXES = (".nii", ".nii.gz", ".mha", ".nrrd", ".dcm", ".mhd")


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES),
       prefix=st.sampled_from([b"", b"\0" * 128 + b"DICM", struct.pack("<i", 348),
                               b"NRRD0004\n", b"ObjectType = Image\n", b"\x1f\x8b"]))
def test_random_bytes_are_refused_cleanly_by_every_reader(data, suffix, prefix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x{suffix}"
        path.write_bytes(prefix + data)
        for read in (read_image, read_mask, read_dose):
            outcome(lambda read=read: read(path))
        if suffix == ".dcm":
            outcome(lambda: read_rtdose(path))
            outcome(lambda: read_rtstruct(path, _reference()))
            outcome(lambda: read_structures(path, reference=_reference()))
        series = Path(folder) / "series"
        series.mkdir()
        (series / "slice.dcm").write_bytes(prefix + data)
        outcome(lambda: read_dicom_series(series))


# -- (b) DICOM with randomised headers ------------------------------------------------------
_INTS = st.one_of(st.integers(0, 65535), st.sampled_from([0, 1, 7, 8, 12, 16, 32, 64]))
_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([0.0, -1.0, 1e-9, 1e9]))
_SLICE_FIELDS = {
    "Rows": _INTS, "Columns": _INTS, "BitsAllocated": _INTS, "BitsStored": _INTS,
    "HighBit": _INTS, "PixelRepresentation": st.integers(0, 2),
    "SamplesPerPixel": st.integers(0, 4), "NumberOfFrames": st.integers(-2, 70000),
    "PixelSpacing": st.lists(_FLOATS, min_size=0, max_size=3),
    "ImageOrientationPatient": st.lists(_FLOATS, min_size=0, max_size=7),
    "ImagePositionPatient": st.lists(_FLOATS, min_size=0, max_size=4),
    "RescaleSlope": _FLOATS, "RescaleIntercept": _FLOATS, "SliceThickness": _FLOATS,
    "Modality": st.sampled_from(["CT", "MR", "RTDOSE", "", "OT"]),
}
_DOSE_FIELDS = {
    **_SLICE_FIELDS,
    "GridFrameOffsetVector": st.lists(_FLOATS, min_size=0, max_size=5),
    "DoseGridScaling": _FLOATS, "DoseUnits": st.sampled_from(["GY", "RELATIVE", "", "CGY"]),
    "Modality": st.sampled_from(["RTDOSE", "CT", ""]),
}


def _mutated(path: Path, changes: dict[str, Any], pixel_bytes: int | None) -> None:
    with warnings.catch_warnings():  # pydicom warns about the invalid values we plant
        warnings.simplefilter("ignore")
        _mutate(path, changes, pixel_bytes)


def _mutate(path: Path, changes: dict[str, Any], pixel_bytes: int | None) -> None:
    ds = dcmread(path)
    for keyword, value in changes.items():
        if isinstance(value, list):
            value = [float(v) if np.isfinite(v) else str(v) for v in value]
        elif isinstance(value, float) and not np.isfinite(value):
            value = str(value)
        if keyword in ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
                       "GridFrameOffsetVector", "RescaleSlope", "RescaleIntercept",
                       "SliceThickness", "DoseGridScaling"):
            value = _as_ds(value)
        setattr(ds, keyword, value)
    if pixel_bytes is not None:
        ds.PixelData = bytes(pixel_bytes)
    ds.save_as(path)


def _as_ds(value: Any) -> Any:
    """A decimal-string value pydicom will write (text for NaN/inf, 16 characters max)."""
    if isinstance(value, list):
        return [_as_ds(v) for v in value]
    if isinstance(value, str):
        return value[:16]
    return f"{value:.6g}"


@FUZZ
@given(changes=st.fixed_dictionaries({}, optional=_SLICE_FIELDS),
       pixel_bytes=st.one_of(st.none(), st.integers(0, 4096)))
def test_dicom_series_with_random_header_fields(changes, pixel_bytes):
    with tempfile.TemporaryDirectory() as folder:
        series = Path(folder) / "ct"
        paths = write_series(series, np.full((2, 6, 5), 1000, np.int16),
                             origin_lps=(0.0, 0.0, 0.0), step_mm=2.0)
        _mutated(paths[0], changes, pixel_bytes)
        outcome(lambda: read_dicom_series(series))


@FUZZ
@given(changes=st.fixed_dictionaries({}, optional=_DOSE_FIELDS),
       pixel_bytes=st.one_of(st.none(), st.integers(0, 4096)))
def test_rtdose_with_random_header_fields(changes, pixel_bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = write_rtdose(Path(folder) / "dose.dcm",
                            np.arange(3 * 4 * 5, dtype=np.uint32).reshape(3, 4, 5),
                            position_lps=(0.0, 0.0, 0.0), offsets=(0.0, 2.0, 4.0))
        _mutated(path, changes, pixel_bytes)
        outcome(lambda: read_rtdose(path))
        outcome(lambda: read_dose(path))


@functools.lru_cache(maxsize=1)
def _rtstruct_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return rtstruct_file(Path(folder), REFERENCE_FRAME_UID).read_bytes()


@functools.lru_cache(maxsize=1)
def _reference() -> Volume:
    return reference_volume()


@FUZZ
@given(cut=st.integers(0, 1400), flip=st.lists(st.integers(0, 1399), max_size=4))
def test_rtstruct_truncated_or_bit_flipped(cut, flip):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rtstruct.dcm"
        data = bytearray(_rtstruct_bytes())
        for position in flip:
            if position < len(data):
                data[position] ^= 0xFF
        path.write_bytes(bytes(data[:cut]))
        outcome(lambda: read_rtstruct(path, _reference()))


# -- (c) NIfTI and MetaImage with randomised headers ----------------------------------------
_DIM = st.integers(-3, 40000)


@FUZZ
@given(dims=st.lists(_DIM, min_size=8, max_size=8),
       pixdim=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32),
                       min_size=8, max_size=8),
       datatype=st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 2304,
                                 9999]),
       vox_offset=st.sampled_from([0.0, 352.0, 348.0, 1e9, -5.0, float("nan")]),
       compress=st.booleans())
def test_nifti_with_random_header_fields(dims, pixdim, datatype, vox_offset, compress):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.nii"
        write_nifti(Volume(np.zeros((3, 4, 5), np.float32), (2.0, 1.0, 1.0), (0, 0, 0)), path)
        header = bytearray(path.read_bytes())
        struct.pack_into("<8h", header, 40, *(max(-32768, min(32767, d)) for d in dims))
        struct.pack_into("<h", header, 70, datatype)
        struct.pack_into("<8f", header, 76, *pixdim)
        struct.pack_into("<f", header, 108, vox_offset)
        if compress:
            path.unlink()
            path = path.with_name("x.nii.gz")
            path.write_bytes(gzip.compress(bytes(header), mtime=0))
        else:
            path.write_bytes(bytes(header))
        outcome(lambda: read_image(path))
        outcome(lambda: read_mask(path))


@FUZZ
@given(size=st.lists(st.integers(-1, 200000), min_size=1, max_size=4),
       element=st.sampled_from(["MET_SHORT", "MET_FLOAT", "MET_UCHAR", "MET_DOUBLE",
                                "MET_NONE", "BOGUS"]),
       spacing=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32),
                        min_size=0, max_size=4),
       compressed=st.booleans(), payload=st.binary(max_size=512))
def test_metaimage_with_random_header_fields(size, element, spacing, compressed, payload):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.mha"
        lines = ["ObjectType = Image", f"NDims = {len(size)}",
                 f"DimSize = {' '.join(map(str, size))}", f"ElementType = {element}",
                 f"ElementSpacing = {' '.join(f'{v:g}' for v in spacing)}",
                 f"CompressedData = {compressed}", "ElementDataFile = LOCAL"]
        path.write_bytes("\n".join(lines).encode("ascii") + b"\n" + payload)
        outcome(lambda: read_image(path))
