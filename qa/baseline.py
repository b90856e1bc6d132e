"""Comparison of a periodic run with the baseline of its protocol.

After commissioning, ``qa baseline set RUN --reason ...`` makes a complete run the baseline of
its protocol (``Store.set_baseline``). Every run of a ``kind: periodic`` protocol is then
compared with the *active* (most recent) baseline of the same protocol name, or of the
protocol named by ``baseline.protocol``:

* **model fingerprint**: the run's model name, version, adapter and SHA-256 (of the weights
  or executable) against the baseline run's (:func:`qa.drift.compare_fingerprints`). Any
  difference gives an ACTION cohort verdict ``baseline / model_fingerprint``: "model changed
  — re-commission"; the model must be commissioned again and a new baseline set. A model
  without SHA-256 cannot be verified (TOLERANCE), and neither can a protocol without a
  baseline (TOLERANCE, "no baseline").
* **constancy**: for every case of the baseline run, every per-case measurement of the run
  (same check id, metric and label) is compared with the baseline's: ``difference = current -
  baseline`` (in the metric's unit) is stored as a measurement of the case with check id
  ``baseline.<check_id>``, check ``baseline``. Where the protocol gives levels
  (``baseline.levels.<check_id>.<metric>[<label>]``), ``|difference|`` is graded against them
  (per-case verdict, statistic ``abs_difference``); a baseline case whose value is missing or
  not finite in this run is ACTION (not measured is not a pass). The constancy set is
  ``baseline.constancy_cases`` when the protocol declares it, else every case of the
  baseline run; constancy cases absent from the run (or from the baseline) are counted
  in the cohort verdict ``baseline / constancy_cases_missing`` (ACTION
  when any). Cases of the run that are not in the baseline (recent clinical cases) are not
  compared. Every compared row (baseline, current, difference) is kept in the cohort detail
  ``baseline / comparison``.

Protocol key (``BaselineSpec``)::

    baseline:
      protocol: "MR-to-sCT pelvis — commissioning"   # optional; default: this protocol's name
      levels:                                         # |current - baseline|, per case
        hu_accuracy:                                  # a check id of the protocol
          mae_hu: {tolerance: {max: 5}, action: {max: 10}}          # HU
          mae_hu[bone]: {tolerance: {max: 15}, action: {max: 30}}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pydantic import BaseModel

from checks.base import Measurement
from qa.protocol import BaselineSpec
from qa.store import Store
from qa.verdicts import Bound, Level, Levels, Verdict, grade, split_metric_key

__all__ = ["BaselineSpec", "BaselinePhase", "baseline_spec", "fingerprint_verdict",
           "compare_with_baseline", "run_baseline_comparison", "BASELINE_CHECK_ID"]

logger = logging.getLogger(__name__)

BASELINE_CHECK_ID = "baseline"
"""Check id of the cohort verdicts and details of the comparison (reserved)."""
_UNCHANGED = Levels(Bound(max=0.0), Bound(max=0.0))


def baseline_spec(protocol: Any) -> BaselineSpec:
    """The protocol's ``baseline`` key as a :class:`BaselineSpec` (empty when absent)."""
    value = getattr(protocol, "baseline", None)
    if value is None:
        return BaselineSpec()
    if isinstance(value, BaselineSpec):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump()
    return BaselineSpec.model_validate(value)


@dataclass
class BaselinePhase:
    """What the comparison stored: its verdicts and the active baseline (None when none)."""

    verdicts: list[Verdict] = field(default_factory=list)
    baseline: dict[str, Any] | None = None


