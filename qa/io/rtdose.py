"""Read a DICOM RT Dose file into a :class:`qa.Volume` of absolute dose in Gy.

Dose = stored value × DoseGridScaling (DICOM PS3.3 C.8.8.3, "RT Dose Module"); only
DoseUnits ``GY`` is accepted, since relative dose cannot be compared in Gy.

Frame positions follow GridFrameOffsetVector (3004,000C), PS3.3 C.8.8.3.2, which allows
two interpretations:

* relative: the first offset is 0 and offsets are distances from ImagePositionPatient
  along the slice normal;
* absolute: the first offset equals ImagePositionPatient z, and offsets are the frames'
  z coordinates (only allowed for axial orientation ``[1, 0, 0, 0, 1, 0]``).

In both, frame ``k`` sits at ``offset[k] - offset[0]`` mm from ImagePositionPatient along
the normal. Any other first offset is ambiguous and refused. Frames are reordered so that
the slice axis runs along +normal (descending offsets are flipped).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import ReaderError
from qa.io import _dicom
from qa.io.deid import dicom_metadata
from qa.volume import Volume

__all__ = ["read_rtdose", "read_dose", "check_dose_values"]

logger = logging.getLogger(__name__)

_AXIAL = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


def read_rtdose(path: str | Path) -> Volume:
    """Read an RTDOSE file as a float32 dose volume in Gy.

    Parameters
    ----------
    path : str or Path
        The RT Dose file.

    Returns
    -------
    Volume
        float32 dose in Gy, ``(frame, row, column)``, spacing/origin in mm (LPS), direction
        from ImageOrientationPatient. ``metadata``: allow-listed attributes
        (``dose_units``, ``dose_type``, ``dose_summation_type``,
        ``frame_of_reference_uid``, ``modality`` ...), ``format="rtdose"``,
        ``source_path`` (file name), ``grid_frame_offset_convention``
        (``"relative"``, ``"absolute"`` or ``"single_frame"``), ``non_finite_voxels`` and
        ``warnings``.

    Raises
    ------
    ReaderError
        Missing, non-DICOM or truncated file; Modality not RTDOSE; DoseUnits not GY
        (RELATIVE is refused with its own message); DoseGridScaling missing (never taken
        as 1); GridFrameOffsetVector missing, of the wrong length, ambiguous or
        non-uniform.
    """
    path = Path(path)
    with _dicom.pydicom_warnings_logged(path):
        dataset = _dicom.open_dicom(path, what="RTDOSE")
        _check_dose_header(dataset, path)
        scaling = _dicom.optional_float(dataset, "DoseGridScaling")
        if scaling is None or scaling <= 0:
            raise ReaderError(
                f"DoseGridScaling is missing or not a positive number "
                f"({dataset.get('DoseGridScaling')!r}); without it the stored values are not "
                f"doses. Export the dose again from the planning system",
                path=str(path), field="DoseGridScaling")
        stored = _dicom.pixel_array(dataset, path, what="RTDOSE")
        if stored.ndim == 2:
            stored = stored[np.newaxis]
        if stored.ndim != 3:
            raise ReaderError(f"expected dose frames (frames, rows, columns), got shape "
                              f"{stored.shape}", path=str(path), field="PixelData")
        row, col, normal = _dicom.slice_axes(dataset, path)
        ipp = _dicom.required_floats(dataset, "ImagePositionPatient", 3, path)
        spacing_rc = _dicom.required_floats(dataset, "PixelSpacing", 2, path)
        step_mm, order, convention, notes = _frame_layout(dataset, path, stored.shape[0])
        dose_gy = (stored[order].astype(np.float64) * scaling).astype(np.float32)
        check_dose_values(dose_gy, path)
        first_offset_mm = _first_frame_offset(dataset, order, convention)
        origin_lps = ipp + first_offset_mm * normal
        metadata = dicom_metadata(dataset)
        metadata.update(format="rtdose", source_path=path.name,
                        grid_frame_offset_convention=convention,
                        non_finite_voxels=_dicom.non_finite_count(dose_gy), warnings=notes)
    for note in notes:
        logger.warning("%s: %s", path, note)
    try:
        return Volume(dose_gy, (step_mm, float(spacing_rc[0]), float(spacing_rc[1])),
                      tuple(origin_lps[::-1]), _dicom.direction_zyx(row, col, normal), metadata)
    except ValueError as exc:
        raise ReaderError(f"the dose grid geometry is invalid: {exc}", path=str(path)) from exc


def read_dose(path: str | Path) -> Volume:
    """Read a dose in Gy from an RTDOSE ``.dcm`` or a NIfTI / MetaImage / NRRD file.

    Parameters
    ----------
    path : str or Path
        An RTDOSE file (:func:`read_rtdose`) or any file :func:`qa.io.read_image` reads,
        holding absolute dose in Gy.

    Returns
    -------
    Volume
        float32 dose in Gy.

    Raises
    ------
    ReaderError
        As the readers; also when a voxel is NaN/inf or negative (:func:`check_dose_values`).
    """
    from qa.io.images import read_image

    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return read_rtdose(path)
    volume = read_image(path)
    array = volume.array.astype(np.float32, copy=False)
    check_dose_values(array, path)
    return volume.with_array(array)


def check_dose_values(dose_gy: np.ndarray, path: str | Path) -> None:
    """Refuse a dose grid holding NaN/inf or negative values (field ``PixelData``).

    A physical dose is finite and non-negative; such values come from a corrupt export, a
    signed difference map given as a dose, or a wrong scaling, and would make gamma and DVH
    numbers meaningless rather than merely bad.
    """
    finite = np.isfinite(dose_gy)
    if not finite.all():
        raise ReaderError(f"the dose holds {dose_gy.size - int(finite.sum())} NaN/inf voxels: "
                          f"export the dose again from the planning system",
                          path=str(path), field="PixelData")
    if dose_gy.size and float(dose_gy.min()) < 0:
        negative = int(np.count_nonzero(dose_gy < 0))
        raise ReaderError(f"the dose holds {negative} negative voxels (minimum "
                          f"{float(dose_gy.min()):.4g} Gy): a dose cannot be negative (a "
                          f"difference map or a wrong DoseGridScaling?); export the absolute "
                          f"dose in Gy", path=str(path), field="PixelData")


def _check_dose_header(dataset: Any, path: Path) -> None:
    modality = str(dataset.get("Modality", "")).strip().upper()
    if modality != "RTDOSE":
        raise ReaderError(f"expected an RTDOSE file, this one has Modality {modality or '?'}: "
                          f"check which file the case table names for the dose",
                          path=str(path), field="Modality")
    units = str(dataset.get("DoseUnits", "")).strip().upper()
    if units == "RELATIVE":
        raise ReaderError(
            "DoseUnits is RELATIVE: relative dose cannot be compared in Gy; export the "
            "absolute dose (DoseUnits GY) from the planning system",
            path=str(path), field="DoseUnits")
    if units != "GY":
        raise ReaderError(f"DoseUnits is {units or 'missing'}; only GY is supported: export "
                          f"the absolute dose in Gy", path=str(path), field="DoseUnits")


def _frame_layout(dataset: Any, path: Path,
                  n_frames: int) -> tuple[float, np.ndarray, str, list[str]]:
    """Slice step (mm), frame order (ascending along the normal), convention and notes."""
    if n_frames == 1:
        step_mm, note = _dicom.single_slice_spacing_mm(dataset)
        return step_mm, np.arange(1), "single_frame", [note] if note else []
    offsets = _offsets(dataset, path, n_frames)
    ipp_z = float(_dicom.required_floats(dataset, "ImagePositionPatient", 3, path)[2])
    if abs(offsets[0]) <= 1e-3:
        convention = "relative"
    elif abs(offsets[0] - ipp_z) <= 1e-3:
        iop = _dicom.required_floats(dataset, "ImageOrientationPatient", 6, path)
        if np.abs(iop - _AXIAL).max() > _dicom.COSINE_TOLERANCE:
            raise ReaderError(
                "GridFrameOffsetVector uses absolute z positions, which DICOM allows only for "
                "axial dose grids, but ImageOrientationPatient is not axial: re-export the "
                "dose with relative offsets", path=str(path), field="GridFrameOffsetVector")
        convention = "absolute"
    else:
        raise ReaderError(
            f"GridFrameOffsetVector starts at {offsets[0]:g} mm, neither 0 (relative offsets) "
            f"nor ImagePositionPatient z = {ipp_z:g} mm (absolute positions): the frame "
            f"positions are ambiguous; re-export the dose",
            path=str(path), field="GridFrameOffsetVector")
    order = np.argsort(offsets, kind="stable")
    step_mm = _dicom.uniform_step_mm(offsets[order], path, field="GridFrameOffsetVector",
                                     what="dose frame")
    return step_mm, order, convention, []


def _offsets(dataset: Any, path: Path, n_frames: int) -> np.ndarray:
    value = dataset.get("GridFrameOffsetVector")
    if value is None:
        raise ReaderError("GridFrameOffsetVector is missing for a multi-frame dose: the frame "
                          "positions are unknown; re-export the dose", path=str(path),
                          field="GridFrameOffsetVector")
    offsets = _dicom.float_list(dataset, "GridFrameOffsetVector", path)
    if offsets.size != n_frames:
        raise ReaderError(f"GridFrameOffsetVector has {offsets.size} values for {n_frames} "
                          f"frames: the file is inconsistent; re-export the dose",
                          path=str(path), field="GridFrameOffsetVector")
    return offsets


def _first_frame_offset(dataset: Any, order: np.ndarray, convention: str) -> float:
    """Distance (mm, along the normal) from ImagePositionPatient to the first sorted frame."""
    if convention == "single_frame":
        return 0.0
    offsets = np.asarray([float(v) for v in dataset.GridFrameOffsetVector])
    return float(offsets[order[0]] - offsets[0])
