"""``qa history``: the runs of the store and their verdicts over time, one row per run.

Reads the store only. Each row: run id, start time (UTC), protocol, kind, model version,
status, exit code, worst level, the number of verdicts per level, and whether the run is a
baseline (``active`` / ``former``). With ``metric``, one more column per cohort statistic of
that metric graded in the runs (``mean(mae_hu)``, ``p95(mae_hu[bone])``, cohort-check values
``value(...)``, the baseline verdicts ``value(model_fingerprint)`` ...), holding the value and
its level, e.g. ``52.5 OK``, and one per cohort-level measurement of that metric that no
verdict grades (a cohort check's result without levels: the value alone). Numbers are the
stored values, never recomputed.
"""

from __future__ import annotations

import math

import pandas as pd

from qa.store import Store

__all__ = ["history_frame", "format_history", "parse_metric"]

_LEVELS = ("OK", "TOLERANCE", "ACTION")


def parse_metric(text: str) -> tuple[str | None, str, str | None]:
    """``"[check_id.]metric[label]"`` -> ``(check_id or None, metric, label or None)``.

    A label of None matches every label; ``"mae_hu[]"`` is not accepted, write ``mae_hu``
    and every label is shown.

    Examples
    --------
    >>> parse_metric("hu_accuracy.mae_hu[bone]")
    ('hu_accuracy', 'mae_hu', 'bone')
    >>> parse_metric("mae_hu")
    (None, 'mae_hu', None)
    """
    base, label = text, None
    if text.endswith("]") and "[" in text:
        base, _, label = text[:-1].partition("[")
    check_id, _, metric = base.rpartition(".")
    if not metric or label == "":
        raise ValueError(f"--metric {text!r}: write metric, metric[label] or "
                         "check_id.metric[label], e.g. mae_hu or hu_accuracy.mae_hu[bone]")
    return check_id or None, metric, label


def history_frame(store: Store, protocol: str | None = None,
                  metric: str | None = None) -> pd.DataFrame:
    """One row per run (oldest first), optionally of one protocol name, with ``metric``'s
    cohort statistics as extra columns (see the module docstring)."""
    runs = store.runs()
    if protocol is not None:
        runs = runs[runs["protocol_name"] == protocol]
    baselines = store.baselines()
    status_of = {}
    for row in baselines.itertuples(index=False):
        if row.active or row.run_id not in status_of:
            status_of[row.run_id] = "active" if row.active else "former"
    wanted = parse_metric(metric) if metric else None
    records, statistic_columns = [], {}
    for run in runs.itertuples(index=False):
        verdicts = store.verdicts(run.run_id)
        counts = {level: int((verdicts["level"] == level).sum()) for level in _LEVELS}
        worst = next((lv for lv in reversed(_LEVELS) if counts[lv]), "OK" if len(verdicts)
                     else "")
        record = {"run_id": run.run_id, "started_at": run.started_at.strftime("%Y-%m-%d %H:%M"),
                  "protocol": run.protocol_name, "kind": run.protocol_kind,
                  "model": f"{run.model_name} {run.model_version}", "status": run.status,
                  "exit": "" if pd.isna(run.exit_code) else int(run.exit_code),
                  "worst": worst, **counts, "baseline": status_of.get(run.run_id, "")}
        if wanted is not None:
            measured = store.measurements(run.run_id)
            cohort_rows = measured[measured["case_id"].isna()]
            for key, cell in _statistics(verdicts, cohort_rows, wanted).items():
                statistic_columns.setdefault(key, None)
                record[key] = cell
        records.append(record)
    columns = ["run_id", "started_at", "protocol", "kind", "model", "status", "exit", "worst",
               *_LEVELS, "baseline", *statistic_columns]
    return pd.DataFrame(records, columns=columns).fillna({c: "" for c in statistic_columns})


def format_history(frame: pd.DataFrame) -> str:
    """The history table as aligned text (what ``qa history`` prints)."""
    if frame.empty:
        return "no runs"
    return frame.to_string(index=False)


def _statistics(verdicts: pd.DataFrame, cohort_measurements: pd.DataFrame,
                wanted: tuple[str | None, str, str | None]) -> dict[str, str]:
    """Cells ``check_id.statistic(metric[label])`` -> ``"value LEVEL"``: the cohort verdicts
    of the metric, then the cohort-level measurements that no verdict grades (no level)."""
    cells = {}
    for row in _matching(verdicts[verdicts["case_id"].isna()], wanted).itertuples(index=False):
        cells[_column(row.check_id, row.statistic, row.metric, row.label, wanted)] = (
            f"{_number(row.value)} {row.level}")
    for row in _matching(cohort_measurements, wanted).itertuples(index=False):
        name = _column(row.check_id, "value", row.metric, row.label, wanted)
        cells.setdefault(name, _number(row.value))
    return cells


def _matching(frame: pd.DataFrame, wanted: tuple[str | None, str, str | None]) -> pd.DataFrame:
    check_id, metric, label = wanted
    rows = frame[frame["metric"] == metric]
    if check_id is not None:
        rows = rows[rows["check_id"] == check_id]
    if label is not None:
        rows = rows[rows["label"] == label]
    return rows


def _column(check_id: str, statistic: str, metric: str, label: str,
            wanted: tuple[str | None, str, str | None]) -> str:
    key = f"{metric}[{label}]" if label else metric
    name = f"{statistic}({key})"
    return name if wanted[0] is not None else f"{check_id}.{name}"


def _number(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.4g}"
