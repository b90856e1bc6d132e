"""Read a DICOM RT Structure Set and rasterise its ROIs on a reference grid.

Convention (the one treatment planning systems use for structure volumes and DVHs): a
CLOSED_PLANAR contour (DICOM PS3.3 C.8.8.6, "ROI Contour Module") stands for the **slab**
of patient centred on its plane whose thickness is the contour plane spacing. Between two
consecutive planes of an ROI the boundary is their midpoint (local spacing, so a
non-uniform spacing is followed); the first and last planes extend by half their own
spacing. A slice of the reference grid takes the contours of the ROI plane nearest its
centre when that centre lies inside the plane's slab (a centre on the boundary between two
slabs goes to the upper one: slabs are half-open); so a grid finer than the contours
repeats each plane on every slice of its slab, a grid coarser than the contours samples
the plane nearest each slice centre, and a grid whose slices are the contour planes (the
usual CT case) takes each plane on its own slice.

A distance between consecutive planes of an ROI more than 1.5 x the neighbouring spacing
is a **gap** (contours missing on some slices, or an ROI made of separate parts, such as
several metastases): each side fills only its own slab, the space between stays empty
(as dicompyler-core 0.5.6 leaves it: it weights each plane by the contour spacing), and a
warning naming the ROI says so. An ROI
with a single plane gets one slab of the structure set's typical plane spacing (the median
distance between the distinct contour planes of all its ROIs: the slice spacing of the
image they were drawn on), or of the reference slice spacing when the whole structure set
has one plane.

Contour points (LPS mm) are mapped to fractional ``(row, column)`` indices with
:meth:`qa.Volume.world_to_index`, and the polygon is filled with
:func:`skimage.draw.polygon`, which selects the voxels whose **centres** lie inside the
polygon or on its boundary. The contours of one ROI in one plane are combined with the
even-odd rule (XOR): a contour inside another contour is a hole, the usual DICOM
convention for rings (e.g. a rectum wall) and the one used by dicompyler and plastimatch.
Contours not parallel to the reference slices (oblique structure sets) are skipped with a
warning.

Masks are boolean: a slice is in or out of a slab as a whole (no partial volume along the
slice axis). Rasterise on the image the structures were drawn on, or directly on a dose
grid; :func:`qa.volume.resample_like` (``method="fraction"``) gives partial volumes on
another grid.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import ReaderError
from qa.io import _dicom
from qa.io._rtstruct_geometry import _planes, _rasterise, _Roi, _typical_spacing_mm
from qa.volume import Volume

__all__ = ["read_rtstruct", "rtstruct_rasteriser", "normalise_roi_name"]

logger = logging.getLogger(__name__)


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
        The grid to rasterise on (the CT/MR the contours were drawn on, or a dose grid:
        any slice spacing, see the module docstring). When its
        ``metadata["frame_of_reference_uid"]`` is known it must match each ROI's.
    names : sequence of str, optional
        ROIs to read. Each is matched to an ROI name exactly, else by
        :func:`normalise_roi_name` when that match is unique. Default: every ROI holding
        closed contours or no contour at all (point-only ROIs such as isocentres are left
        out).
    plane_tolerance_mm : float, optional
        Largest distance in mm between a contour plane and the centre of a reference slice
        that takes its contours; caps the half-thickness of every slab. Default: no cap
        (the slab convention of the module docstring: half the local contour spacing).

    Returns
    -------
    dict of str to Volume
        Keyed by ROI name exactly as written in the file; boolean masks on ``reference``'s
        grid. ``metadata``: ``roi_name``, ``roi_key`` (normalised), ``roi_number``,
        ``roi_interpreted_type`` (when given), ``frame_of_reference_uid``,
        ``format="rtstruct"``, ``source_path`` (file name), ``n_contours`` (contours
        rasterised), ``max_plane_offset_mm`` (largest distance from a filled slice's centre
        to the contour plane it took) and ``warnings`` (list of str).

    Raises
    ------
    ReaderError
        Missing, non-DICOM or truncated file; Modality not RTSTRUCT; a requested name not
        found (the message lists the available names) or only holding points; two selected
        ROIs with the same name; an ROI whose FrameOfReferenceUID differs from the
        reference's.

    Notes
    -----
    A contour plane whose slab holds no reference slice centre is not used: beyond the
    first or last slice, or between two slices (then, when the nearest slice took another
    plane, the reference slices are thicker than the contour spacing); each case is listed
    in ``warnings``, as are gaps between planes (module docstring), contours not parallel
    to the reference slices (skipped), and contours reaching outside the reference grid
    in-plane (clipped). Voxel centres on a contour's edge count as inside, so the edge
    voxels of a hole are removed with the hole.

    For instance, contours every 3 mm at z = 0, 3, 6, 9 mm stand for -1.5 .. 10.5 mm
    (12 mm of patient). On a 2 mm grid the slices centred at 0, 2, 4, 6, 8, 10 mm are
    filled (12 mm), from the planes at 0, 3, 3, 6, 9, 9 mm; those at -2 and 12 mm lie
    outside every slab.
    """
    found, rasterise = rtstruct_rasteriser(path, reference, names=names,
                                           plane_tolerance_mm=plane_tolerance_mm)
    return {name: rasterise(name) for name in found}


