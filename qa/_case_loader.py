"""Loading one case's inputs for :func:`qa.case_runner.process_case`.

:class:`CaseLoader` reads each role of a case once (or predicts it with the model), remembers
failures so that each is recorded once, hands structure sets over as lazy mappings (files,
label maps, RTSTRUCTs, grouped mask roles), releases each input after the last check that
reads it, and builds the image-metadata rows (shape, spacing, value range, acquisition facts,
intensity percentiles) kept for the drift checks of later runs.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qa.errors import QAInputError
from qa.protocol import CheckSpec, Protocol
from qa.volume import Volume, same_grid

if TYPE_CHECKING:
    from qa.case_runner import CaseContext, CaseResult
    from qa.dataset import Case

__all__ = ["CaseLoader", "last_use", "load_role", "error_record", "path_str",
           "ACQUISITION_KEYS", "INTENSITY_PERCENTILES"]

logger = logging.getLogger(__name__)


class CaseLoader:
    """Loads each role of a case once (or predicts it with the model) and remembers failures."""

    def __init__(self, context: CaseContext, case: Case, result: CaseResult) -> None:
        self.context = context
        self.case = case
        self.result = result
        self.volumes: dict[str, Volume] = {}
        self.kinds: dict[str, str] = {}
        self.errors: dict[str, bool] = {}
        self.grid_match: dict[str, bool] = {}
        self.released_rows: dict[str, dict[str, Any] | None] = {}

    def release_before(self, index: int, last_use: dict[str, int]) -> None:
        """Drop the roles whose last reader is a check before ``index`` (their metadata row
        is computed now, as it would have been at the end), so that a case's peak memory
        holds only what the remaining checks need."""
        for role in [r for r in self.volumes if last_use.get(r, index) < index]:
            volume = self.volumes.pop(role)
            self.released_rows[role] = (self._metadata_row(role, volume)
                                        if isinstance(volume, Volume) else None)

    def failed(self, role: str) -> bool:
        return self.errors.get(role, False)

    def get(self, role: str, kind: str, *, check_id: str,
            grid: Volume | None = None) -> Any:
        """The role's Volume (or, for kind ``structures``, its mapping of masks); None when it
        is blank or failed to load (the failure is recorded once)."""
        if role in self.volumes:
            return self.volumes[role]
        if role in self.errors:
            return None
        try:
            volume = self._load(role, kind, grid)
        except QAInputError as exc:
            self.errors[role] = True
            self.result.errors.append(error_record(exc.located(
                case_id=self.case.case_id, role=role, check=check_id,
                path=path_str(self.case.paths.get(role)))))
            return None
        except Exception as exc:  # a reader bug must not sink the run
            logger.error("case %s, role %s: unexpected error\n%s", self.case.case_id, role,
                         traceback.format_exc())
            self.errors[role] = True
            self.result.errors.append({"message": f"unexpected {type(exc).__name__} while "
                                                  f"loading: {exc}", "check_id": check_id,
                                       "role": role,
                                       "path": path_str(self.case.paths.get(role)),
                                       "field": None})
            return None
        if volume is None:  # optional role left blank in the case table
            self.errors[role] = False
            return None
        self.volumes[role] = volume
        self.kinds[role] = kind
        return volume

    def _load(self, role: str, kind: str, grid: Volume | None) -> Any:
        if kind == "structures":
            from qa.io.structures import StructureSet

            structures = self._load_structures(role, grid)
            if isinstance(structures, StructureSet):  # masks read on access name the role
                structures.role = role
            return structures
        model = self.context.protocol.model
        adapter = self.context.adapter
        if role == model.output and adapter.needs_input:
            source = self.get(model.input, "image", check_id="model")
            if source is None:
                raise QAInputError(f"the model input role {model.input!r} could not be loaded, "
                                   "so the model was not run", role=role)
            return adapter.predict(source, case_id=self.case.case_id)
        path = self.case.paths.get(role)
        if path is None:
            return None
        return _checked_modality(load_role(Path(path), kind, case_id=self.case.case_id),
                                 self.context.protocol, role)

    def _load_structures(self, role: str,
                         grid: Volume | None) -> Mapping[str, Volume] | None:
        """The role's structure set: a :class:`qa.io.structures.StructureSet` reading each
        mask on access (a file, a label map, an RTSTRUCT, the model's label map, or the
        member roles of a group declared in the protocol)."""
        from qa.io import read_structures
        from qa.io.structures import read_label_map, split_label_map

        protocol, adapter = self.context.protocol, self.context.adapter
        declared = protocol.roles.get(role)
        labels = declared.labels if declared is not None else None
        if role == protocol.model.output and adapter.needs_input and labels is not None:
            # the model writes a label map; roles.<output>.labels names its values
            source = self.get(protocol.model.input, "image", check_id="model")
            if source is None:
                raise QAInputError(f"the model input role {protocol.model.input!r} could not "
                                   "be loaded, so the model was not run", role=role)
            label_map = adapter.predict_labels(source, case_id=self.case.case_id)
            try:
                return split_label_map(label_map, labels)
            except ValueError as exc:
                raise QAInputError(f"model {adapter.name!r}: {exc} (roles.{role}.labels "
                                   "expects whole-number labels)", role=role) from exc
        members = protocol.grouped_roles().get(role)
        if members is None:
            path = self.case.paths.get(role)
            if path is None:
                return None
            if labels is not None:
                return read_label_map(Path(path), labels)
            return read_structures(Path(path), reference=grid)
        return self._group(role, members)

    def _group(self, role: str, members: list[str]) -> Mapping[str, Volume]:
        """Mask roles grouped in the protocol, as a structure set that reads each member's
        file when a check asks for it and keeps no mask (a case with twenty OARs given as
        whole-grid files never holds them all). A member with a blank cell is absent (not an
        error); one already loaded for another slot, or predicted by the model, is read once
        and shared. A member that fails to read raises on access, naming its role and file,
        and the check records that structure's problem and measures the others."""
        from qa.io.structures import StructureSet

        protocol, adapter = self.context.protocol, self.context.adapter
        names: list[str] = []
        sources: dict[str, str] = {}
        for member in members:
            shared = member in self.volumes or (member == protocol.model.output
                                                and adapter.needs_input)
            if shared or self.errors.get(member):  # a failure is already recorded
                if self.get(member, "mask", check_id=role) is not None:
                    names.append(member)
                continue
            path = self.case.paths.get(member)
            if path is not None:
                names.append(member)
                sources[member] = str(path)
        return StructureSet(names, self._read_member, sources=sources, role=role)

    def _read_member(self, member: str) -> Volume:
        """A grouped member's mask, read now (its image-metadata row is noted on its first
        read) or shared with the slot that loaded it."""
        from qa.io.structures import structure_metadata

        mask = self.volumes.get(member)
        if mask is None:
            try:
                mask = self._load(member, "mask", None)
            except QAInputError as exc:
                exc.located(role=member, path=path_str(self.case.paths.get(member)))
                raise
            except (OSError, ValueError, RuntimeError) as exc:  # SimpleITK: RuntimeError
                detail = " ".join(str(exc).split())  # one line in the error table
                raise QAInputError(f"could not be read ({type(exc).__name__}: {detail}); check "
                                   "or re-export this file", role=member,
                                   path=path_str(self.case.paths.get(member))) from exc
            if mask is None:  # listed members have a file; guard against a silent None
                raise QAInputError("no file is named for this member", role=member)
            if member not in self.kinds:  # first read: its row, as for any loaded mask
                self.kinds[member] = "mask"
                self.released_rows[member] = self._metadata_row(member, mask)
        return structure_metadata(mask, member)

    def note_grids(self, spec: CheckSpec, inputs: dict[str, Any]) -> None:
        reference = inputs.get("reference")
        if not isinstance(reference, Volume):  # absent, or a structure set
            return
        for slot_name, volume in inputs.items():
            if slot_name == "reference" or not isinstance(volume, Volume):
                continue
            role = spec.bindings[slot_name]
            matches = same_grid(reference, volume)
            self.grid_match[role] = self.grid_match.get(role, True) and matches

    def metadata_rows(self) -> list[dict[str, Any]]:
        """One row per loaded image, mask or dose (structure sets: their masks have own
        rows), in load order, released roles included."""
        rows = []
        for role in self.kinds:  # load order
            if role in self.released_rows:
                row = self.released_rows[role]
            else:
                volume = self.volumes.get(role)
                row = self._metadata_row(role, volume) if isinstance(volume, Volume) else None
            if row is not None:
                rows.append(row)
        return rows

    def _metadata_row(self, role: str, volume: Volume) -> dict[str, Any]:
        array = volume.array
        finite = np.isfinite(array) if array.dtype.kind == "f" else None
        n_bad = int(array.size - np.count_nonzero(finite)) if finite is not None else 0
        values = array[finite] if finite is not None and n_bad else array
        return {
            "case_id": self.case.case_id, "role": role, "kind": self.kinds[role],
            "shape_z": volume.shape[0], "shape_y": volume.shape[1],
            "shape_x": volume.shape[2], "spacing_z_mm": volume.spacing[0],
            "spacing_y_mm": volume.spacing[1], "spacing_x_mm": volume.spacing[2],
            "min_value": float(values.min()) if values.size else math.nan,
            "max_value": float(values.max()) if values.size else math.nan,
            "non_finite_voxels": n_bad,
            "grid_matches_reference": self.grid_match.get(role),
            **(_acquisition_features(volume, values) if self.kinds[role] == "image"
               else {}),
        }


