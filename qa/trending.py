"""Control charts of a periodic protocol's cohort aggregates, run after each periodic run.

For every entry of the protocol's ``trend:`` key the engine charts one cohort aggregate
(e.g. the mean bone MAE of ``hu_body``) over the protocol's complete periodic runs since its
active baseline, this run last, with :mod:`qa.trend` (I-MR, EWMA, CUSUM). The first
``baseline_points`` runs estimate the centre and sigma (limits flagged provisional below 8);
an alarm at this run becomes a cohort verdict (default TOLERANCE: a statistical signal to
review), and each chart is stored as a cohort detail of check id ``trend`` for the report.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from qa.store import Store
from qa.trend import alarm_verdicts, cohort_series, cusum_chart, ewma_chart, imr_chart
from qa.verdicts import Level, Verdict, split_metric_key

__all__ = ["TREND_CHECK_ID", "DRIFT_CHECK_ID", "IMAGE_METADATA_CHECK_ID", "run_trend_charts",
           "run_drift_check", "drift_features"]

logger = logging.getLogger(__name__)

#: Check id of the stored chart details.
TREND_CHECK_ID = "trend"
#: Check id of the input-drift verdicts.
DRIFT_CHECK_ID = "drift"
#: Check id of the per-case image metadata details the runner stores (one row per role).
IMAGE_METADATA_CHECK_ID = "image_metadata"


def run_trend_charts(store: Store, run_id: int, protocol: Any) -> list[Verdict]:
    """Chart each ``trend:`` aggregate of ``protocol`` up to run ``run_id``; store the chart
    details and the alarm verdicts of this run; return those verdicts.

    Runs charted: complete runs of the same protocol name and kind ``periodic`` started
    after the active baseline's run (all of them when no baseline is set), then this run.
    With fewer than ``baseline_points + 1`` runs there is nothing to judge yet: the chart is
    stored with ``"status": "collecting"`` and no verdict.
    """
    specs = list(getattr(protocol, "trend", None) or [])
    if not specs:
        return []
    run_ids = _charted_runs(store, run_id, protocol.name)
    verdicts_frame = pd.concat([store.verdicts(r) for r in run_ids], ignore_index=True)
    out: list[Verdict] = []
    details: dict[str, Any] = {}
    for spec in specs:
        metric, label = split_metric_key(spec.metric)
        series = cohort_series(verdicts_frame, check_id=spec.check, metric=metric,
                               label=label, statistic=spec.statistic)
        key = f"{spec.check}.{spec.metric} {spec.statistic}"
        if run_id not in series.index:
            details[key] = {"status": "no value for this run", "runs": list(series.index)}
            continue
        if len(series) < spec.baseline_points + 1:
            details[key] = {"status": "collecting", "runs": [int(r) for r in series.index],
                            "values": series.tolist(),
                            "needed": spec.baseline_points + 1}
            continue
        details[key] = {"status": "charted", "runs": [int(r) for r in series.index],
                        "charts": {}}
        for name in spec.charts:
            chart = _chart(name, series, spec)
            details[key]["charts"][name] = chart.to_dict()
            out.extend(alarm_verdicts(chart, check_id=spec.check, metric=metric, label=label,
                                      aggregate=spec.statistic, level=spec.level))
    store.add_details(run_id, None, TREND_CHECK_ID, details)
    store.add_verdicts(run_id, out)
    return out


def run_drift_check(store: Store, run_id: int, protocol: Any) -> list[Verdict]:
    """Compare the ``drift.features`` (case attributes such as ``scanner``, or image
    features ``<role>.<feature>`` the runner measured, e.g. ``ct.kvp``, ``ct.p99``) of this
    run with those of the active baseline's run
    (:func:`qa.drift.detect_input_drift`); store the report as validation scope
    ``input_drift`` and one cohort verdict per feature that moved (metric ``input_drift``,
    label = feature, level ``drift.level``). Nothing happens without a baseline or features.
    """
    spec = getattr(protocol, "drift", None)
    if spec is None or not spec.features:
        return []
    from qa.baseline import baseline_spec
    from qa.drift import detect_input_drift

    name = baseline_spec(protocol).protocol or protocol.name
    baseline = store.active_baseline(name)
    if baseline is None:
        return []
    reference = drift_features(store, int(baseline["run_id"]), spec.features)
    current = drift_features(store, run_id, spec.features, ok_only=True)
    report = detect_input_drift(reference, current)
    store.add_validation(run_id, "input_drift", not report.drifted, report.to_dict(),
                         statistics=report.validation.statistics)
    verdicts = [Verdict(None, DRIFT_CHECK_ID, "input_drift", f.feature, "value", 1.0,
                        Level(spec.level), None, None, None, None,
                        f"input drift since baseline run {baseline['run_id']}: {f.message}")
                for f in report.findings]
    store.add_verdicts(run_id, verdicts)
    return verdicts


def drift_features(store: Store, run_id: int, features: list[str], *,
                   ok_only: bool = False) -> pd.DataFrame:
    """One row per case of ``run_id``: ``case_id`` and each feature, from the case attributes
    or, for ``<role>.<feature>``, from the image metadata the runner stored."""
    cases = store.cases(run_id)
    if ok_only:
        cases = cases[cases["status"] == "ok"]
    frame = cases[["case_id"]].copy()
    stored = store.details(run_id, check_id=IMAGE_METADATA_CHECK_ID)
    image = {(row.case_id, row.name): row.payload for row in stored.itertuples(index=False)}
    for feature in features:
        role, dot, key = feature.partition(".")
        if dot and feature not in cases.columns:
            frame[feature] = [(image.get((c, role)) or {}).get(key) for c in frame["case_id"]]
        else:
            frame[feature] = cases[feature] if feature in cases.columns else None
    return frame.reset_index(drop=True)


def _chart(name: str, series: pd.Series, spec: Any) -> Any:
    labels = [str(r) for r in series.index]
    if name == "imr":
        return imr_chart(series, baseline=spec.baseline_points, run_rules=spec.run_rules,
                         labels=labels)
    if name == "ewma":
        return ewma_chart(series, baseline=spec.baseline_points, labels=labels)
    return cusum_chart(series, baseline=spec.baseline_points, labels=labels)


def _charted_runs(store: Store, run_id: int, protocol_name: str) -> list[int]:
    runs = store.runs()
    runs = runs[(runs["protocol_name"] == protocol_name) & (runs["protocol_kind"] == "periodic")
                & ((runs["status"] == "complete") | (runs["run_id"] == run_id))]
    baseline = store.active_baseline(protocol_name)
    if baseline is not None:
        runs = runs[runs["run_id"] > int(baseline["run_id"])]
    ordered = runs.sort_values(["started_at", "run_id"])["run_id"].astype(int).tolist()
    return [r for r in ordered if r != run_id] + [run_id]
