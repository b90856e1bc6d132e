"""Exit codes of ``qa run`` (documented in the README and ``qa run --help``).

When several apply, the highest wins: a run with errors exits 30 even if other cases
reached ACTION, because a case that could not be checked is not known to be safe.
"""

from __future__ import annotations

from enum import IntEnum

from qa.verdicts import Level

__all__ = ["ExitCode", "exit_code_for"]


class ExitCode(IntEnum):
    OK = 0
    """Every verdict OK, no error, data validation passed."""
    USAGE = 2
    """Command-line usage error (argparse)."""
    TOLERANCE = 10
    """At least one verdict at TOLERANCE (a warning: review), or data validation failed."""
    ACTION = 20
    """At least one verdict at ACTION (stop clinical use until resolved)."""
    ERRORS = 30
    """At least one case or check could not be run (errors recorded; the others ran)."""
    NOT_STARTED = 40
    """The run could not start: invalid protocol or case table, model not loadable, store
    unreachable. Nothing was written to the store."""

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.OK: "all OK",
    ExitCode.USAGE: "usage error",
    ExitCode.TOLERANCE: "tolerance level reached (review)",
    ExitCode.ACTION: "action level reached (stop use until resolved)",
    ExitCode.ERRORS: "some cases or checks could not be run",
    ExitCode.NOT_STARTED: "run could not start",
}


def exit_code_for(worst: Level, *, has_errors: bool, validation_failed: bool) -> ExitCode:
    """The exit code of a finished run from its worst verdict, errors and validation."""
    if has_errors:
        return ExitCode.ERRORS
    if worst == Level.ACTION:
        return ExitCode.ACTION
    if worst == Level.TOLERANCE or validation_failed:
        return ExitCode.TOLERANCE
    return ExitCode.OK