def last_use(context: CaseContext) -> dict[str, int]:
    """Index in ``context.checks`` of the last check reading each role: bound to one of its
    slots, a member of a structure group bound to one, or the input of the model whose
    output it reads. Roles not listed are kept for the whole case."""
    protocol = context.protocol
    groups = protocol.grouped_roles()
    last: dict[str, int] = {}
    for index, (spec, _check) in enumerate(context.checks):
        for role in spec.bindings.values():
            for name in (role, *groups.get(role, ())):
                last[name] = index
    model = protocol.model
    if model.input and model.output in last:
        last[model.input] = max(last.get(model.input, -1), last[model.output])
    return last


#: Acquisition facts copied from an image's (de-identified) metadata for drift checks.
ACQUISITION_KEYS = ("manufacturer", "kvp", "slice_thickness_mm", "field_strength_t",
                    "ctdivol_mgy", "convolution_kernel")
#: Intensity percentiles of an image kept for drift checks (whole volume, finite voxels).
INTENSITY_PERCENTILES = (1, 50, 99)


def _acquisition_features(volume: Volume, finite_values: np.ndarray) -> dict[str, Any]:
    """Acquisition metadata and intensity percentiles of an image (``p01``, ``p50``,
    ``p99``: ``numpy.percentile``, linear interpolation, over its finite voxels)."""
    features: dict[str, Any] = {key: volume.metadata.get(key) for key in ACQUISITION_KEYS}
    if finite_values.size:
        levels = np.percentile(finite_values, INTENSITY_PERCENTILES)
        features.update({f"p{q:02d}": float(v)
                         for q, v in zip(INTENSITY_PERCENTILES, levels, strict=True)})
    return features