def fingerprint_verdict(model: Mapping[str, Any], baseline: Mapping[str, Any] | None,
                        protocol_name: str,
                        baseline_model: Mapping[str, Any] | None = None) -> Verdict:
    """Cohort verdict ``baseline / model_fingerprint`` of a run's model against the baseline.

    The decision is :func:`qa.drift.compare_fingerprints` (name, version, adapter, SHA-256):
    any change is ACTION "model changed — re-commission"; an unchanged model without a
    SHA-256 (nothing to hash, e.g. ``precomputed``) cannot be verified and is TOLERANCE;
    otherwise OK.

    Parameters
    ----------
    model : mapping
        The run's model: ``name``, ``version``, ``adapter``, ``sha256`` (or the ``model_*``
        keys of a store run record).
    baseline : mapping or None
        The active baseline (``Store.active_baseline``), or None when none is set.
    protocol_name : str
        The protocol whose baseline was looked up (for the message).
    baseline_model : mapping, optional
        The baseline run's model, same keys as ``model`` (default: the baseline row's
        ``model_*`` fields, which carry no adapter).

    Returns
    -------
    Verdict
        value 1 when the model changed, 0 otherwise, NaN without a baseline (TOLERANCE: the
        model cannot be checked). The level is a rule, not a numeric threshold, so the four
        bounds are None.
    """
    if baseline is None:
        return Verdict(None, BASELINE_CHECK_ID, "model_fingerprint", "", "value", math.nan,
                       Level.TOLERANCE, None, None, None, None,
                       f"no baseline is set for protocol {protocol_name!r}: the model "
                       "fingerprint and the constancy cases cannot be checked; set one with "
                       "`qa baseline set RUN --reason TEXT` (TOLERANCE)")
    from qa.drift import compare_fingerprints

    reference = dict(baseline_model if baseline_model is not None else baseline)
    if baseline_model is None:
        reference["model_adapter"] = model.get("adapter", model.get("model_adapter"))
    change = compare_fingerprints(reference, model)
    where = (f"baseline {baseline['baseline_id']}: run {baseline['run_id']}, set "
             f"{pd.Timestamp(baseline['set_at']):%Y-%m-%d} by {baseline['operator']}")
    return Verdict(None, BASELINE_CHECK_ID, "model_fingerprint", "", "value",
                   1.0 if change.changed else 0.0, change.level, None, None, None, None,
                   f"{change.message} ({where}) ({change.level})")


def compare_with_baseline(current: pd.DataFrame, reference: pd.DataFrame,
                          spec: BaselineSpec) -> tuple[pd.DataFrame, list[Verdict], list[str]]:
    """Compare a run's per-case measurements with the baseline run's.

    Parameters
    ----------
    current, reference : pandas.DataFrame
        Per-case measurements (case_id, check_id, metric, label, value, unit) of the run and
        of the baseline run. Only check ids present in both are compared.
    spec : BaselineSpec
        Levels on ``|current - baseline|`` per check id and ``metric[label]``.

    Returns
    -------
    differences : pandas.DataFrame
        case_id, check_id, metric, label, unit, baseline, current, difference (current -
        baseline, NaN when either is not finite); one row per baseline case present in the
        run and metric measured in both; in the run's order.
    verdicts : list of Verdict
        Per-case verdicts (check id ``baseline.<check_id>``, statistic ``abs_difference``) of
        every level key for every baseline case present in the run.
    missing_cases : list of str
        Baseline cases absent from the run (sorted as in the baseline).
    """
    keys = ["case_id", "check_id", "metric", "label"]
    ref = reference[[*keys, "value", "unit"]].rename(columns={"value": "baseline",
                                                              "unit": "baseline_unit"})
    now = current[[*keys, "value", "unit"]].rename(columns={"value": "current"})
    in_baseline = list(dict.fromkeys(ref["case_id"]))
    run_cases = set(now["case_id"])
    if spec.constancy_cases is None:
        base_cases = in_baseline
        missing = [c for c in base_cases if c not in run_cases]
    else:  # declared constancy set: each case must be in both runs
        base_cases = [c for c in spec.constancy_cases if c in set(in_baseline)]
        missing = [c for c in spec.constancy_cases
                   if c not in run_cases or c not in set(in_baseline)]
    merged = now[now["case_id"].isin(set(base_cases))].merge(ref, on=keys, how="inner",
                                                            sort=False)
    merged["difference"] = merged["current"] - merged["baseline"]
    differences = merged[[*keys, "unit", "baseline", "current", "difference"]].reset_index(
        drop=True)

    verdicts = []
    present = [c for c in base_cases if c in run_cases]
    for check_id, levels_by_key in spec.levels.items():
        for key, levels in levels_by_key.items():
            metric, label = split_metric_key(key)
            for case_id in present:
                row = differences[(differences["case_id"] == case_id)
                                  & (differences["check_id"] == check_id)
                                  & (differences["metric"] == metric)
                                  & (differences["label"] == label)]
                verdicts.append(_difference_verdict(case_id, check_id, metric, label, levels,
                                                    row.iloc[0] if len(row) else None, key))
    return differences, verdicts, missing


