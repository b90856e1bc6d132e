"""Run every check of a protocol on one case: load inputs, run the model, call the checks.

This is the unit of work the runner hands to a worker process. It never raises for a bad
case: every problem becomes an error record (case, check, role, file, field, message) in the
returned :class:`CaseResult`, and the checks that can still run do run.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

from checks.base import Check, Measurement
from qa._case_loader import CaseLoader, error_record, last_use, path_str
from qa.dataset import Case
from qa.errors import QAInputError
from qa.models import ModelAdapter
from qa.protocol import CheckSpec, Protocol
from qa.volume import Volume

__all__ = ["CaseResult", "CheckRecord", "CaseContext", "process_case"]

logger = logging.getLogger(__name__)


@dataclass
class CheckRecord:
    """What one check returned for one case."""

    check_id: str
    check: str
    measurements: list[Measurement]
    details: dict[str, Any]


@dataclass
class CaseResult:
    """Everything one case produced: check records, errors, and image metadata rows."""

    case_id: str
    position: int
    attributes: dict[str, Any]
    records: list[CheckRecord] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    image_metadata: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "error" if self.errors else "ok"


@dataclass
class CaseContext:
    """What every case of a run shares: the protocol, the checks and the model adapter."""

    protocol: Protocol
    checks: list[tuple[CheckSpec, Check]]
    adapter: ModelAdapter


def process_case(context: CaseContext, case: Case) -> CaseResult:
    """Run all checks of the protocol on ``case``; never raises for a bad case."""
    result = CaseResult(case.case_id, case.position, dict(case.attributes))
    loader = CaseLoader(context, case, result)
    reads = last_use(context)
    for index, (spec, check) in enumerate(context.checks):
        loader.release_before(index, reads)  # inputs no later check reads
        inputs: dict[str, Any] = {}
        failed = False
        for slot_name, slot in check.slots.items():
            role = spec.bindings.get(slot_name)
            if role is None:
                continue
            grid = None
            if slot.kind == "structures":
                grid = inputs.get(slot.grid_from) if slot.grid_from else next(
                    (v for v in inputs.values() if isinstance(v, Volume)), None)
            volume = loader.get(role, slot.kind, check_id=spec.id, grid=grid)
            if volume is None:
                if slot.required and not loader.failed(role):
                    result.errors.append({
                        "message": f"required input {slot_name!r} of check {spec.check} is "
                                   f"blank for this case; fill the {role!r} column",
                        "check_id": spec.id, "role": role, "path": None, "field": role})
                if slot.required or loader.failed(role):
                    failed = True
                continue
            inputs[slot_name] = volume
        if failed:
            continue
        loader.note_grids(spec, inputs)
        try:
            output = check.run(inputs)
        except QAInputError as exc:
            result.errors.append(error_record(exc.located(case_id=case.case_id,
                                                           check=spec.id)))
            continue
        except (ValueError, ArithmeticError) as exc:
            role = _role_named_in(str(exc), spec)
            result.errors.append({"message": f"{type(exc).__name__}: {exc}",
                                  "check_id": spec.id, "role": role,
                                  "path": path_str(case.paths.get(role)) if role else None,
                                  "field": None})
            continue
        except Exception as exc:  # a bug or an unforeseen input: record it, keep going
            logger.error("case %s, check %s: unexpected error\n%s", case.case_id, spec.id,
                         traceback.format_exc())
            result.errors.append({"message": f"unexpected {type(exc).__name__}: {exc} "
                                             "(please report this with the log)",
                                  "check_id": spec.id, "role": None, "path": None,
                                  "field": None})
            continue
        for problem in output.problems:  # part of the case failed, the rest was measured
            result.errors.append(_problem_record(problem, spec, case,
                                                 context.protocol.grouped_roles()))
        result.records.append(CheckRecord(spec.id, spec.check, list(output.measurements),
                                          dict(output.details)))
    result.image_metadata = loader.metadata_rows()
    return result


def _problem_record(problem: Exception, spec: CheckSpec, case: Case,
                    groups: dict[str, list[str]]) -> dict[str, Any]:
    """Error record of a problem a check reported while measuring the rest of the case: its
    role is the one it names, or the role of the slot its message quotes (for mask roles
    grouped in the protocol, the member whose structure its ``field`` names), and its file
    that role's file unless it names its own (a structure's mask file)."""
    if not isinstance(problem, QAInputError):
        problem = QAInputError(f"{type(problem).__name__}: {problem}")
    role = problem.role or _role_named_in(problem.message, spec)
    if role in groups and problem.field in groups[role]:
        role = problem.field
    return error_record(problem.located(
        case_id=case.case_id, check=spec.id, role=role,
        path=path_str(case.paths.get(role)) if role else None))


def _role_named_in(message: str, spec: CheckSpec) -> str | None:
    """The role of the first slot whose name appears quoted in a check's error message, or
    else of the first whose name is followed by a space (``evaluated dose ...``)."""
    for pattern in ("'{}'", "{} "):
        for slot_name, role in spec.bindings.items():
            if pattern.format(slot_name) in message:
                return role
    return None
