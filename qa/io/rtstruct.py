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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import ReaderError
from qa.io import _dicom
from qa.volume import Volume

__all__ = ["read_rtstruct", "rtstruct_rasteriser", "normalise_roi_name"]

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


@dataclass
class _Plane:
    """The contours of one ROI in one plane parallel to the reference slices."""

    u_mm: float  # position along the reference slice axis, from slice 0's centre
    z_mm: float  # mean patient z (LPS) of its points, for messages
    contours: list[np.ndarray] = field(default_factory=list)  # (N, 2) fractional (row, col)


def _planes(roi: _Roi, reference: Volume) -> tuple[list[_Plane], list[str]]:
    """The ROI's CLOSED_PLANAR contours grouped by plane (ascending ``u_mm``), and notes on
    the contours left out (other types, malformed, not parallel to the reference slices)."""
    step_mm = reference.spacing[0]
    notes: list[str] = []
    other_kinds = sorted({kind for kind, _ in roi.contours if kind != "CLOSED_PLANAR"})
    if other_kinds:
        notes.append(f"contours of type {', '.join(other_kinds)} ignored (only CLOSED_PLANAR "
                     f"is rasterised)")
    found: list[tuple[float, float, np.ndarray]] = []
    for number, (kind, values) in enumerate(roi.contours, start=1):
        if kind != "CLOSED_PLANAR":
            continue
        if values.size < 9 or values.size % 3:
            notes.append(f"contour {number}: fewer than 3 points or malformed ContourData; "
                         f"skipped")
            continue
        points_lps = values.reshape(-1, 3)
        index = reference.world_to_index(points_lps[:, ::-1])
        if np.ptp(index[:, 0]) * step_mm > max(2 * _SAME_PLANE_MM, 1e-3 * step_mm):
            notes.append(f"contour {number} (plane z = {points_lps[:, 2].mean():.2f} mm) is "
                         f"not parallel to the reference slices; skipped")
            continue
        found.append((float(index[:, 0].mean() * step_mm), float(points_lps[:, 2].mean()),
                      index[:, 1:]))
    planes: list[_Plane] = []
    for u_mm, z_mm, rows_cols in sorted(found, key=lambda item: item[0]):
        if not planes or u_mm - planes[-1].u_mm > _SAME_PLANE_MM:
            planes.append(_Plane(u_mm, z_mm))
        planes[-1].contours.append(rows_cols)
    return planes, notes


def _typical_spacing_mm(positions_mm: Sequence[float]) -> float | None:
    """Median distance between consecutive distinct planes, or None with fewer than two."""
    u = np.sort(np.asarray(positions_mm, float))
    steps = np.diff(u)
    steps = steps[steps > _SAME_PLANE_MM]  # planes of different ROIs on one image slice
    return float(np.median(steps)) if steps.size else None


