"""``qa demo``: generate the synthetic pelvis cohort, run the commissioning protocol with the
shipped demo synthetic-CT model, and render the report.

The cohort generator and the demo model live in the source tree's ``fixtures/`` (they are
test and demo material, not part of the installed engine); the demo needs a source checkout.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

from qa.errors import QAInputError
from qa.runner import run_protocol

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


def run_demo(out_dir: Path, store, *, n_cases: int = 24, workers: int = 1,
             language: str = "en") -> tuple[int, int, Path]:
    """Generate the cohort under ``out_dir``, run the demo protocol into ``store``, write the
    report; return (run id, run exit code, report path)."""
    from reports.html import render_run_report

    cohort = _fixtures_module("fixtures.cohort")
    out_dir = Path(out_dir).resolve()
    cohort_dir = out_dir / "cohort"
    logger.info("generating %d synthetic pelvis cases in %s", n_cases, cohort_dir)
    cohort.generate_cohort(cohort_dir, n_cases=n_cases)
    protocol_path = cohort.write_demo_protocol(cohort_dir)
    outcome = run_protocol(protocol_path, store, workers=workers, operator="demo")
    report = out_dir / f"report-run-{outcome.run_id}.html"
    render_run_report(store, outcome.run_id, report, language=language)
    return outcome.run_id, int(outcome.exit_code), report


def _fixtures_module(name: str):
    root = Path(__file__).resolve().parents[1]
    if not (root / "fixtures" / "cohort.py").is_file():
        raise QAInputError("the demo needs the source checkout's fixtures/ folder (cohort "
                           "generator and demo model); run it from a clone of the repository",
                           path=str(root / "fixtures"))
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(name)
