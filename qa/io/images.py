"""Read and write research image formats (NIfTI, MetaImage, NRRD) and dispatch to DICOM.

Why SimpleITK
-------------
One library reads all three formats (``.nii``/``.nii.gz``, ``.mha``/``.mhd``, ``.nrrd``)
and hands back the geometry already in DICOM's patient convention (LPS), so the same
:class:`qa.Volume` comes out whichever format a department exports. nibabel would cover
NIfTI only and returns RAS affines that would need converting (negating x and y) before
they agree with DICOM; pynrrd would add a third code path.

Axis convention
---------------
SimpleITK lists spacing, origin and direction in ``(x, y, z)`` order and
``GetArrayFromImage`` returns the array ``(z, y, x)``. A Volume lists everything in
``(z, y, x)``: spacing and origin are reversed, and the direction matrix (column ``j`` =
unit vector of axis ``j``) is reversed in both rows and columns, ``D_zyx = D_xyz[::-1, ::-1]``.
Then ``Volume.index_to_world((k, j, i))`` equals SimpleITK's
``TransformIndexToPhysicalPoint((i, j, k))`` reversed (tested).

Data types
----------
Integer images keep their dtype (int16 HU stay int16, uint8 label maps stay uint8);
floating images come back as float32 (float64 is narrowed: 7 significant digits are ample
for HU and Gy). Masks (bool) are written as uint8 0/1, since NIfTI has no boolean type;
:func:`read_mask` turns them back into bool.

Known ITK 5 pitfalls handled here:

* ITK's NIfTI reader, asked for ``name.nii.gz`` while ``name.nii`` sits in the same
  folder, silently reads ``name.nii``. :func:`read_image` then reads the ``.nii.gz``
  through a private link in a temporary folder.
* ITK's NIfTI reader replaces NaN and ±inf voxels by 0 (fixed in ITK 6). For float NIfTI
  files :func:`read_image` puts them back from the file's bytes (:mod:`qa.io._nifti`), so
  ``metadata["non_finite_voxels"]`` is right.
* ITK's NIfTI reader silently fills the missing end of a truncated ``.nii.gz``, and any
  reader allocates whatever size a header claims. :mod:`qa.io._size_guard` reads the header
  alone first and refuses a size the file cannot hold (or above 2³¹ voxels), and checks
  that a ``.nii.gz`` decompresses to its whole payload.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the library's own documented alias)

from qa.errors import ReaderError
from qa.io import _dicom, _nifti, _size_guard
from qa.volume import Volume

__all__ = ["read_image", "read_mask", "write_nifti", "SUPPORTED_IMAGE_SUFFIXES"]

logger = logging.getLogger(__name__)

#: File suffixes read through SimpleITK, with the format name put in ``metadata["format"]``.
SUPPORTED_IMAGE_SUFFIXES: dict[str, str] = {
    ".nii": "nifti", ".nii.gz": "nifti", ".mha": "metaimage", ".mhd": "metaimage",
    ".nrrd": "nrrd",
}
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def read_image(path: str | Path, *, case_id: str | None = None) -> Volume:
    """Read an image volume, choosing the reader from the path.

    Parameters
    ----------
    path : str or Path
        A ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd`` or ``.nrrd`` file (read with
        SimpleITK); a folder (read as a DICOM CT/MR series with
        :func:`qa.io.read_dicom_series`); or a ``.dcm`` RTDOSE file (read with
        :func:`qa.io.read_rtdose`).
    case_id : str, optional
        For a DICOM series: refuse it when this case id equals the series' patient
        identifiers (:func:`qa.io.read_dicom_series`).

    Returns
    -------
    Volume
        Integer images keep their dtype, floating images are float32. ``metadata`` holds
        ``format`` (``"nifti"``, ``"metaimage"``, ``"nrrd"``, ``"dicom_series"``,
        ``"rtdose"``), ``source_path`` (the file or folder name, not the full path) and,
        for float images, ``non_finite_voxels`` (count of NaN/inf, which is not an error
        here: the checks decide). Nothing from the file header is copied for the
        SimpleITK formats (a NIfTI ``descrip`` can hold free text).

    Raises
    ------
    ReaderError
        Missing path, unsupported suffix (the message lists the supported ones), a file
        SimpleITK cannot read (truncated, corrupt, missing ``.raw`` of an ``.mhd``), a
        header claiming more voxels than the file holds or than 2³¹ (refused before
        allocating), an image that is not 3D and scalar.
    """
    path = Path(path)
    _dicom.require_exists(path)
    if path.is_dir():
        from qa.io.dicom_series import read_dicom_series

        return read_dicom_series(path, case_id=case_id)
    suffix = _suffix(path)
    if suffix == ".dcm":
        return _read_single_dicom(path)
    if suffix not in SUPPORTED_IMAGE_SUFFIXES:
        supported = ", ".join(SUPPORTED_IMAGE_SUFFIXES)
        raise ReaderError(
            f"unsupported image suffix {suffix or '(none)'!r}: use one of {supported}, a "
            f"folder holding a DICOM series, or a .dcm RTDOSE file", path=str(path))
    return _read_sitk(path, SUPPORTED_IMAGE_SUFFIXES[suffix])


def read_mask(path: str | Path, *, label: int | None = None) -> Volume:
    """Read a mask or label map as a boolean volume.

    Parameters
    ----------
    path : str or Path
        Any path :func:`read_image` accepts (normally a NIfTI/MHA/NRRD label map).
    label : int, optional
        Keep the voxels equal to ``label``; default: every non-zero voxel.

    Returns
    -------
    Volume
        bool array on the image's grid; ``metadata`` adds ``label`` and ``warnings``
        (a label absent from the image gives an empty mask and a warning, so that the
        checks can report the empty structure).

    Raises
    ------
    ReaderError
        As :func:`read_image`; also when the image holds NaN/inf or non-integer values
        (a probability map must be thresholded before it is used as a mask).
    """
    image = read_image(path)
    values = image.array
    if np.issubdtype(values.dtype, np.floating):
        finite = np.isfinite(values)
        if not finite.all():
            raise ReaderError(f"the mask holds {values.size - int(finite.sum())} NaN/inf "
                              f"voxels: a mask must hold integer labels; re-export it",
                              path=str(path))
        if np.any(values != np.round(values)):
            raise ReaderError("the mask holds non-integer values (a probability map?): "
                              "threshold it into labels before using it as a mask",
                              path=str(path))
    notes: list[str] = list(image.metadata.get("warnings", []))
    if label is None:
        mask = values != 0
    else:
        mask = values == label
        if not mask.any():
            present = np.unique(values)
            shown = ", ".join(f"{v:g}" for v in present[:10]) + (" ..." if present.size > 10
                                                                  else "")
            notes.append(f"label {label} is absent (values present: {shown}); the mask is "
                         f"empty")
            logger.warning("%s: %s", path, notes[-1])
    return image.with_array(mask, label=label, warnings=notes)


def write_nifti(volume: Volume, path: str | Path) -> None:
    """Write ``volume`` as NIfTI (``.nii`` or ``.nii.gz``) with its exact geometry.

    Parameters
    ----------
    volume : Volume
        Any volume; bool arrays are written as uint8 0/1, float16 as float32, other dtypes
        as they are. ``metadata`` is not written.
    path : str or Path
        Destination ending in ``.nii`` or ``.nii.gz`` (gzip-compressed). Its folder must
        exist.

    Notes
    -----
    NIfTI stores the origin as float32 and the direction as a float32 quaternion, so a
    round trip reproduces them to about 1e-5 mm and 1e-7; spacing, shape, values and dtype
    come back exactly.
    """
    path = Path(path)
    if _suffix(path) not in _NIFTI_SUFFIXES:
        raise ValueError(f"write_nifti needs a path ending in .nii or .nii.gz, got {path}.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist.")
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.astype(array.dtype.newbyteorder(
        "="), copy=False)), isVector=False)
    image.SetSpacing(tuple(float(s) for s in volume.spacing[::-1]))
    image.SetOrigin(tuple(float(o) for o in volume.origin[::-1]))
    image.SetDirection(tuple(float(v) for v in volume.direction_matrix[::-1, ::-1].ravel()))
    try:
        sitk.WriteImage(image, str(path), useCompression=_suffix(path) == ".nii.gz")
    except RuntimeError as exc:
        raise OSError(f"SimpleITK could not write {path}: {_sitk_message(exc)}") from exc


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _read_single_dicom(path: Path) -> Volume:
    from qa.io.rtdose import read_rtdose

    with _dicom.pydicom_warnings_logged(path):
        dataset = _dicom.open_dicom(path, what="RTDOSE")
        modality = str(dataset.get("Modality", "")).strip().upper()
    if modality == "RTDOSE":
        return read_rtdose(path)
    raise ReaderError(
        f"a single .dcm file ({modality or 'unknown modality'}) is not read as an image: give "
        f"the folder holding the whole CT/MR series, or read an RTSTRUCT with read_rtstruct",
        path=str(path), field="Modality")


def _read_sitk(path: Path, fmt: str) -> Volume:
    try:
        if _suffix(path) == ".nii.gz" and path.with_name(path.name[:-3]).exists():
            image = _read_nii_gz_beside_nii(path, fmt)
        else:
            _size_guard.check_declared_size(path, fmt)
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ReaderError(
            f"SimpleITK cannot read this {fmt} file ({_sitk_message(exc)}); it is truncated, "
            f"corrupt or incomplete (an .mhd needs its data file beside it): export it again",
            path=str(path)) from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ReaderError(
            f"expected a 3D scalar image, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel, size "
            f"{image.GetSize()}: export one 3D volume per file", path=str(path))
    array = sitk.GetArrayFromImage(image)
    if np.iscomplexobj(array):
        raise ReaderError("complex-valued images are not supported", path=str(path))
    if not np.issubdtype(array.dtype, np.integer):
        if fmt == "nifti":
            array = _nifti.restore_non_finite(path, array)
        array = array.astype(np.float32, copy=False)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[::-1, ::-1]
    metadata: dict[str, object] = {"format": fmt, "source_path": path.name}
    if np.issubdtype(array.dtype, np.floating):
        metadata["non_finite_voxels"] = _dicom.non_finite_count(array)
    try:
        return Volume(array, image.GetSpacing()[::-1], image.GetOrigin()[::-1], direction,
                      metadata)
    except ValueError as exc:
        raise ReaderError(f"the image geometry is invalid: {exc}", path=str(path)) from exc


def _read_nii_gz_beside_nii(path: Path, fmt: str) -> Any:
    """Read ``x.nii.gz`` when ``x.nii`` exists too (ITK would read ``x.nii``)."""
    logger.warning("%s: %s also exists; reading the .nii.gz through a temporary link so "
                   "that ITK does not pick the .nii", path, path.with_name(path.name[:-3]).name)
    with tempfile.TemporaryDirectory(prefix="qa-io-") as folder:
        target = Path(folder) / path.name
        try:
            os.symlink(path.resolve(), target)
        except OSError:
            shutil.copyfile(path, target)
        _size_guard.check_declared_size(target, fmt, shown_path=path)
        return sitk.ReadImage(str(target))


def _sitk_message(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
