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
from qa.volume import GridMismatchError, Volume, same_grid

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
        for name in requested:
            missing_ref, missing_eval = name not in in_ref, name not in in_eval
            rows += [Measurement("missing_reference", float(missing_ref), "1", name),
                     Measurement("missing_evaluated", float(missing_eval), "1", name)]
            if missing_ref:
                per_structure[name] = {"status": "missing_reference"}
                continue
            reference = ref_set[in_ref[name]]
            evaluated = (eval_set[in_eval[name]] if not missing_eval
                         else reference.with_array(np.zeros(reference.shape, bool)))
            try:
                result = compare_masks(reference, evaluated, opts.tolerance_mm,
                                       method=opts.method, percentile=opts.percentile,
                                       resample=opts.resample)
            except GridMismatchError as exc:
                raise GridMismatchError(f"input 'evaluated': structure {name!r}: {exc}") from exc
            except ValueError as exc:
                raise QAInputError(f"structure {name!r}: {exc}", check=self.name) from exc
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
                "status": "missing_evaluated" if missing_eval else "compared",
                "reference_name": in_ref[name], "evaluated_name": in_eval.get(name),
                "result": result.to_dict(),
            }
        rows.append(Measurement("n_extra_evaluated", float(len(extra)), "structures"))
        details = json_safe({
            "method": opts.method, "tolerance_mm": opts.tolerance_mm,
            "percentile": opts.percentile, "structures": per_structure,
            "extra_evaluated": extra,
            "missing_evaluated": [n for n in requested if n not in in_eval],
            "missing_reference": [n for n in requested if n not in in_ref],
            # in neither set (a prostate for a female patient; an empty evaluated mask counts
            # as absent, as a label map holds every label): no verdict for this case
            "not_applicable": [n for n in requested if n not in in_ref and (
                n not in in_eval or not np.any(_bool(eval_set[in_eval[n]])))],
            **({"overlays": overlays} if overlays else {}),
        })
        if any(not math.isfinite(r.value) for r in rows):
            logger.debug("segmentation: some metrics are undefined (NaN) for this case")
        return CheckOutput(measurements=tuple(rows), details=details)


def _bool(volume: Volume) -> np.ndarray:
    return np.asarray(volume.array) != 0
