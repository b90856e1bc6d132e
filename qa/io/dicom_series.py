"""Read a CT or MR DICOM series (one file per slice) into a :class:`qa.Volume`.

Slices are grouped by SeriesInstanceUID, sorted by their position along the slice normal
(``ImagePositionPatient · (row cosine × column cosine)``, DICOM PS3.3 C.7.6.2.1.1), checked
for a uniform spacing and a common in-plane geometry, and rescaled to float32
(``stored * RescaleSlope + RescaleIntercept``, PS3.3 C.11.1.1.2; HU for CT). The volume is
indexed ``(slice, row, column)``; its direction columns are the slice normal, the column
cosine and the row cosine (in ``(z, y, x)`` order), its origin the ImagePositionPatient of
the first slice, its spacing ``(slice step, PixelSpacing[0], PixelSpacing[1])`` in mm.

pydicom reads the files (pure Python, gives every attribute and a clear error per file);
SimpleITK's GDCM series reader is used in the tests as the independent check of geometry.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import ReaderError
from qa.io import _dicom
from qa.io.deid import dicom_metadata, identity_match
from qa.volume import Volume

__all__ = ["read_dicom_series"]

logger = logging.getLogger(__name__)

#: Modalities whose files can sit in an image folder but are not slices (skipped, logged).
NON_SLICE_MODALITIES = frozenset({"RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "REG", "SR",
                                  "PR", "KO", "SEG", "RTIMAGE"})

#: Per-slice numbers averaged over the series (tube current modulation varies them).
_PER_SLICE_MEANS = {"XRayTubeCurrent": "tube_current_ma", "Exposure": "exposure_mas",
                    "CTDIvol": "ctdivol_mgy"}


def read_dicom_series(folder: str | Path, *, series_uid: str | None = None,
                      case_id: str | None = None) -> Volume:
    """Read the CT/MR slices in ``folder`` as one float32 volume.

    Parameters
    ----------
    folder : str or Path
        Folder holding the slice files (any names; sub-folders are ignored).
    series_uid : str, optional
        SeriesInstanceUID to read when the folder holds several series.
    case_id : str, optional
        The case-table id of this series. Refused when it equals the series' PatientID,
        PatientName, OtherPatientIDs or AccessionNumber (:func:`qa.io.deid.identity_match`):
        the store and the report print case ids, which must therefore be pseudonyms.

    Returns
    -------
    Volume
        float32 array ``(slice, row, column)`` in rescaled units (HU for CT), spacing and
        origin in mm (LPS), direction from ImageOrientationPatient. ``metadata`` holds only
        allow-listed, non-identifying attributes (:mod:`qa.io.deid`) from the first slice,
        with ``tube_current_ma``, ``exposure_mas`` and ``ctdivol_mgy`` averaged over the
        slices, plus ``format="dicom_series"``, ``source_path`` (folder name),
        ``n_slices``, ``non_finite_voxels`` and ``warnings`` (list of str).

    Raises
    ------
    ReaderError
        Folder missing or without DICOM slices; several series and no ``series_uid``
        (the message lists them); a truncated or corrupt slice; slices disagreeing on
        orientation, pixel spacing or size; duplicate positions or a non-uniform gap;
        a sheared stack (gantry tilt); a multi-frame (enhanced) file.

    Notes
    -----
    Files that are not DICOM (a README, a ``DICOMDIR`` is DICOM but has no image) are
    skipped with a logged warning as long as at least one slice is found. RT objects
    (RTSTRUCT, RTPLAN, RTDOSE ...) in the folder are skipped likewise. A single-slice
    series takes its slice spacing from SliceThickness, else SpacingBetweenSlices, else
    1 mm with a note in ``metadata["warnings"]``.
    """
    folder = Path(folder)
    _dicom.require_exists(folder)
    if not folder.is_dir():
        raise ReaderError("expected a folder holding one DICOM file per slice, got a file: "
                          "give the series folder in the case table", path=str(folder))
    with _dicom.pydicom_warnings_logged(folder):
        series = _scan(folder)
        files = _choose_series(series, folder, series_uid)
        if case_id is not None:  # before the pixels are stacked
            _refuse_identifying_case_id(files[0][1], case_id, folder)
        return _assemble(files, folder)


def _scan(folder: Path) -> dict[str, list[tuple[Path, Any]]]:
    """Group the image files of ``folder`` by SeriesInstanceUID."""
    series: dict[str, list[tuple[Path, Any]]] = {}
    skipped: list[str] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        dataset = _dicom.read_dataset(path, what="CT/MR slice")
        if dataset is None:
            skipped.append(path.name)
            continue
        modality = str(dataset.get("Modality", "")).upper()
        if modality in NON_SLICE_MODALITIES or "DirectoryRecordSequence" in dataset:
            logger.warning("%s: skipping %s (not an image slice)", path, modality or "DICOMDIR")
            continue
        uid = str(dataset.get("SeriesInstanceUID", "")).strip()
        if not uid:
            raise ReaderError("SeriesInstanceUID is missing: the slice cannot be assigned to "
                              "a series; re-export the series", path=str(path),
                              field="SeriesInstanceUID")
        series.setdefault(uid, []).append((path, dataset))
    if not series:
        listed = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        raise ReaderError(
            f"no DICOM image slices found in this folder (files seen: {listed or 'none'}); "
            f"check the path in the case table points at the series folder",
            path=str(folder),
        )
    for name in skipped:
        logger.warning("%s: skipping %s (not a DICOM file)", folder, name)
    return series


def _choose_series(series: dict[str, list[tuple[Path, Any]]], folder: Path,
                   series_uid: str | None) -> list[tuple[Path, Any]]:
    if series_uid is not None:
        if series_uid not in series:
            raise ReaderError(
                f"series_uid {series_uid!r} is not in this folder; it holds "
                f"{_describe(series)}", path=str(folder), field="SeriesInstanceUID")
        return series[series_uid]
    if len(series) > 1:
        raise ReaderError(
            f"the folder holds {len(series)} series: {_describe(series)}; pass series_uid= "
            f"to choose one, or put each series in its own folder",
            path=str(folder), field="SeriesInstanceUID")
    return next(iter(series.values()))


def _describe(series: dict[str, list[tuple[Path, Any]]]) -> str:
    parts = []
    for uid, files in series.items():
        first = files[0][1]
        description = str(first.get("SeriesDescription", "")).strip()
        parts.append(f"{uid} ({first.get('Modality', '?')}, {len(files)} files"
                     + (f", {description!r})" if description else ")"))
    return "; ".join(parts)


def _assemble(files: list[tuple[Path, Any]], folder: Path) -> Volume:
    """Sort, check and stack the slices of one series."""
    first_path, first = files[0]
    row, col, normal = _dicom.slice_axes(first, first_path)
    spacing_rc = _dicom.required_floats(first, "PixelSpacing", 2, first_path)
    size = (int(first.get("Rows", 0)), int(first.get("Columns", 0)))
    positions = []
    for path, dataset in files:
        _check_same_plane(dataset, path, row, col, spacing_rc, size)
        ipp = _dicom.required_floats(dataset, "ImagePositionPatient", 3, path)
        positions.append(ipp)
    positions_arr = np.asarray(positions)
    along = positions_arr @ normal
    order = np.argsort(along, kind="stable")
    files = [files[i] for i in order]
    positions_arr, along = positions_arr[order], along[order]
    notes: list[str] = []
    if len(files) == 1:
        step_mm, note = _dicom.single_slice_spacing_mm(first)
        if note:
            notes.append(note)
    else:
        step_mm = _dicom.uniform_step_mm(along, folder, field="ImagePositionPatient",
                                         what="slice")
        _check_not_sheared(positions_arr, normal, folder)
    _check_one_reconstruction(files, folder)
    slices = [_rescaled(dataset, path) for path, dataset in files]
    array = np.stack(slices).astype(np.float32, copy=False)
    metadata = dicom_metadata(files[0][1])
    for keyword, key in _PER_SLICE_MEANS.items():
        values = [_dicom.optional_float(ds, keyword) for _, ds in files]
        values = [v for v in values if v is not None]
        if values:
            metadata[key] = float(np.mean(values))
    metadata.update(format="dicom_series", source_path=folder.name, n_slices=len(files),
                    non_finite_voxels=_dicom.non_finite_count(array), warnings=notes)
    for note in notes:
        logger.warning("%s: %s", folder, note)
    try:
        return Volume(array, (step_mm, float(spacing_rc[0]), float(spacing_rc[1])),
                      tuple(positions_arr[0][::-1]), _dicom.direction_zyx(row, col, normal),
                      metadata)
    except ValueError as exc:
        raise ReaderError(f"the series geometry is invalid: {exc}", path=str(folder)) from exc


def _check_one_reconstruction(files: list[tuple[Path, Any]], folder: Path) -> None:
    """Refuse a series whose slices disagree on the kernel or the slice thickness: they are
    two reconstructions mixed in one folder, and noise or resolution measured on them would
    describe neither."""
    kernels = {str(ds.get("ConvolutionKernel", "") or "") for _, ds in files}
    if len(kernels) > 1:
        raise ReaderError(f"the slices mix reconstruction kernels ({', '.join(sorted(kernels))}"
                          "); export one reconstruction per series folder", path=str(folder),
                          field="ConvolutionKernel")
    thicknesses = {_dicom.optional_float(ds, "SliceThickness") for _, ds in files}
    thicknesses = {round(t, 3) for t in thicknesses if t is not None}
    if len(thicknesses) > 1:
        listed = ", ".join(f"{t:g}" for t in sorted(thicknesses))
        raise ReaderError(f"the slices mix slice thicknesses ({listed} mm); export one "
                          "reconstruction per series folder", path=str(folder),
                          field="SliceThickness")


def _check_same_plane(dataset: Any, path: Path, row: np.ndarray, col: np.ndarray,
                      spacing_rc: np.ndarray, size: tuple[int, int]) -> None:
    """Every slice must share orientation, pixel spacing and size with the first."""
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise ReaderError(
            "multi-frame (enhanced) image files are not supported: export the series as one "
            "file per slice (classic CT/MR Image Storage)", path=str(path),
            field="NumberOfFrames")
    if int(dataset.get("SamplesPerPixel", 1) or 1) != 1:
        raise ReaderError("colour images (SamplesPerPixel > 1) are not CT/MR slices: remove "
                          "the file from the folder", path=str(path), field="SamplesPerPixel")
    this_row, this_col, _ = _dicom.slice_axes(dataset, path)
    if (np.abs(this_row - row).max() > _dicom.COSINE_TOLERANCE
            or np.abs(this_col - col).max() > _dicom.COSINE_TOLERANCE):
        raise ReaderError("this slice's ImageOrientationPatient differs from the first "
                          "slice's: the folder mixes orientations (a localiser?); remove it",
                          path=str(path), field="ImageOrientationPatient")
    this_spacing = _dicom.required_floats(dataset, "PixelSpacing", 2, path)
    if np.abs(this_spacing - spacing_rc).max() > 1e-4:
        raise ReaderError(f"PixelSpacing {this_spacing.tolist()} differs from the first "
                          f"slice's {spacing_rc.tolist()} mm: one series must share one grid",
                          path=str(path), field="PixelSpacing")
    this_size = (int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0)))
    if this_size != size:
        raise ReaderError(f"Rows x Columns {this_size} differ from the first slice's {size}",
                          path=str(path), field="Rows")


def _check_not_sheared(positions: np.ndarray, normal: np.ndarray, folder: Path) -> None:
    """Slice origins must lie on a line along the normal (no gantry tilt / shear)."""
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    worst = float(np.linalg.norm(in_plane, axis=1).max())
    if worst > 0.01:
        raise ReaderError(
            f"the slice origins drift {worst:.3f} mm in-plane from the slice normal (gantry "
            f"tilt or a sheared stack), which a regular grid cannot represent: resample the "
            f"series to an orthogonal grid first", path=str(folder),
            field="ImagePositionPatient")


def _rescaled(dataset: Any, path: Path) -> np.ndarray:
    """Stored values → float32 with this slice's RescaleSlope / RescaleIntercept."""
    stored = _dicom.pixel_array(dataset, path, what="CT/MR slice")
    if stored.ndim != 2:
        raise ReaderError(f"expected one 2D slice per file, got pixel data of shape "
                          f"{stored.shape}", path=str(path), field="PixelData")
    slope = _dicom.optional_float(dataset, "RescaleSlope")
    intercept = _dicom.optional_float(dataset, "RescaleIntercept")
    if str(dataset.get("Modality", "")).strip().upper() == "CT" and (slope is None
                                                                     or intercept is None):
        missing = "RescaleIntercept" if intercept is None else "RescaleSlope"
        raise ReaderError(
            f"CT slice without a valid {missing} (Type 1 in the CT Image module, PS3.3 "
            f"C.8.2.1): its stored values cannot be turned into HU; export the series again "
            f"from the scanner or PACS, or check the anonymiser keeps the rescale attributes",
            path=str(path), field=missing)
    values = stored.astype(np.float64) * (1.0 if slope is None else slope)
    values += 0.0 if intercept is None else intercept
    return values.astype(np.float32)


def _refuse_identifying_case_id(dataset: Any, case_id: str, folder: Path) -> None:
    keyword = identity_match(dataset, case_id)
    if keyword is not None:
        raise ReaderError(
            f"the case id equals the series' DICOM {keyword}: ALARA-QA stores and reports "
            "case ids, so the case table must hold a pseudonym (keep the key linking "
            "pseudonyms to patients outside ALARA-QA); replace the case id",
            path=str(folder), field="case_id")
