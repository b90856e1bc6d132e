"""Input drift and model-change detection for periodic QA.

Each month's cases are described by one row of *features* per case: acquisition metadata
(scanner, kVp, slice thickness, pixel spacing, MR field strength ...) and intensity summaries
(HU histogram percentiles inside the body). :func:`image_features` computes such a row from a
:class:`~qa.volume.Volume` (its de-identified DICOM metadata and its voxels); case-table
attribute columns can serve as features too.

:func:`detect_input_drift` compares a month's feature frame with the commissioning cohort's,
two ways:

1. **Expectations** (great_expectations, ephemeral context, as in :mod:`qa.validation`): a
   suite built from the commissioning frame by :func:`build_drift_suite` — a categorical
   feature must take one of the commissioning values; a numeric feature must lie in the
   commissioning range widened on each side by ``margin_fraction`` × (max − min) (default
   0.25; a feature constant at commissioning, such as kVp, must keep that exact value);
   a feature without missing values at commissioning must stay without.
2. **Distribution distance** per numeric feature: the two-sample Kolmogorov–Smirnov
   statistic ``D`` and its p-value (``scipy.stats.ks_2samp``, exact for small samples), and
   the shift of the median in the feature's unit. A feature is flagged when ``p < ks_alpha``
   (default 0.01). With few cases the test has little power (10 commissioning against 3
   monthly cases cannot reach p < 0.01 even when all 3 lie beyond every commissioning value:
   p = 2 / C(13, 3) = 0.007 is the floor for 10 vs 3); the expectations are the primary
   signal, the distance says how far the distribution moved.

Each drifted feature becomes a :class:`DriftFinding` naming the feature, what commissioning
allowed, and the cases and values that moved.

:func:`compare_fingerprints` compares a run's model fingerprint (name, version, adapter,
SHA-256 of the weights or executable) with its baseline's: any difference without a new
commissioning is an ACTION ("model changed — re-commission").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from qa._drift_records import (
    DriftFinding,
    DriftReport,
    DriftSuite,
    FeatureDistance,
    FeatureExpectation,
    ModelChange,
)
from qa.validation import ValidationReport, _jsonable, _run
from qa.verdicts import Level
from qa.volume import Volume

__all__ = [
    "DEFAULT_MARGIN_FRACTION", "DEFAULT_KS_ALPHA", "DEFAULT_PERCENTILES", "FeatureExpectation",
    "DriftSuite", "FeatureDistance", "DriftFinding", "DriftReport", "ModelChange",
    "image_features", "build_drift_suite", "detect_input_drift", "compare_fingerprints",
]

logger = logging.getLogger(__name__)

DEFAULT_MARGIN_FRACTION = 0.25
"""Numeric ranges are widened by this fraction of the commissioning range on each side."""
DEFAULT_KS_ALPHA = 0.01
"""Significance level of the per-feature two-sample KS test."""
DEFAULT_PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
"""Intensity percentiles computed by :func:`image_features`."""
_METADATA_FEATURES = ("manufacturer", "manufacturer_model_name", "convolution_kernel", "kvp",
                      "field_strength_t")
_NOT_FEATURES = ("case_id",)


def image_features(volume: Volume, mask: Volume | None = None, *, intensity_name: str = "hu",
                   percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> dict[str, Any]:
    """One case's drift features from an image (and optionally a mask on its grid).

    Parameters
    ----------
    volume : Volume
        The image; its ``metadata`` holds the de-identified DICOM keys of :mod:`qa.io.deid`.
    mask : Volume, optional
        Voxels to summarise (e.g. the body), same grid as ``volume``; default all voxels.
    intensity_name : str
        Prefix of the percentile keys, naming the unit: ``"hu"`` for CT, ``"mr_au"`` for MR.
    percentiles : sequence of float
        Percentiles in [0, 100] (``numpy.percentile``, linear interpolation).

    Returns
    -------
    dict
        ``slice_thickness_mm`` (DICOM SliceThickness when present, else the z spacing),
        ``pixel_spacing_mm`` (mean in-plane spacing), the metadata keys present among
        ``manufacturer, manufacturer_model_name, convolution_kernel, kvp, field_strength_t``,
        and ``<intensity_name>_p<NN>`` for each percentile (``hu_p05`` ...).

    Raises
    ------
    ValueError
        The mask's shape differs from the image's, or it selects no finite voxel.
    """
    array = np.asarray(volume.array, dtype=float)
    if mask is not None:
        if mask.shape != volume.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the image shape "
                             f"{volume.shape}; resample the mask onto the image grid first.")
        array = array[np.asarray(mask.array) > 0]
    values = array[np.isfinite(array)]
    if values.size == 0:
        raise ValueError("the mask selects no finite voxel of the image: check the mask "
                         "(empty?) and the image (all NaN?).")
    metadata = dict(volume.metadata or {})
    features: dict[str, Any] = {
        "slice_thickness_mm": float(metadata.get("slice_thickness_mm", volume.spacing[0])),
        "pixel_spacing_mm": float(np.mean(volume.spacing[1:])),
    }
    for key in _METADATA_FEATURES:
        if metadata.get(key) is not None:
            features[key] = metadata[key]
    for q, value in zip(percentiles, np.percentile(values, list(percentiles)), strict=True):
        features[f"{intensity_name}_p{q:02g}"] = float(value)
    return features


def build_drift_suite(reference: pd.DataFrame, *, categorical: Sequence[str] | None = None,
                      numeric: Sequence[str] | None = None,
                      margin_fraction: float = DEFAULT_MARGIN_FRACTION) -> DriftSuite:
    """Expectations from the commissioning feature frame (one row per case).

    Parameters
    ----------
    reference : pandas.DataFrame
        Commissioning features; a ``case_id`` column is carried, never a feature.
    categorical, numeric : sequence of str, optional
        Feature columns of each kind; by default every other column, numeric when its dtype
        is numeric, categorical otherwise (values compared as text).
    margin_fraction : float
        Widening of each numeric range, as a fraction (>= 0) of its width, on each side.

    Raises
    ------
    ValueError
        An empty frame, a named column missing, a numeric feature with no finite value, or a
        negative margin.
    """
    if not (margin_fraction >= 0) or not math.isfinite(margin_fraction):
        raise ValueError(f"margin_fraction must be a finite number >= 0, got "
                         f"{margin_fraction!r}.")
    if reference.empty:
        raise ValueError("the commissioning feature frame is empty: drift needs the "
                         "commissioning cases' features.")
    categorical, numeric = _kinds(reference, categorical, numeric)
    expectations = []
    for column in categorical:
        values = reference[column]
        present = sorted({str(v) for v in values if not _missing(v)})
        expectations.append(FeatureExpectation(column, "categorical", tuple(present), None,
                                               None, None, None, not values.map(_missing).any()))
    for column in numeric:
        raw = reference[column]
        values = pd.to_numeric(raw, errors="coerce").astype(float).to_numpy()
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise ValueError(f"numeric drift feature {column!r} has no finite value in the "
                             "commissioning frame; declare it categorical or drop it.")
        low, high = float(finite.min()), float(finite.max())
        margin = margin_fraction * (high - low)
        expectations.append(FeatureExpectation(column, "numeric", None, low - margin,
                                               high + margin, low, high,
                                               bool(finite.size == len(values))))
    return DriftSuite(tuple(expectations), float(margin_fraction), int(len(reference)))


def detect_input_drift(reference: pd.DataFrame, current: pd.DataFrame, *,
                       suite: DriftSuite | None = None,
                       categorical: Sequence[str] | None = None,
                       numeric: Sequence[str] | None = None,
                       margin_fraction: float = DEFAULT_MARGIN_FRACTION,
                       ks_alpha: float = DEFAULT_KS_ALPHA) -> DriftReport:
    """Compare a month's features with the commissioning cohort's (see the module notes).

    Parameters
    ----------
    reference : pandas.DataFrame
        Commissioning features, one row per case (``case_id`` column recommended).
    current : pandas.DataFrame
        The month's features, same columns.
    suite : DriftSuite, optional
        Reuse a suite already built from ``reference`` (else built here with
        ``categorical``, ``numeric`` and ``margin_fraction``).
    ks_alpha : float
        Level in (0, 1) of the per-feature KS test.

    Returns
    -------
    DriftReport
        ``findings`` empty when nothing moved.

    Raises
    ------
    ValueError
        ``current`` is empty, or ``ks_alpha`` is outside (0, 1).
    """
    if not 0.0 < ks_alpha < 1.0:
        raise ValueError(f"ks_alpha must be in (0, 1), got {ks_alpha!r}.")
    if current.empty:
        raise ValueError("the month's feature frame is empty: no case to compare with "
                         "commissioning.")
    if suite is None:
        suite = build_drift_suite(reference, categorical=categorical, numeric=numeric,
                                  margin_fraction=margin_fraction)
    frame = current.reset_index(drop=True).copy()
    steps: list[tuple[str, dict[str, Any], str]] = []
    for item in suite.expectations:
        steps.append(("ExpectColumnToExist", {"column": item.feature},
                      f"feature {item.feature} is present"))
        if item.feature not in frame.columns:
            continue
        if item.kind == "categorical":
            frame[item.feature] = [None if _missing(v) else str(v) for v in frame[item.feature]]
            steps.append(("ExpectColumnValuesToBeInSet",
                          {"column": item.feature, "value_set": list(item.value_set or ())},
                          f"{item.feature} is {item.describe()}"))
        else:
            frame[item.feature] = pd.to_numeric(frame[item.feature], errors="coerce")
            steps.append(("ExpectColumnValuesToBeBetween",
                          {"column": item.feature, "min_value": item.min_value,
                           "max_value": item.max_value},
                          f"{item.feature} is {item.describe()}"))
        if item.not_null:
            steps.append(("ExpectColumnValuesToNotBeNull", {"column": item.feature},
                          f"{item.feature} has a value for every case"))
    validation = _run("input_drift", frame, steps, with_row=False)
    distances = tuple(_distance(item.feature, reference, frame)
                      for item in suite.expectations
                      if item.kind == "numeric" and item.feature in frame.columns)
    findings = _findings(suite, frame, validation, distances, ks_alpha)
    for finding in findings:
        logger.info("input drift: %s", finding.message)
    return DriftReport(suite, validation, distances, findings, float(ks_alpha))


def compare_fingerprints(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> ModelChange:
    """Compare two model fingerprints (``ModelFingerprint.to_dict()`` or store run records).

    Compared: ``name``, ``version``, ``adapter`` and ``sha256`` (run records' ``model_*``
    keys are accepted). The device and library versions are not part of the model. A
    change in any compared field is ACTION "model changed — re-commission"; a fingerprint
    without SHA-256 (a precomputed output without a model file) cannot be verified and is
    TOLERANCE; otherwise OK.
    """
    fields = ("name", "version", "adapter", "sha256")
    old = {f: _fingerprint_field(baseline, f) for f in fields}
    new = {f: _fingerprint_field(current, f) for f in fields}
    changed = tuple(f for f in fields if old[f] != new[f])
    if changed:
        what = "; ".join(f"{f} {_short(old[f])} -> {_short(new[f])}" for f in changed)
        message = (f"model changed — re-commission: {what}. Runs after this change are not "
                   "covered by the baseline's commissioning.")
        return ModelChange(True, changed, old, new, Level.ACTION, message)
    if new["sha256"] is None:
        return ModelChange(False, (), old, new, Level.TOLERANCE,
                           "the model has no SHA-256 fingerprint (no model file): a silent "
                           "replacement cannot be detected; give model.path to fingerprint it")
    return ModelChange(False, (), old, new, Level.OK,
                       f"model unchanged since the baseline (sha256 {_short(new['sha256'])})")


# -- helpers ---------------------------------------------------------------------------------

def _kinds(reference: pd.DataFrame, categorical: Sequence[str] | None,
           numeric: Sequence[str] | None) -> tuple[list[str], list[str]]:
    categorical = None if categorical is None else list(dict.fromkeys(categorical))
    numeric = None if numeric is None else list(dict.fromkeys(numeric))
    both = sorted(set(categorical or ()) & set(numeric or ()))
    if both:
        raise ValueError(f"drift feature(s) {both} are declared both categorical and numeric; "
                         "declare each once.")
    named = [*(categorical or ()), *(numeric or ())]
    missing = [c for c in named if c not in reference.columns]
    if missing:
        raise ValueError(f"drift feature column(s) {missing} are not in the commissioning "
                         f"frame (columns: {list(reference.columns)}).")
    if categorical is None and numeric is None:
        columns = [c for c in reference.columns if c not in _NOT_FEATURES]
        numeric = [c for c in columns if pd.api.types.is_numeric_dtype(reference[c])
                   and not pd.api.types.is_bool_dtype(reference[c])]
        categorical = [c for c in columns if c not in numeric]
    return list(categorical or ()), list(numeric or ())


def _distance(feature: str, reference: pd.DataFrame, current: pd.DataFrame) -> FeatureDistance:
    from scipy.stats import ks_2samp

    ref = pd.to_numeric(reference[feature], errors="coerce").astype(float).to_numpy()
    cur = pd.to_numeric(current[feature], errors="coerce").astype(float).to_numpy()
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        return FeatureDistance(feature, int(ref.size), int(cur.size), math.nan, math.nan,
                               math.nan, math.nan, math.nan)
    test = ks_2samp(ref, cur)
    ref_median, cur_median = float(np.median(ref)), float(np.median(cur))
    return FeatureDistance(feature, int(ref.size), int(cur.size), float(test.statistic),
                           float(test.pvalue), ref_median, cur_median, cur_median - ref_median)


def _findings(suite: DriftSuite, frame: pd.DataFrame, validation: ValidationReport,
              distances: tuple[FeatureDistance, ...], ks_alpha: float
              ) -> tuple[DriftFinding, ...]:
    by_feature: dict[str, list[dict[str, Any]]] = {}
    for result in validation.results:
        by_feature.setdefault(result["column"], []).append(result)
    distance_of = {d.feature: d for d in distances}
    findings = []
    for item in suite.expectations:
        reasons, moved = [], []
        for result in by_feature.get(item.feature, []):
            if result["success"]:
                continue
            kind = result["expectation_type"]
            reason = {"expect_column_to_exist": "missing_column",
                      "expect_column_values_to_not_be_null": "missing_values"}.get(
                kind, "outside_commissioning")
            reasons.append(reason)
            if reason == "outside_commissioning":
                moved.extend({"case_id": u["case_id"], "value": u["value"]}
                             for u in result["unexpected"])
        distance = distance_of.get(item.feature)
        if distance is not None and distance.ks_p_value < ks_alpha:
            reasons.append("distribution_shift")
        if not reasons:
            continue
        current = tuple(_jsonable(v) for v in frame[item.feature]) \
            if item.feature in frame.columns else ()
        findings.append(DriftFinding(item.feature, item.kind, tuple(dict.fromkeys(reasons)),
                                     item.describe(), tuple(moved), current, distance,
                                     _message(item, reasons, moved, distance)))
    return tuple(findings)


def _message(item: FeatureExpectation, reasons: list[str], moved: list[dict[str, Any]],
             distance: FeatureDistance | None) -> str:
    parts = []
    if "missing_column" in reasons:
        parts.append("the column is missing from this month's data")
    if moved:
        shown = ", ".join(f"{m['case_id']}: {_value(m['value'])}" for m in moved[:5])
        more = f" and {len(moved) - 5} more" if len(moved) > 5 else ""
        parts.append(f"{len(moved)} case(s) outside commissioning ({shown}{more})")
    if "missing_values" in reasons:
        parts.append("some cases have no value")
    if "distribution_shift" in reasons and distance is not None:
        parts.append(f"distribution shifted (KS D = {distance.ks_statistic:.2f}, "
                     f"p = {distance.ks_p_value:.2g})")
    if distance is not None and math.isfinite(distance.median_shift) and distance.median_shift:
        parts.append(f"median {distance.reference_median:.4g} -> {distance.current_median:.4g}")
    return f"{item.feature}: {'; '.join(parts)}; commissioning: {item.describe()}"


def _fingerprint_field(record: Mapping[str, Any], field: str) -> Any:
    value = record.get(field, record.get(f"model_{field}"))
    return None if value in (None, "") else str(value)


def _short(value: Any) -> str:
    if value is None:
        return "none"
    text = str(value)
    return text[:12] if len(text) == 64 else repr(text)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
