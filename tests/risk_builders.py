"""Hand-made stores and templates for the risk-register tests (qa.risk, reports._risk_section).

A run is written through the store's public API with verdicts chosen by hand, so every
expected count (k failures in n cases) is known without running a check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from qa.store import Store

#: Scales of a department whose occurrence bands are wide enough to give O < 10 with a few
#: dozen cases: O = 1 up to 5 %, 2 up to 10 %, 3 up to 20 %, … 9 up to 80 %, else 10.
WIDE_SCALES = {
    "name": "test scales (wide bands)",
    "source": "tests/risk_builders.py",
    "occurrence": {"verified": True, "above_last": 10,
                   "upper_percent": {1: 5, 2: 10, 3: 20, 4: 30, 5: 40, 6: 50, 7: 60, 8: 70,
                                     9: 80}},
    "detectability": {"verified": True, "above_last": 10,
                      "undetected_percent": {1: 0.01, 2: 0.2, 3: 0.5, 4: 1, 5: 2, 6: 5,
                                             7: 10, 8: 15, 9: 20}},
    "severity": {"verified": True},
    "detection": {"every_case": 3, "some_cases": 5, "run_level": 6, "not_in_protocol": 10},
    "priorities": {"severity_high": 8, "rpn_high": 125, "rpn_medium": 60},
    "confidence_level": 0.95,
}


def write_template(folder: Path, modes: Sequence[Mapping], *, scales: Mapping | None = None,
                   name: object = "test template") -> Path:
    """Write a template (and, when given, its scales file next to it); return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    data: dict[str, object] = {"name": name, "failure_modes": [dict(m) for m in modes]}
    if scales is not None:
        (folder / "scales.yaml").write_text(yaml.safe_dump(dict(scales), allow_unicode=True),
                                            encoding="utf-8")
        data["scales"] = "scales.yaml"
    path = folder / "template.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False),
                    encoding="utf-8")
    return path


def mode(mode_id: str, severity: int, evidence: Sequence[Mapping], **extra: object) -> dict:
    """One failure mode with English-only texts."""
    return {"id": mode_id, "title": f"title of {mode_id}", "effect": f"effect of {mode_id}",
            "severity": severity, "evidence": [dict(e) for e in evidence], **extra}


def add_run(store: Store, levels: Mapping[str, Mapping[str, str]], *,
            protocol: str | None = None, checks: Mapping[str, str] | None = None,
            kind: str = "commissioning", cohort: Sequence[Mapping] = (),
            errored: Sequence[str] = (), extra_yaml: str = "", finish: bool = True) -> int:
    """Store a run whose cases have the given per-case verdict levels.

    ``levels``: case id -> {"check_id.metric": level}; ``checks``: check id -> check name
    declared in the stored protocol text (default: the check ids of ``levels``, named after
    themselves); ``cohort``: cohort verdicts ({check_id, metric, level}, value 1 unless
    given); every per-case verdict has the value 1 (a measured value); ``errored``: cases
    stored with status ``error`` and an error row (no verdict).
    """
    if protocol is None:  # a store wrapper may name the protocol (tests/qa/test_risk.py)
        protocol = getattr(store, "protocol", "risk test")
    if checks is None:
        checks = {key.split(".")[0]: key.split(".")[0]
                  for per_case in levels.values() for key in per_case}
    text = yaml.safe_dump({"name": protocol, "kind": kind,
                           "checks": [{"check": name, "id": check_id}
                                      for check_id, name in checks.items()]}) + extra_yaml
    run_id = store.create_run(
        protocol_name=protocol, protocol_kind=kind, protocol_hash="0" * 64,
        protocol_text=text, dataset_hash="1" * 64, case_table_path="cases.csv",
        model={"name": "m", "version": "1", "adapter": "precomputed"},
        software_version="0", operator="tester", hostname="host")
    position = 0
    for case_id in levels:
        store.add_case(run_id, case_id, position=position, attributes={})
        position += 1
    store.add_verdicts(run_id, [
        {"case_id": case_id, "check_id": key.split(".")[0], "metric": key.split(".")[1],
         "level": level, "value": 1.0} for case_id, per_case in levels.items()
        for key, level in per_case.items()])
    for case_id in errored:
        store.add_case(run_id, case_id, position=position, attributes={}, status="error")
        position += 1
        store.add_error(run_id, "file not found", case_id=case_id)
    if cohort:
        store.add_verdicts(run_id, [{"value": 1.0, **v, "case_id": None} for v in cohort])
    if finish:
        store.finish_run(run_id, "complete", exit_code=0)
    return run_id


def cases(n_ok: int, n_tolerance: int = 0, n_action: int = 0,
          key: str = "seg.dice") -> dict[str, dict[str, str]]:
    """``n_ok + n_tolerance + n_action`` cases with one verdict each on ``key``."""
    levels = ["OK"] * n_ok + ["TOLERANCE"] * n_tolerance + ["ACTION"] * n_action
    return {f"c{i:03d}": {key: level} for i, level in enumerate(levels)}