def _slabs(planes: list[_Plane], fallback_mm: float,
           tolerance_mm: float | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Lower and upper half-thickness (mm) of the slab each plane represents, and gap notes.

    Between two planes whose distance is no gap, the boundary is their midpoint (local
    spacing). A distance more than 1.5 x the larger neighbouring distance is a gap (missing
    contours); an ROI with only two planes compares with ``fallback_mm`` (the structure
    set's typical plane spacing). At a gap or at the ends a plane extends by half its own
    spacing: the distance to its neighbour on the other side, else ``fallback_mm``. No
    slab reaches past the midpoint to its neighbour; ``tolerance_mm`` caps all of them.
    """
    u = np.array([p.u_mm for p in planes])
    d = np.diff(u)
    gap = np.zeros(d.size, bool)
    for i in range(d.size):
        neighbours = d[[j for j in (i - 1, i + 1) if 0 <= j < d.size]]
        reference_mm = float(neighbours.max()) if neighbours.size else fallback_mm
        gap[i] = d[i] > 1.5 * reference_mm + 1e-6
    below = np.empty(u.size)
    above = np.empty(u.size)
    for i in range(u.size):
        left = d[i - 1] if i > 0 and not gap[i - 1] else None
        right = d[i] if i < d.size and not gap[i] else None
        own_mm = right if right is not None else left if left is not None else fallback_mm
        below[i] = 0.5 * (left if left is not None else min(own_mm, d[i - 1] if i else own_mm))
        above[i] = 0.5 * (right if right is not None else
                          min(own_mm, d[i] if i < d.size else own_mm))
    if tolerance_mm is not None:
        below, above = np.minimum(below, tolerance_mm), np.minimum(above, tolerance_mm)
    notes = [f"no contour between the planes z = {planes[i].z_mm:.2f} mm and z = "
             f"{planes[i + 1].z_mm:.2f} mm ({d[i]:.2f} mm apart, more than 1.5 x the "
             f"neighbouring plane spacing): missing contours? Each plane fills only its own "
             f"slab; the {d[i] - above[i] - below[i + 1]:.2f} mm between them is left empty"
             for i in np.flatnonzero(gap)]
    return below, above, notes


def _rasterise(planes: list[_Plane], notes: list[str], reference: Volume,
               tolerance_mm: float | None,
               spacing_mm: float | None) -> tuple[np.ndarray, list[str], int, float]:
    """Mask, warnings, number of contours used and largest plane offset (mm).

    ``spacing_mm`` is the structure set's typical contour plane spacing (None when it has
    fewer than two planes: the reference slice spacing is used instead).
    """
    from skimage.draw import polygon

    n_slices, n_rows, n_cols = reference.shape
    step_mm = reference.spacing[0]
    notes = list(notes)
    mask = np.zeros(reference.shape, dtype=bool)
    if not planes:
        notes.append("no contour was rasterised on the reference grid: the mask is empty")
        return mask, notes, 0, 0.0
    below, above, gap_notes = _slabs(planes, spacing_mm or step_mm, tolerance_mm)
    notes.extend(gap_notes)
    # slabs are half-open, [u - below, u + above): a slice centre on the boundary between
    # two slabs belongs to the upper one only; slabs are ordered and do not overlap
    u = np.array([p.u_mm for p in planes])
    centres_mm = step_mm * np.arange(n_slices)
    nearest = np.clip(np.searchsorted(u - below - 1e-6, centres_mm, side="right") - 1, 0, None)
    offset_mm = centres_mm - u[nearest]
    inside = ((offset_mm >= -below[nearest] - 1e-6)
              & ((offset_mm < above[nearest] - 1e-6) | (np.abs(offset_mm) <= 1e-6)))
    slices_of: dict[int, list[int]] = {}
    for slice_k in np.flatnonzero(inside):
        slices_of.setdefault(int(nearest[slice_k]), []).append(int(slice_k))
    used, clipped = 0, False
    for i, slice_ks in slices_of.items():
        plane_mask = np.zeros((n_rows, n_cols), dtype=bool)
        for rows_cols in planes[i].contours:
            rr, cc = polygon(rows_cols[:, 0], rows_cols[:, 1], shape=(n_rows, n_cols))
            plane_mask[rr, cc] = ~plane_mask[rr, cc]
            clipped |= bool(np.any(rows_cols < -0.5)
                            or np.any(rows_cols[:, 0] > n_rows - 0.5)
                            or np.any(rows_cols[:, 1] > n_cols - 0.5))
        mask[slice_ks] = plane_mask
        used += len(planes[i].contours)
    thinner: list[float] = []
    for i, plane in enumerate(planes):
        if i in slices_of:
            continue
        slice_k = int(np.rint(plane.u_mm / step_mm))
        where = f"contour plane (plane z = {plane.z_mm:.2f} mm)"
        if not 0 <= slice_k < n_slices:
            notes.append(f"{where} lies outside the reference grid's slices; skipped")
        elif tolerance_mm is not None and tolerance_mm < step_mm / 2:
            notes.append(f"{where} lies {abs(plane.u_mm - slice_k * step_mm):.2f} mm from the "
                         f"nearest reference slice centre (tolerance {tolerance_mm:.2f} mm), "
                         f"between slices; skipped")
        else:  # its slab is thinner than a slice and holds no slice centre
            thinner.append(plane.z_mm)
    if thinner:
        span = (f"z = {thinner[0]:.2f} mm" if len(thinner) == 1 else
                f"between z = {min(thinner):.2f} and {max(thinner):.2f} mm")
        notes.append(f"{len(thinner)} contour plane(s) ({span}) not used: the reference slices "
                     f"({step_mm:g} mm) "
                     f"are thicker than the contour spacing, and each slice took only the "
                     f"plane nearest the slice centre")
    if clipped:
        notes.append("contours reach outside the reference grid in-plane; the mask is "
                     "clipped to the grid")
    if used == 0:
        notes.append("no contour was rasterised on the reference grid: the mask is empty")
    max_offset_mm = float(np.abs(offset_mm[inside]).max()) if inside.any() else 0.0
    return mask, notes, used, max_offset_mm