def _checked_modality(volume: Volume, protocol: Protocol, role: str) -> Volume:
    """Refuse a DICOM image whose Modality differs from ``roles.<role>.modality`` (an MR
    series in the CT column would otherwise be graded as HU). Formats without a modality
    (NIfTI ...) pass."""
    declared = protocol.roles.get(role)
    expected = str(getattr(declared, "modality", None) or "").strip().upper()
    found = str(volume.metadata.get("modality") or "").strip().upper()
    if expected and found and found != expected:
        raise QAInputError(f"the file's Modality is {found} but the protocol declares "
                           f"roles.{role}.modality: {expected}; check which file the case "
                           f"table names for {role!r}", role=role, field="Modality")
    return volume


def load_role(path: Path, kind: str, *, case_id: str | None = None) -> Volume:
    """Read one case-table file as the given kind (``image``, ``mask``, ``dose``).

    ``case_id``: a DICOM image series whose PatientID / PatientName / OtherPatientIDs /
    AccessionNumber equals it is refused (case ids are stored and reported: pseudonyms only).
    """
    from qa import io

    if kind == "mask":
        return io.read_mask(path)
    if kind == "dose":  # RTDOSE or NIfTI/MHA/NRRD; NaN/inf or negative doses refused
        return io.read_dose(path)
    return io.read_image(path, case_id=case_id)


def error_record(exc: QAInputError) -> dict[str, Any]:
    return {"message": exc.message, "check_id": exc.check, "role": exc.role,
            "path": exc.path, "field": exc.field}


def path_str(path: Path | None) -> str | None:
    return None if path is None else str(path)
