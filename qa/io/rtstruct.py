"""Read a DICOM RT Structure Set and rasterise its ROIs on a reference grid.

Each CLOSED_PLANAR contour (DICOM PS3.3 C.8.8.6, "ROI Contour Module") is assigned to the
reference slice nearest its plane, its points (LPS mm) are mapped to fractional
``(row, column)`` indices with :meth:`qa.Volume.world_to_index`, and the polygon is filled
with :func:`skimage.draw.polygon`, which selects the voxels whose **centres** lie inside
the polygon or on its boundary. The contours of one ROI on one slice are combined with the
even-odd rule (XOR): a contour inside another contour is a hole, the usual DICOM
convention for rings (e.g. a rectum wall) and the one used by dicompyler and plastimatch.

Pick the image the structures were drawn on as ``reference`` (its slices carry the
contour planes). To get a mask on another grid (a dose grid), rasterise on the image first
and then use :func:`qa.volume.resample_like` (``method="nearest"`` or ``"fraction"``).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import ReaderError
from qa.io import _dicom
from qa.volume import Volume

__all__ = ["read_rtstruct", "normalise_roi_name"]

logger = logging.getLogger(__name__)

#: Contours of one slice whose planes differ by less than this are the same plane (mm).
_SAME_PLANE_MM = 0.05


def normalise_roi_name(name: str) -> str:
    """A comparison key for an ROI name.

    Accents are removed (Unicode NFKD, combining marks dropped), surrounding blanks
    stripped, letters lower-cased, and every run of spaces and dashes becomes one ``_``.

    Examples
    --------
    >>> normalise_roi_name("  PTV - High Risk ")
    'ptv_high_risk'
    >>> normalise_roi_name("Tête fémorale-G")
    'tete_femorale_g'
    """
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.sub(r"[\s\-]+", "_", text.strip().lower())


def read_rtstruct(path: str | Path, reference: Volume, *, names: Sequence[str] | None = None,
                  plane_tolerance_mm: float | None = None) -> dict[str, Volume]:
    """Rasterise the ROIs of an RTSTRUCT on ``reference``'s grid.

    Parameters
    ----------
    path : str or Path
        The RT Structure Set file.
    reference : Volume
        The grid to rasterise on (normally the CT/MR the contours were drawn on). When its
        ``metadata["frame_of_reference_uid"]`` is known it must match each ROI's.
    names : sequence of str, optional
        ROIs to read. Each is matched to an ROI name exactly, else by
        :func:`normalise_roi_name` when that match is unique. Default: every ROI holding
        closed contours or no contour at all (point-only ROIs such as isocentres are left
        out).
    plane_tolerance_mm : float, optional
        Largest distance in mm between a contour's plane and the centre of the reference
        slice it is assigned to. Default: half the reference slice spacing (nearest slice).

    Returns
    -------
    dict of str to Volume
        Keyed by ROI name exactly as written in the file; boolean masks on ``reference``'s
        grid. ``metadata``: ``roi_name``, ``roi_key`` (normalised), ``roi_number``,
        ``roi_interpreted_type`` (when given), ``frame_of_reference_uid``,
        ``format="rtstruct"``, ``source_path`` (file name), ``n_contours`` (contours
        rasterised), ``max_plane_offset_mm`` (largest distance from a used contour plane to
        its slice centre) and ``warnings`` (list of str).

    Raises
    ------
    ReaderError
        Missing, non-DICOM or truncated file; Modality not RTSTRUCT; a requested name not
        found (the message lists the available names) or only holding points; two selected
        ROIs with the same name; an ROI whose FrameOfReferenceUID differs from the
        reference's.

    Notes
    -----
    Contours more than ``plane_tolerance_mm`` from every slice centre (between slices, or
    beyond the first or last slice) and contours not parallel to the reference slices are
    skipped, each with an entry in ``warnings``. When contours from several planes fall on
    one slice (reference slices thicker than the structure set's), only the plane nearest
    the slice centre is used, with a warning. Contours reaching outside the reference grid
    in-plane are clipped, with a warning. Voxel centres on a contour's edge count as
    inside, so the edge voxels of a hole are removed with the hole.
    """
    path = Path(path)
    if plane_tolerance_mm is None:
        plane_tolerance_mm = 0.5 * reference.spacing[0]
    if not plane_tolerance_mm >= 0:
        raise ValueError(f"plane_tolerance_mm must be >= 0 mm, got {plane_tolerance_mm!r}.")
    with _dicom.pydicom_warnings_logged(path):
        dataset = _dicom.open_dicom(path, what="RTSTRUCT")
        modality = str(dataset.get("Modality", "")).strip().upper()
        if modality != "RTSTRUCT":
            raise ReaderError(f"expected an RTSTRUCT file, this one has Modality "
                              f"{modality or '?'}: check which file the case table names",
                              path=str(path), field="Modality")
        rois = _roi_table(dataset, path)
    selected = _select(rois, names, path)
    reference_for = str(reference.metadata.get("frame_of_reference_uid") or "").strip()
    out: dict[str, Volume] = {}
    for roi in selected:
        if reference_for and roi.frame_uid and roi.frame_uid != reference_for:
            raise ReaderError(
                f"ROI {roi.name!r} is defined in frame of reference {roi.frame_uid}, the "
                f"reference image in {reference_for}: they are not in the same patient "
                f"coordinates; pair the structure set with the image it was drawn on",
                path=str(path), field="ReferencedFrameOfReferenceUID")
        mask, notes, used, max_offset_mm = _rasterise(roi, reference, plane_tolerance_mm)
        for note in notes:
            logger.warning("%s: ROI %r: %s", path, roi.name, note)
        metadata: dict[str, Any] = {
            "format": "rtstruct", "source_path": path.name, "roi_name": roi.name,
            "roi_key": normalise_roi_name(roi.name), "roi_number": roi.number,
            "frame_of_reference_uid": roi.frame_uid or reference_for or None,
            "n_contours": used, "max_plane_offset_mm": max_offset_mm, "warnings": notes,
        }
        if roi.interpreted_type:
            metadata["roi_interpreted_type"] = roi.interpreted_type
        out[roi.name] = Volume(mask, reference.spacing, reference.origin, reference.direction,
                               metadata)
    return out


@dataclass
class _Roi:
    number: int
    name: str
    frame_uid: str = ""
    interpreted_type: str = ""
    contours: list[tuple[str, np.ndarray]] = field(default_factory=list)

    @property
    def point_only(self) -> bool:
        return bool(self.contours) and all(t != "CLOSED_PLANAR" for t, _ in self.contours)


def _roi_table(dataset: Any, path: Path) -> list[_Roi]:
    """ROIs with their contours, in StructureSetROISequence order."""
    rois: dict[int, _Roi] = {}
    for item in dataset.get("StructureSetROISequence", []):
        try:
            number = int(item.get("ROINumber"))
        except (TypeError, ValueError):
            raise ReaderError(f"an ROI has no valid ROINumber ({item.get('ROIName', '?')!r}): "
                              f"the structure set is malformed; re-export it",
                              path=str(path), field="ROINumber") from None
        rois[number] = _Roi(number, str(item.get("ROIName", "")),
                            str(item.get("ReferencedFrameOfReferenceUID", "") or "").strip())
    for item in dataset.get("RTROIObservationsSequence", []):
        roi = rois.get(int(item.get("ReferencedROINumber", -1)))
        if roi is not None:
            roi.interpreted_type = str(item.get("RTROIInterpretedType", "") or "").strip()
    for item in dataset.get("ROIContourSequence", []):
        roi = rois.get(int(item.get("ReferencedROINumber", -1)))
        if roi is None:
            logger.warning("%s: contours for ROI number %s, which the structure set does not "
                           "declare, are ignored", path, item.get("ReferencedROINumber"))
            continue
        for contour in item.get("ContourSequence", []):
            kind = str(contour.get("ContourGeometricType", "")).strip().upper()
            data = contour.get("ContourData")
            values = np.asarray([] if data is None else
                                [float(v) for v in (data if _dicom.is_multi(data) else [data])])
            roi.contours.append((kind, values))
    return list(rois.values())


def _select(rois: list[_Roi], names: Sequence[str] | None, path: Path) -> list[_Roi]:
    available = ", ".join(repr(r.name) for r in rois) or "none"
    if names is None:
        selected = [r for r in rois if not r.point_only]
        for roi in rois:
            if roi.point_only:
                logger.info("%s: ROI %r holds only points; not rasterised", path, roi.name)
    else:
        if isinstance(names, str):
            names = [names]
        selected = []
        for wanted in names:
            matches = [r for r in rois if r.name == wanted]
            if not matches:
                key = normalise_roi_name(wanted)
                matches = [r for r in rois if normalise_roi_name(r.name) == key]
            if len(matches) != 1:
                problem = "is not in this structure set" if not matches else "is ambiguous"
                raise ReaderError(f"ROI {wanted!r} {problem}; available ROIs: {available}. "
                                  f"Fix the structure name in the protocol or the case table",
                                  path=str(path), field="ROIName")
            if matches[0].point_only:
                raise ReaderError(f"ROI {wanted!r} holds only points (e.g. an isocentre), no "
                                  f"closed contour to rasterise", path=str(path),
                                  field="ContourGeometricType")
            selected.append(matches[0])
    seen: dict[str, int] = {}
    for roi in selected:
        if roi.name in seen and seen[roi.name] != roi.number:
            raise ReaderError(f"two ROIs are named {roi.name!r} (numbers {seen[roi.name]} and "
                              f"{roi.number}): rename one in the planning system",
                              path=str(path), field="ROIName")
        seen[roi.name] = roi.number
    return list({roi.number: roi for roi in selected}.values())


def _rasterise(roi: _Roi, reference: Volume,
               tolerance_mm: float) -> tuple[np.ndarray, list[str], int, float]:
    """Mask, warnings, number of contours used and largest plane offset (mm)."""
    from skimage.draw import polygon

    n_slices, n_rows, n_cols = reference.shape
    step_mm = reference.spacing[0]
    notes: list[str] = []
    by_slice: dict[int, list[tuple[float, np.ndarray]]] = {}
    other_kinds = sorted({kind for kind, _ in roi.contours if kind != "CLOSED_PLANAR"})
    if other_kinds:
        notes.append(f"contours of type {', '.join(other_kinds)} ignored (only CLOSED_PLANAR "
                     f"is rasterised)")
    for number, (kind, values) in enumerate(roi.contours, start=1):
        if kind != "CLOSED_PLANAR":
            continue
        if values.size < 9 or values.size % 3:
            notes.append(f"contour {number}: fewer than 3 points or malformed ContourData; "
                         f"skipped")
            continue
        points_lps = values.reshape(-1, 3)
        index = reference.world_to_index(points_lps[:, ::-1])
        slice_k = int(np.rint(index[:, 0].mean()))
        offsets_mm = (index[:, 0] - slice_k) * step_mm
        where = f"contour {number} (plane z = {points_lps[:, 2].mean():.2f} mm)"
        if np.ptp(index[:, 0]) * step_mm > max(2 * _SAME_PLANE_MM, 1e-3 * step_mm):
            notes.append(f"{where} is not parallel to the reference slices; skipped")
        elif not 0 <= slice_k < n_slices:
            notes.append(f"{where} lies outside the reference grid's slices; skipped")
        elif np.abs(offsets_mm).max() > tolerance_mm + 1e-6:
            notes.append(f"{where} lies {abs(offsets_mm.mean()):.2f} mm from the nearest "
                         f"reference slice centre (tolerance {tolerance_mm:.2f} mm), between "
                         f"slices; skipped")
        else:
            by_slice.setdefault(slice_k, []).append((float(offsets_mm.mean()), index[:, 1:]))
    mask = np.zeros(reference.shape, dtype=bool)
    used, max_offset_mm, clipped = 0, 0.0, False
    for slice_k in sorted(by_slice):
        items = sorted(by_slice[slice_k], key=lambda item: abs(item[0]))
        plane_mm = items[0][0]
        kept = [rc for offset, rc in items if abs(offset - plane_mm) <= _SAME_PLANE_MM]
        if len(kept) < len(items):
            notes.append(f"slice {slice_k}: {len(items) - len(kept)} contour(s) from another "
                         f"plane also fall on it; only the plane nearest the slice centre was "
                         f"used (the reference slices are thicker than the contour spacing)")
        for rows_cols in kept:
            rr, cc = polygon(rows_cols[:, 0], rows_cols[:, 1], shape=(n_rows, n_cols))
            mask[slice_k, rr, cc] = ~mask[slice_k, rr, cc]
            clipped |= bool(np.any(rows_cols < -0.5)
                            or np.any(rows_cols[:, 0] > n_rows - 0.5)
                            or np.any(rows_cols[:, 1] > n_cols - 0.5))
        used += len(kept)
        max_offset_mm = max(max_offset_mm, abs(plane_mm))
    if clipped:
        notes.append("contours reach outside the reference grid in-plane; the mask is "
                     "clipped to the grid")
    if used == 0:
        notes.append("no contour was rasterised on the reference grid: the mask is empty")
    return mask, notes, used, max_offset_mm