def rtstruct_rasteriser(path: str | Path, reference: Volume, *,
                        names: Sequence[str] | None = None,
                        plane_tolerance_mm: float | None = None,
                        ) -> tuple[list[str], Callable[[str], Volume]]:
    """The ROI names :func:`read_rtstruct` returns, and a function rasterising one of them.

    Same parameters, refusals and results as :func:`read_rtstruct`, which is these names
    rasterised in turn; the file is parsed once and its contours kept, each mask is made
    when asked for (a structure set read one mask at a time,
    :class:`qa.io.structures.StructureSet`). Every refusal is raised here, before any mask.
    """
    path = Path(path)
    if plane_tolerance_mm is not None and not plane_tolerance_mm >= 0:
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
    planes = {roi.number: _planes(roi, reference) for roi in rois if not roi.point_only}
    spacing_mm = _typical_spacing_mm([p.u_mm for found, _ in planes.values() for p in found])
    reference_for = str(reference.metadata.get("frame_of_reference_uid") or "").strip()
    for roi in selected:
        if reference_for and roi.frame_uid and roi.frame_uid != reference_for:
            raise ReaderError(
                f"ROI {roi.name!r} is defined in frame of reference {roi.frame_uid}, the "
                f"reference image in {reference_for}: they are not in the same patient "
                f"coordinates; pair the structure set with the image it was drawn on",
                path=str(path), field="ReferencedFrameOfReferenceUID")
    by_name = {roi.name: roi for roi in selected}  # _select refused duplicate names

    def rasterise(name: str) -> Volume:
        roi = by_name[name]
        mask, notes, used, max_offset_mm = _rasterise(*planes[roi.number], reference,
                                                      plane_tolerance_mm, spacing_mm)
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
        return Volume(mask, reference.spacing, reference.origin, reference.direction,
                      metadata)

    return list(by_name), rasterise


def _roi_table(dataset: Any, path: Path) -> list[_Roi]:
    """ROIs with their contours, in StructureSetROISequence order.

    pydicom reads a truncated file without complaint, returning what it parsed; a missing
    Type 1 sequence or a contour whose ContourData holds fewer points than its
    NumberOfContourPoints is how truncation shows, and is refused rather than rasterised
    into an empty or partial mask.
    """
    for keyword in ("StructureSetROISequence", "ROIContourSequence"):
        if not dataset.get(keyword):
            raise ReaderError(f"no {keyword} (Type 1 in the RT Structure Set): the file is "
                              f"truncated or incomplete; export the structure set again",
                              path=str(path), field=keyword)
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
        if item.get("ReferencedROINumber") is None:
            raise ReaderError("an ROIContourSequence item has no ReferencedROINumber (Type 1): "
                              "the file is truncated or corrupt; export the structure set "
                              "again", path=str(path), field="ReferencedROINumber")
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
            declared = contour.get("NumberOfContourPoints")
            if declared is not None and str(declared).strip() and int(declared) * 3 != values.size:
                raise ReaderError(
                    f"a contour of ROI {roi.name!r} declares {int(declared)} points "
                    f"(NumberOfContourPoints) but ContourData holds {values.size} numbers: the "
                    f"file is truncated or corrupt; export the structure set again",
                    path=str(path), field="ContourData")
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
