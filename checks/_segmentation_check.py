"""The ``segmentation`` check: several structures per case, names matched, one row each.

Imported by :mod:`checks.segmentation` (which re-exports :class:`SegmentationCheck`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks._segmentation_overlay import overlay_payload
from checks.base import Check, CheckOutput, Measurement, MetricInfo, Slot
from qa.errors import QAInputError
from qa.io.rtstruct import normalise_roi_name
from qa.jsonsafe import json_safe
from qa.volume import Volume, same_grid

logger = logging.getLogger(__name__)

__all__ = ["SegmentationCheck", "SegmentationOptions", "match_structures"]

# metric name -> (result field, unit, description, better)
_PER_STRUCTURE: dict[str, tuple[str, str, str, str]] = {
    "dice": ("dice", "1", "volumetric Dice (voxel counts)", "higher"),
    "jaccard": ("jaccard", "1", "Jaccard index (voxel counts)", "higher"),
    "hd_mm": ("hd_mm", "mm", "Hausdorff distance (maximum, both directions)", "lower"),
    "hd95_mm": ("hd95_mm", "mm", "HD95: larger of the two directed area-weighted 95th "
                "percentiles", "lower"),
    "hd95_pooled_mm": ("hd95_pooled_mm", "mm", "95th percentile of both directions' "
                       "distances pooled (medpy convention)", "lower"),
    "assd_mm": ("assd_mm", "mm", "average symmetric surface distance (pooled, "
                "area-weighted)", "lower"),
    "masd_mm": ("masd_mm", "mm", "mean of the two directed mean surface distances", "lower"),
    "mean_distance_ref_to_pred_mm": ("mean_distance_ref_to_pred_mm", "mm",
                                     "mean distance reference -> evaluated surface", "lower"),
    "mean_distance_pred_to_ref_mm": ("mean_distance_pred_to_ref_mm", "mm",
                                     "mean distance evaluated -> reference surface", "lower"),
    "surface_dice": ("surface_dice", "1", "surface Dice at tolerance_mm (Nikolov 2021)",
                     "higher"),
    "apl_mm": ("apl_mm", "mm", "added path length: reference contour farther than the "
               "tolerance from the evaluated one, summed over axial slices", "lower"),
    "removed_path_length_mm": ("removed_path_length_mm", "mm", "evaluated contour farther "
                               "than the tolerance from the reference (to erase)", "lower"),
    "volume_ref_cm3": ("volume_ref_cm3", "cm3", "reference volume", "zero"),
    "volume_pred_cm3": ("volume_pred_cm3", "cm3", "evaluated volume", "zero"),
    "volume_diff_percent": ("volume_diff_percent", "%", "100 (V_eval - V_ref) / V_ref",
                            "zero"),
    "centroid_distance_mm": ("centroid_distance_mm", "mm", "distance between the centroids",
                             "lower"),
}
_FLAGS: dict[str, tuple[str, str]] = {
    "missing_evaluated": ("1", "1 when the structure is absent from the evaluated set (scored "
                          "as an empty prediction)"),
    "missing_reference": ("1", "1 when the structure is absent from the reference set (not "
                          "scored)"),
    "empty_reference": ("1", "1 when the reference mask has no voxel"),
    "empty_evaluated": ("1", "1 when the evaluated mask has no voxel"),
    "n_extra_evaluated": ("structures", "evaluated structures matching no requested one"),
}


@pydantic_dataclass(config=ConfigDict(extra="forbid", frozen=True))
class SegmentationOptions:
    """Options of ``segmentation`` as written in the protocol YAML.

    ``structures``: names to evaluate (default: every reference structure); ``aliases``:
    name -> alternative names found in either set (e.g. ``{bladder: [Vessie, BLADDER_AI]}``);
    matching is on :func:`qa.io.normalise_roi_name` keys (case, accents, spaces and dashes
    ignored, TG-263 style). ``tolerance_mm``: surface-Dice and APL tolerance; ``method``:
    ``exact`` (sub-voxel meshes) or ``deepmind`` (surface-distance compatible);
    ``percentile`` of the robust Hausdorff distance; ``resample``: resample evaluated masks
    onto the reference grid (nearest) instead of failing on a grid mismatch.
    """

    structures: list[str] | None = None
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    tolerance_mm: float = Field(default=2.0, ge=0)
    method: Literal["exact", "deepmind"] = "exact"
    percentile: float = Field(default=95.0, ge=0, le=100)
    resample: bool = False

    @field_validator("aliases")
    @classmethod
    def _unique_aliases(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        owner: dict[str, str] = {}
        for name, alternatives in value.items():
            for alt in [name, *alternatives]:
                key = normalise_roi_name(alt)
                if owner.setdefault(key, name) != name:
                    raise ValueError(f"alias {alt!r} is given to both {owner[key]!r} and "
                                     f"{name!r}; keep it under one structure")
        return value


def match_structures(requested: list[str], available: Mapping[str, Any],
                     aliases: dict[str, list[str]]) -> tuple[dict[str, str], list[str]]:
    """Map each requested name to the name used in ``available`` (or leave it out).

    Returns ``(found, extra)``: requested name -> available name, and the available names
    matched by no requested name. Matching compares :func:`normalise_roi_name` keys of the
    names and of each requested name's aliases.

    Raises
    ------
    ValueError
        When two available structures match the same requested name.
    """
    keys_of: dict[str, set[str]] = {}
    for name in requested:
        keys = {normalise_roi_name(name)}
        for canon, alts in aliases.items():
            group = {normalise_roi_name(a) for a in [canon, *alts]}
            if keys & group:
                keys |= group
        keys_of[name] = keys
    found: dict[str, str] = {}
    used: set[str] = set()
    for name, keys in keys_of.items():
        hits = [a for a in available if normalise_roi_name(a) in keys]
        if len(hits) > 1:
            raise ValueError(f"structures {', '.join(map(repr, hits))} all match {name!r}; "
                             "rename one or narrow the protocol's aliases")
        if hits:
            found[name] = hits[0]
            used.add(hits[0])
    return found, [a for a in available if a not in used]


class SegmentationCheck(Check):
    """Thin check around :func:`checks.segmentation.compare_masks`, one row per structure."""

    name: ClassVar[str] = "segmentation"
    title: ClassVar[str] = "Segmentation agreement (auto-contouring)"
    slots: ClassVar[dict[str, Slot]] = {
        "image": Slot("image", False, "CT the contours were drawn on (RTSTRUCT grid)"),
        "reference": Slot("structures", True, "reference (clinical) structure set",
                          grid_from="image"),
        "evaluated": Slot("structures", True, "evaluated (automatic) structure set",
                          grid_from="image"),
    }
    metrics: ClassVar[dict[str, MetricInfo]] = {
        **{m: MetricInfo(unit, desc, better)  # type: ignore[arg-type]
           for m, (_f, unit, desc, better) in _PER_STRUCTURE.items()},
        **{m: MetricInfo(unit, desc, "zero") for m, (unit, desc) in _FLAGS.items()},
    }
    Options: ClassVar[type] = SegmentationOptions

    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        """Measurements for one case from ``{"reference", "evaluated", "image"?}``.

        Every requested structure gets rows labelled with its requested (or reference)
        name: the metrics of :func:`compare_masks` when present in both sets; when the
        evaluated set lacks it, the metrics of an empty prediction (Dice 0, distances NaN)
        and ``missing_evaluated = 1``; when the reference lacks it, ``missing_reference = 1``
        only (and, when the evaluated set lacks it too or holds it with no voxel, as a label
        map does, the structure is listed in ``details["not_applicable"]`` so the engine
        grades nothing for it on this case).
        Extra evaluated structures are counted and listed in the details.

        A structure that cannot be compared (its mask does not read, is not binary, or lies
        on another grid with ``resample`` off) gets NaN metric rows, ``status: error`` and its
        message in the details (``not_compared``), and a problem in
        :attr:`CheckOutput.problems` that the engine records as an error of the case; the
        other structures are compared as usual.

        Raises
        ------
        QAInputError
            A structure-set input is absent, or two structures of one set match the same
            requested name (the whole case: which one to compare is unknown).
        """
        from checks.segmentation import compare_masks

        for slot_name in ("reference", "evaluated"):
            if not isinstance(inputs.get(slot_name), Mapping):
                raise QAInputError(f"input {slot_name!r} ({self.slots[slot_name].description}) "
                                   "is missing; map it to a structures role in the protocol.",
                                   check=self.name)
        opts: SegmentationOptions = self.options
        ref_set: Mapping[str, Volume] = inputs["reference"]
        eval_set: Mapping[str, Volume] = inputs["evaluated"]
        requested = list(opts.structures) if opts.structures else list(ref_set)
        try:
            in_ref, _ = match_structures(requested, ref_set, opts.aliases)
        except ValueError as exc:
            raise QAInputError(f"input 'reference': {exc}", check=self.name) from exc
        try:
            in_eval, extra = match_structures(requested, eval_set, opts.aliases)
        except ValueError as exc:
            raise QAInputError(f"input 'evaluated': {exc}", check=self.name) from exc
        image = inputs.get("image")
        rows: list[Measurement] = []
        per_structure: dict[str, Any] = {}
        overlays: dict[str, Any] = {}
        problems: list[QAInputError] = []
        not_applicable: list[str] = []
        for name in requested:
            missing_ref, missing_eval = name not in in_ref, name not in in_eval
            rows += [Measurement("missing_reference", float(missing_ref), "1", name),
                     Measurement("missing_evaluated", float(missing_eval), "1", name)]
            if missing_ref:
                per_structure[name] = {"status": "missing_reference"}
                # in neither set (a prostate for a female patient; an empty evaluated mask
                # counts as absent, as a label map holds every label): no verdict this case
                try:
                    absent = missing_eval or not np.any(_bool(eval_set[in_eval[name]]))
                except (QAInputError, ValueError) as exc:
                    problems.append(_structure_problem(name, exc, {"evaluated": in_eval[name]}))
                    absent = False
                if absent:
                    not_applicable.append(name)
                continue
            names = {"reference_name": in_ref[name], "evaluated_name": in_eval.get(name)}
            try:
                reference = ref_set[in_ref[name]]
                evaluated = (eval_set[in_eval[name]] if not missing_eval
                             else reference.with_array(np.zeros(reference.shape, bool)))
                result = compare_masks(reference, evaluated, opts.tolerance_mm,
                                       method=opts.method, percentile=opts.percentile,
                                       resample=opts.resample)
            except (QAInputError, ValueError) as exc:  # this structure only: NaN rows
                problem = _structure_problem(name, exc, {"reference": in_ref[name],
                                                         "evaluated": in_eval.get(name)})
                problems.append(problem)
                rows += [Measurement(metric, math.nan, unit, name)
                         for metric, (_f, unit, _d, _b) in _PER_STRUCTURE.items()]
                rows += [Measurement(flag, math.nan, "1", name)
                         for flag in ("empty_reference", "empty_evaluated")]
                per_structure[name] = {"status": "error", **names, "error": problem.message}
                continue
            for metric, (field, unit, _d, _b) in _PER_STRUCTURE.items():
                rows.append(Measurement(metric, getattr(result, field), unit, name))
            rows += [Measurement("empty_reference",
                                 float(result.empty in ("reference", "both")), "1", name),
                     Measurement("empty_evaluated",
                                 float(result.empty in ("predicted", "both")), "1", name)]
            if isinstance(image, Volume) and same_grid(image, reference) and \
                    same_grid(reference, evaluated):
                overlays[name] = overlay_payload(np.asarray(image.array),
                                                 _bool(reference), _bool(evaluated),
                                                 reference.spacing)
            per_structure[name] = {
                "status": "missing_evaluated" if missing_eval else "compared", **names,
                "result": result.to_dict(),
            }
        rows.append(Measurement("n_extra_evaluated", float(len(extra)), "structures"))
        details = json_safe({
            "method": opts.method, "tolerance_mm": opts.tolerance_mm,
            "percentile": opts.percentile, "structures": per_structure,
            "extra_evaluated": extra,
            "missing_evaluated": [n for n in requested if n not in in_eval],
            "missing_reference": [n for n in requested if n not in in_ref],
            "not_applicable": not_applicable,
            "not_compared": [n for n, d in per_structure.items() if d["status"] == "error"],
            **({"overlays": overlays} if overlays else {}),
        })
        if any(not math.isfinite(r.value) for r in rows):
            logger.debug("segmentation: some metrics are undefined (NaN) for this case")
        return CheckOutput(measurements=tuple(rows), details=details,
                           problems=tuple(problems))


def _structure_problem(name: str, exc: Exception,
                       set_names: dict[str, str | None]) -> QAInputError:
    """The problem of one structure, naming it and the input it comes from.

    A mask that could not be read keeps its role and file (it is a
    :class:`qa.io.ReaderError` from the lazy structure set); a grid mismatch is the evaluated
    input's (the reference grid is the one compared on); a non-binary mask names its input.
    ``field`` is the structure's name in that input's set (``set_names``: slot -> name), so
    that the engine can name a grouped mask role's own file.
    """
    if isinstance(exc, QAInputError):
        message = exc.message if exc.message.startswith("structure ") else \
            f"structure {name!r}: {exc.message}"
        cls: type[QAInputError] = type(exc)
        where = {"path": exc.path, "field": exc.field, "role": exc.role}
    else:
        text = str(exc)
        slot = ("reference" if text.startswith("reference mask") else "evaluated")
        message = f"input {slot!r}: structure {name!r}: {text}"
        cls, where = QAInputError, {"field": set_names.get(slot)}
    return cls(f"{message} (not compared on this case; the other structures are)",
               check=SegmentationCheck.name, **where)


def _bool(volume: Volume) -> np.ndarray:
    return np.asarray(volume.array) != 0
