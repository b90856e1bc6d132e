"""Audit trail rules of the engine: a change of tolerance or action levels needs a reason.

A run of a protocol whose tolerance or action levels differ from those of the previous run of
the same protocol name and kind (any status) does not start unless a reason is given
(``qa run --reason TEXT``); the change is then recorded as a ``tolerance_changed`` audit event
of the new run, in the same transaction as the run (``qa audit`` lists them). QATrack+ asks
for the same when a reference or tolerance changes. The kind matters: the first ``periodic``
run after a ``commissioning`` run of the same name (whose baseline it is compared with)
starts a new phase with its own constancy levels, which is not a change of levels.

The levels compared, read from the protocol YAML as written (the stored ``protocol_text`` of
the previous run and the text of the new protocol), numbers compared as floats:

* ``checks[ID].tolerances[KEY]``: per-case levels of each check (ID: its ``id``, else its
  ``check`` name; KEY: ``metric`` or ``metric[label]``);
* ``checks[ID].cohort[METRIC.STATISTIC]``: cohort levels;
* ``baseline.levels[ID][KEY]``: levels on the difference to the baseline (periodic QA).

A check added or removed with its levels counts as a change of those levels.
"""

from __future__ import annotations

import logging
from typing import Any

import yaml

from qa.errors import QAInputError

__all__ = ["levels_of", "changed_levels", "tolerance_change_event"]

logger = logging.getLogger(__name__)


def _numbers_as_float(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _numbers_as_float(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_float(v) for v in value]
    return value


def levels_of(protocol_text: str) -> dict[str, Any]:
    """Every tolerance and action level of a protocol YAML text, by path (module docstring).

    Unreadable YAML or an unexpected shape gives the levels that can be read (the protocol
    itself is validated elsewhere).
    """
    try:
        data = yaml.safe_load(protocol_text)
    except yaml.YAMLError:
        return {}
    if not isinstance(data, dict):
        return {}
    levels: dict[str, Any] = {}
    for check in data.get("checks") or []:
        if not isinstance(check, dict):
            continue
        check_id = str(check.get("id") or check.get("check"))
        for key, value in (check.get("tolerances") or {}).items():
            levels[f"checks[{check_id}].tolerances[{key}]"] = _numbers_as_float(value)
        for item in check.get("cohort") or []:
            if isinstance(item, dict):
                rest = {k: v for k, v in item.items() if k not in ("metric", "statistic")}
                key = f"{item.get('metric')}.{item.get('statistic')}"
                levels[f"checks[{check_id}].cohort[{key}]"] = _numbers_as_float(rest)
    baseline = data.get("baseline")
    if isinstance(baseline, dict):
        for check_id, metrics in (baseline.get("levels") or {}).items():
            for key, value in (metrics or {}).items():
                levels[f"baseline.levels[{check_id}][{key}]"] = _numbers_as_float(value)
    return levels


def changed_levels(previous_text: str, new_text: str) -> list[str]:
    """Paths of the levels that differ (added, removed or changed), sorted."""
    before, after = levels_of(previous_text), levels_of(new_text)
    return sorted(path for path in before.keys() | after.keys()
                  if before.get(path) != after.get(path))


def tolerance_change_event(store: Any, protocol_name: str, protocol_kind: str,
                           protocol_text: str, reason: str | None) -> dict[str, Any] | None:
    """The ``tolerance_changed`` audit event a new run must carry, or None.

    Compares the levels of ``protocol_text`` with the previous run of ``protocol_name`` and
    ``protocol_kind`` in ``store``; None when there is no such run or no level changed.

    Raises
    ------
    QAInputError
        Levels changed and ``reason`` is missing or blank (the run must not start).
    """
    runs = store.runs()
    previous = runs[(runs["protocol_name"] == protocol_name)
                    & (runs["protocol_kind"] == protocol_kind)]
    if previous.empty:
        return None
    last = previous.iloc[-1]
    changed = changed_levels(last["protocol_text"], protocol_text)
    if not changed:
        if reason and reason.strip():
            logger.info("--reason given but no tolerance or action level changed since run "
                        "%d: nothing recorded", int(last["run_id"]))
        return None
    if not (reason or "").strip():
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more"
                                          if len(changed) > 5 else "")
        raise QAInputError(
            f"the tolerance or action levels of protocol {protocol_name!r} ({protocol_kind}) "
            f"differ from those of its previous run {int(last['run_id'])} ({shown}); a change "
            "of levels needs a "
            "reason: give it with `qa run --reason TEXT` (kept in the audit trail, `qa "
            "audit`), or restore the previous levels", field="tolerances")
    before, after = levels_of(last["protocol_text"]), levels_of(protocol_text)
    return {"action": "tolerance_changed", "reason": reason,
            "target": f"levels of {protocol_name!r}",
            "details": {"previous_run_id": int(last["run_id"]), "changed": changed,
                        "previous": {path: before.get(path) for path in changed},
                        "new": {path: after.get(path) for path in changed}}}
