"""Build small synthetic DICOM files (CT/MR slices, RTDOSE, RTSTRUCT) with pydicom for tests.

Every file carries the identifying attributes in :data:`IDENTIFYING` so that the tests can
check that none of them reaches a Volume's metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RTDoseStorage,
    RTStructureSetStorage,
    generate_uid,
)

#: Identifying values planted in every synthetic file (keyword -> value).
IDENTIFYING: dict[str, str] = {
    "PatientName": "Doe^Jane", "PatientID": "SECRET-ID-123", "PatientBirthDate": "19700101",
    "PatientSex": "F", "PatientAge": "054Y", "OtherPatientIDs": "OTHER-ID-777",
    "InstitutionName": "Hopital Tres Secret", "ReferringPhysicianName": "Refer^Doctor",
    "AccessionNumber": "ACC-999", "StudyDate": "20240102", "SeriesDate": "20240103",
    "AcquisitionDate": "20240104", "StudyTime": "101010", "OperatorsName": "Oper^Ator",
    "StationName": "CT-SECRET-ROOM", "StudyID": "STUDY-SECRET",
}

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _base(sop_class: str, modality: str, *, series_uid: str, frame_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.Manufacturer = "ACME Medical"
    for keyword, value in IDENTIFYING.items():
        setattr(ds, keyword, value)
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def write_slice(path: Path, stored: np.ndarray, *, position_lps: Sequence[float],
                series_uid: str, frame_uid: str, orientation: Sequence[float] = AXIAL,
                pixel_spacing: Sequence[float] = (0.8, 0.6), slope: float | None = 1.0,
                intercept: float | None = -1024.0, modality: str = "CT",
                slice_thickness: float | None = 2.5, instance_number: int = 1,
                extra: dict[str, Any] | None = None) -> Path:
    """One CT/MR slice; ``stored`` is a 2D int16 array (rows, columns)."""
    sop = CTImageStorage if modality == "CT" else MRImageStorage
    ds = _base(sop, modality, series_uid=series_uid, frame_uid=frame_uid)
    stored = np.asarray(stored, dtype=np.int16)
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [float(v) for v in position_lps]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    if slice_thickness is not None:
        ds.SliceThickness = slice_thickness
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = stored.tobytes()
    return _save(ds, path)


def write_series(folder: Path, stored: np.ndarray, *, origin_lps: Sequence[float],
                 step_mm: float, orientation: Sequence[float] = AXIAL,
                 series_uid: str | None = None, frame_uid: str | None = None,
                 slopes: Iterable[float] | None = None, intercept: float = -1024.0,
                 order: Sequence[int] | None = None, prefix: str = "slice",
                 **kwargs: Any) -> list[Path]:
    """A series of ``stored.shape[0]`` slices along the normal of ``orientation``.

    Files are named in ``order`` (default: as given), so a shuffled order tests sorting.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    slopes = list(slopes) if slopes is not None else [1.0] * stored.shape[0]
    order = list(order) if order is not None else list(range(stored.shape[0]))
    paths = []
    for file_number, k in enumerate(order):
        position = np.asarray(origin_lps, dtype=float) + k * step_mm * normal
        paths.append(write_slice(
            folder / f"{prefix}{file_number:03d}.dcm", stored[k], position_lps=position,
            series_uid=series_uid, frame_uid=frame_uid, orientation=orientation,
            slope=slopes[k], intercept=intercept, instance_number=k + 1, **kwargs))
    return paths


def write_rtdose(path: Path, stored: np.ndarray, *, position_lps: Sequence[float],
                 offsets: Sequence[float] | None, scaling: float | None = 1e-4,
                 units: str = "GY", orientation: Sequence[float] = AXIAL,
                 pixel_spacing: Sequence[float] = (2.0, 3.0), frame_uid: str | None = None,
                 modality: str = "RTDOSE") -> Path:
    """An RTDOSE with ``stored`` (frames, rows, columns) uint32 values."""
    ds = _base(RTDoseStorage, modality, series_uid=generate_uid(),
               frame_uid=frame_uid or generate_uid())
    stored = np.asarray(stored, dtype=np.uint32)
    ds.ImagePositionPatient = [float(v) for v in position_lps]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.NumberOfFrames = stored.shape[0]
    ds.FrameIncrementPointer = 0x3004000C
    ds.Rows, ds.Columns = stored.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits = units
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    if offsets is not None:
        ds.GridFrameOffsetVector = [float(v) for v in offsets]
    if scaling is not None:
        ds.DoseGridScaling = scaling
    ds.PixelData = stored.tobytes()
    return _save(ds, path)


def square_lps(z_mm: float, centre_xy: Sequence[float], half_x: float,
               half_y: float) -> np.ndarray:
    """A rectangle's 4 corners (LPS, (x, y, z)) in the plane z = ``z_mm``."""
    cx, cy = centre_xy
    return np.array([[cx - half_x, cy - half_y, z_mm], [cx + half_x, cy - half_y, z_mm],
                     [cx + half_x, cy + half_y, z_mm], [cx - half_x, cy + half_y, z_mm]])


def circle_lps(z_mm: float, centre_xy: Sequence[float], radius_mm: float,
               n_points: int = 128) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    return np.column_stack([centre_xy[0] + radius_mm * np.cos(angles),
                            centre_xy[1] + radius_mm * np.sin(angles),
                            np.full(n_points, float(z_mm))])


def write_rtstruct(path: Path, rois: Sequence[dict[str, Any]], *, frame_uid: str) -> Path:
    """An RTSTRUCT. Each roi: ``number``, ``name``, ``contours`` (list of ``(type, (N, 3)
    LPS points)``), optional ``frame_uid`` and ``interpreted_type``."""
    ds = _base(RTStructureSetStorage, "RTSTRUCT", series_uid=generate_uid(),
               frame_uid=frame_uid)
    del ds.FrameOfReferenceUID
    ds.StructureSetLabel = "test"
    ref = Dataset()
    ref.FrameOfReferenceUID = frame_uid
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([ref])
    set_items, contour_items, observations = [], [], []
    for roi in rois:
        item = Dataset()
        item.ROINumber = roi["number"]
        item.ROIName = roi["name"]
        item.ReferencedFrameOfReferenceUID = roi.get("frame_uid", frame_uid)
        set_items.append(item)
        contours = []
        for number, (kind, points) in enumerate(roi["contours"], start=1):
            contour = Dataset()
            contour.ContourNumber = number
            contour.ContourGeometricType = kind
            points = np.asarray(points, dtype=float)
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [round(float(v), 6) for v in points.ravel()]
            contours.append(contour)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = roi["number"]
        roi_contour.ROIDisplayColor = [255, 0, 0]
        if contours:
            roi_contour.ContourSequence = DicomSequence(contours)
        contour_items.append(roi_contour)
        observation = Dataset()
        observation.ObservationNumber = roi["number"]
        observation.ReferencedROINumber = roi["number"]
        observation.RTROIInterpretedType = roi.get("interpreted_type", "ORGAN")
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(set_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    return _save(ds, path)
