"""The machine-readable summary of a run that ``qa run --json FILE`` writes.

Strict JSON (non-finite numbers as ``null``), one object:

``run_id``, ``run_uid``, ``status``, ``exit_code``, ``exit_meaning``, ``protocol`` (name, kind,
sha256), ``model`` (name, version, adapter, sha256), ``operator``, ``started_at``,
``finished_at`` (ISO 8601 UTC), ``verdicts`` (count per level), ``worst_level``,
``cases_in_table``, ``cases_run``, ``cases_with_errors``, ``cohort_checks_with_errors``,
``validation_success``, ``not_ok`` (every TOLERANCE/ACTION verdict: case_id (null for a
cohort verdict), check_id, metric, label, statistic, value, level, message), ``errors``
(case_id, check_id, role, path, field, message), then what the caller adds (``report``,
``junit``, ``store``).

A run that could not start gets ``{"exit_code": 40, "exit_meaning": ..., "error": ...,
"protocol_path": ...}`` (:func:`not_started_summary`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qa.exitcodes import ExitCode
from qa.store import Store, json_safe

__all__ = ["run_summary", "not_started_summary", "write_json"]

_VERDICT_FIELDS = ("case_id", "check_id", "metric", "label", "statistic", "value", "level",
                   "message")
_ERROR_FIELDS = ("case_id", "check_id", "role", "path", "field", "message")


def run_summary(store: Store, run_id: int,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary of a stored run as a JSON-ready dict (``extra`` keys appended)."""
    run = store.run(run_id)
    stored = dict(run["summary"] or {})
    verdicts = store.verdicts(run_id)
    not_ok = verdicts[verdicts["level"] != "OK"]
    errors = store.errors(run_id)
    summary: dict[str, Any] = {
        "run_id": run_id, "run_uid": run["uid"], "status": run["status"],
        "exit_code": run["exit_code"],
        "exit_meaning": stored.get("exit_meaning"),
        "protocol": {"name": run["protocol_name"], "kind": run["protocol_kind"],
                     "sha256": run["protocol_hash"]},
        "model": {"name": run["model_name"], "version": run["model_version"],
                  "adapter": run["model_adapter"], "sha256": run["model_sha256"]},
        "operator": run["operator"],
        "started_at": run["started_at"], "finished_at": run["finished_at"],
    }
    for key in ("verdicts", "worst_level", "cases_in_table", "cases_run", "cases_with_errors",
                "cohort_checks_with_errors", "validation_success"):
        summary[key] = stored.get(key)
    summary["not_ok"] = [{field: _plain(getattr(row, field)) for field in _VERDICT_FIELDS}
                         for row in not_ok.itertuples(index=False)]
    summary["errors"] = [{field: _plain(getattr(row, field)) for field in _ERROR_FIELDS}
                         for row in errors.itertuples(index=False)]
    summary.update(extra or {})
    return summary


def not_started_summary(protocol_path: str | Path, error: BaseException) -> dict[str, Any]:
    """The summary of a run that could not start (nothing stored)."""
    code = ExitCode.NOT_STARTED
    return {"run_id": None, "exit_code": int(code), "exit_meaning": code.meaning,
            "error": str(error), "protocol_path": str(protocol_path)}


def write_json(summary: dict[str, Any], path: str | Path) -> Path:
    """Write ``summary`` as strict, indented JSON to ``path``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(summary), allow_nan=False, ensure_ascii=False, indent=2)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _plain(value: Any) -> Any:
    """None for pandas' missing markers, the value otherwise."""
    if value is None:
        return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value