def run_baseline_comparison(store: Store, run_id: int, protocol: Any) -> BaselinePhase:
    """Compare run ``run_id`` (all cases stored) with the active baseline; store the results.

    Stores, for the running run: the per-case differences (measurements of check id
    ``baseline.<check_id>``), the cohort verdicts ``model_fingerprint`` and
    ``constancy_cases_missing``, the per-case difference verdicts, and the cohort detail
    ``baseline / comparison`` (baseline id, run, who, when, why, model, every compared row,
    missing cases, cases not in the baseline).
    """
    spec = baseline_spec(protocol)
    name = spec.protocol or protocol.name
    run = store.run(run_id)
    model = {key: run[f"model_{key}"] for key in ("name", "version", "adapter", "sha256")}
    baseline = store.active_baseline(name)
    phase = BaselinePhase(baseline=baseline)
    baseline_model = None if baseline is None else store.run(int(baseline["run_id"]))
    phase.verdicts.append(fingerprint_verdict(model, baseline, name, baseline_model))
    if baseline is None:
        store.add_verdicts(run_id, phase.verdicts)
        return phase
    current = _per_case(store, run_id)
    reference = _per_case(store, int(baseline["run_id"]))
    differences, verdicts, missing = compare_with_baseline(current, reference, spec)
    for (case_id, check_id), rows in differences.groupby(["case_id", "check_id"], sort=False):
        store.add_measurements(run_id, case_id, f"{BASELINE_CHECK_ID}.{check_id}",
                               BASELINE_CHECK_ID,
                               [Measurement(r.metric, r.difference, r.unit, r.label)
                                for r in rows.itertuples(index=False)])
    n_missing = float(len(missing))
    phase.verdicts.append(Verdict(
        None, BASELINE_CHECK_ID, "constancy_cases_missing", "", "value", n_missing,
        grade(n_missing, _UNCHANGED), 0.0, 0.0, 0.0, 0.0,
        (f"{len(missing)} case(s) of baseline run {baseline['run_id']} are not in this run "
         f"({', '.join(missing)}): the constancy set must be run in full (ACTION)") if missing
        else f"every case of baseline run {baseline['run_id']} is in this run (OK)"))
    phase.verdicts.extend(verdicts)
    store.add_details(run_id, None, BASELINE_CHECK_ID, {"comparison": {
        "baseline": baseline, "compared_with_protocol": name, "model": model,
        "rows": differences.to_dict(orient="records"), "missing_cases": missing,
        "cases_not_in_baseline": sorted(set(current["case_id"]) - set(reference["case_id"])),
    }})
    store.add_verdicts(run_id, phase.verdicts)
    return phase


def _per_case(store: Store, run_id: int) -> pd.DataFrame:
    measured = store.measurements(run_id)
    measured = measured[measured["case_id"].notna()]
    return measured[~measured["check_id"].str.startswith(f"{BASELINE_CHECK_ID}.")]


def _fixed(value: float, message: str) -> Verdict:
    return Verdict(None, BASELINE_CHECK_ID, "model_fingerprint", "", "value", value,
                   grade(value, _UNCHANGED), 0.0, 0.0, 0.0, 0.0, message)


def _difference_verdict(case_id: str, check_id: str, metric: str, label: str, levels: Levels,
                        row: Any, key: str) -> Verdict:
    if row is None or not math.isfinite(row.difference):
        value = math.nan
        why = ("was not measured in this run" if row is None
               else f"is not finite (baseline {row.baseline}, now {row.current})")
        message = f"{key} of check {check_id!r} {why}, so it cannot be compared (ACTION)"
        level = Level.ACTION
    else:
        value = abs(float(row.difference))
        level = grade(value, levels)
        unit = "" if row.unit in ("", "1") else f" {row.unit}"
        shown = (f"|{key} - baseline| = {value:.4g}{unit} (now {row.current:.5g}, baseline "
                 f"{row.baseline:.5g})")
        if level is Level.OK:
            message = f"{shown} within tolerance {levels.tolerance.describe(row.unit)} (OK)"
        elif level is Level.TOLERANCE:
            message = (f"{shown} outside tolerance {levels.tolerance.describe(row.unit)}, "
                       f"within action {levels.action.describe(row.unit)} (TOLERANCE)")
        else:
            message = f"{shown} outside action {levels.action.describe(row.unit)} (ACTION)"
    return Verdict(case_id, f"{BASELINE_CHECK_ID}.{check_id}", metric, label, "abs_difference",
                   value, level, levels.tolerance.min, levels.tolerance.max, levels.action.min,
                   levels.action.max, message)
