"""Shared DICOM plumbing for the readers: opening files, required tags, slice geometry.

Private module: the public readers are in :mod:`qa.io.dicom_series`, :mod:`qa.io.rtdose`
and :mod:`qa.io.rtstruct`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import ReaderError

logger = logging.getLogger(__name__)

NOT_FOUND_MESSAGE = ("file not found: check the path in the case table, relative to the "
                     "table's folder")

#: Tolerance on direction cosines (unit length, orthogonality, equality between slices).
COSINE_TOLERANCE = 1e-4


def require_exists(path: Path) -> None:
    """Raise :class:`ReaderError` with the standard message when ``path`` does not exist."""
    if not path.exists():
        raise ReaderError(NOT_FOUND_MESSAGE, path=str(path))


@contextlib.contextmanager
def pydicom_warnings_logged(path: Path) -> Iterator[None]:
    """Turn pydicom's warnings about a file (invalid VR values ...) into log records.

    Clinical files often break small rules of the standard; pydicom warns, and the test
    suite treats warnings as errors. The readers log them (naming the file) instead.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for item in caught:
        logger.warning("%s: %s", path, item.message)


def has_dicm_prefix(path: Path) -> bool:
    """True when the file has the 128-byte preamble followed by ``DICM`` (PS3.10)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dataset(path: Path, *, what: str) -> Any | None:
    """Read a DICOM file's header (large values deferred), or ``None`` if it is not DICOM.

    Parameters
    ----------
    path : Path
        The file.
    what : str
        What the caller expects (``"CT/MR slice"``, ``"RTDOSE"`` ...), for messages.

    Returns
    -------
    pydicom.Dataset or None
        ``None`` when the file is not DICOM at all (no ``DICM`` prefix and no SOP Class UID
        when read without it). Files without the preamble that still parse as DICOM with a
        SOP Class UID (older exports, pydicom's own ``rtstruct.dcm``) are accepted.

    Raises
    ------
    ReaderError
        When the file has the DICOM prefix but cannot be parsed (truncated or corrupt).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    require_exists(path)
    try:
        return _parsed(pydicom.dcmread(path, force=False, defer_size="64 KB"))
    except InvalidDicomError:
        pass
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise ReaderError(
            f"cannot parse this DICOM file ({type(exc).__name__}: {_one_line(exc)}); it is "
            f"truncated or corrupt: export the {what} again from the source system",
            path=str(path),
        ) from exc
    if has_dicm_prefix(path):
        raise ReaderError(f"the DICOM header cannot be parsed: export the {what} again",
                          path=str(path))
    try:
        dataset = pydicom.dcmread(path, force=True, defer_size="64 KB")
        if "SOPClassUID" not in dataset or not str(dataset.get("SOPClassUID", "")).strip():
            return None
    except Exception:
        return None
    try:
        return _parsed(dataset)
    except Exception as exc:
        raise ReaderError(
            f"cannot parse this DICOM file ({type(exc).__name__}: {_one_line(exc)}); it is "
            f"truncated or corrupt: export the {what} again from the source system",
            path=str(path)) from exc


def _parsed(dataset: Any) -> Any:
    """``dataset`` with every element converted now (pixel data excepted).

    pydicom converts raw elements (and sequence items) lazily, on first access: a truncated
    or corrupt file then raises ``OSError``, ``NotImplementedError`` ... deep inside a reader.
    Converting everything here turns those into one :class:`ReaderError` naming the file.
    """
    for tag in list(dataset.keys()):
        if tag == 0x7FE00010:  # PixelData: decoded (and checked) by pixel_array()
            continue
        element = dataset[tag]
        if element.VR == "SQ":
            for item in element.value:
                _parsed(item)
    return dataset


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def open_dicom(path: Path, *, what: str) -> Any:
    """Like :func:`read_dataset` but a non-DICOM file is an error too."""
    dataset = read_dataset(path, what=what)
    if dataset is None:
        raise ReaderError(
            f"not a DICOM file (no 'DICM' prefix and no SOP Class UID); expected an {what}: "
            f"check the path in the case table",
            path=str(path),
        )
    return dataset


def pixel_array(dataset: Any, path: Path, *, what: str) -> np.ndarray:
    """The stored pixel values, with missing or truncated pixel data turned into ReaderError."""
    if "PixelData" not in dataset:
        raise ReaderError(
            f"no PixelData: the file is truncated or is not an image ({what} expected); "
            f"export it again or remove it from the folder",
            path=str(path), field="PixelData",
        )
    try:
        return np.asarray(dataset.pixel_array)
    except Exception as exc:
        raise ReaderError(
            f"cannot decode the pixel data ({type(exc).__name__}: {_one_line(exc)}); the file is "
            f"truncated, corrupt, or compressed with a codec that is not installed "
            f"(install pylibjpeg or decompress it, e.g. with gdcmconv --raw)",
            path=str(path), field="PixelData",
        ) from exc


def required_floats(dataset: Any, keyword: str, count: int, path: Path) -> np.ndarray:
    """A numeric multi-valued attribute as a float array of ``count`` values, or ReaderError."""
    value = dataset.get(keyword)
    try:
        values = np.asarray([float(v) for v in (value if is_multi(value) else [value])])
    except (TypeError, ValueError):
        values = np.asarray([])
    if value is None or values.size != count or not np.all(np.isfinite(values)):
        raise ReaderError(
            f"{keyword} is missing or malformed (expected {count} numbers, got {value!r}); "
            f"the file lacks the geometry this reader needs: re-export it",
            path=str(path), field=keyword,
        )
    return values


def float_list(dataset: Any, keyword: str, path: Path) -> np.ndarray:
    """A numeric attribute of any multiplicity as a 1D float array, or ReaderError."""
    value = dataset.get(keyword)
    try:
        values = np.asarray([float(v) for v in (value if is_multi(value) else [value])])
    except (TypeError, ValueError):
        values = np.asarray([np.nan])
    if value is None or values.size == 0 or not np.all(np.isfinite(values)):
        raise ReaderError(f"{keyword} is missing or not a list of numbers ({value!r}): "
                          f"re-export the file", path=str(path), field=keyword)
    return values


def optional_float(dataset: Any, keyword: str) -> float | None:
    """A single numeric attribute as float, ``None`` when absent, empty or not a number."""
    value = dataset.get(keyword)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def slice_axes(dataset: Any, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row cosine, column cosine and slice normal (LPS, ``(x, y, z)`` order).

    The row cosine is the direction of increasing column index, the column cosine that of
    increasing row index (DICOM PS3.3 C.7.6.2.1.1); the normal is their cross product.
    """
    iop = required_floats(dataset, "ImageOrientationPatient", 6, path)
    row, col = iop[:3], iop[3:]
    if (abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3
            or abs(float(row @ col)) > 1e-3):
        raise ReaderError(
            f"ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors: "
            f"the file is corrupt; re-export it",
            path=str(path), field="ImageOrientationPatient",
        )
    row = row / np.linalg.norm(row)
    col = col / np.linalg.norm(col)
    return row, col, np.cross(row, col)


def direction_zyx(row: np.ndarray, col: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Volume direction matrix for arrays stacked ``(slice, row, column)``.

    Column ``j`` is the unit vector of array axis ``j`` written in ``(z, y, x)`` order:
    axis 0 (slices) runs along ``normal``, axis 1 (rows) along the column cosine, axis 2
    (columns) along the row cosine.
    """
    return np.column_stack([normal[::-1], col[::-1], row[::-1]])


def single_slice_spacing_mm(dataset: Any) -> tuple[float, str | None]:
    """Slice spacing for a one-slice volume: SliceThickness, else SpacingBetweenSlices, else 1.

    Returns the spacing in mm and a note (``None`` unless the 1 mm fallback was used).
    """
    for keyword in ("SliceThickness", "SpacingBetweenSlices"):
        value = optional_float(dataset, keyword)
        if value is not None and value > 0:
            return value, None
    return 1.0, ("single slice without SliceThickness or SpacingBetweenSlices: the slice "
                 "spacing was set to 1 mm (volumes in mm3 are then per mm of thickness)")


def uniform_step_mm(positions_mm: np.ndarray, path: Path, *, field: str,
                    what: str) -> float:
    """Check that sorted ``positions_mm`` are evenly spaced; return the step in mm.

    Steps must agree with their median within 1 % of it or 0.01 mm, whichever is larger.
    A zero step means two slices at the same position.
    """
    steps = np.diff(positions_mm)
    median = float(np.median(steps))
    for i, step in enumerate(steps):
        if step <= 1e-6:
            raise ReaderError(
                f"two {what}s are at the same position {positions_mm[i]:.3f} mm along the "
                f"slice normal: the folder mixes acquisitions or holds duplicates; keep one "
                f"copy of each slice",
                path=str(path), field=field,
            )
    tolerance = max(0.01 * median, 0.01)
    bad = np.flatnonzero(np.abs(steps - median) > tolerance)
    if bad.size:
        i = int(bad[0])
        raise ReaderError(
            f"non-uniform slice spacing: gap of {steps[i]:.3f} mm between the {what}s at "
            f"{positions_mm[i]:.3f} and {positions_mm[i + 1]:.3f} mm along the slice normal "
            f"(the other gaps are {median:.3f} mm); a slice is missing or the series mixes "
            f"spacings: export the complete series with one spacing",
            path=str(path), field=field,
        )
    return median


def non_finite_count(array: np.ndarray) -> int:
    """Number of NaN / inf values in a float array (0 for integer arrays)."""
    if not np.issubdtype(array.dtype, np.floating):
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def is_multi(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"
