"""``qa demo``: generate the synthetic data, run each demo protocol with the shipped demo
models, and render one report per run.

The generators and demo models live in the source tree's ``fixtures/`` (test and demo
material, not part of the installed engine); the demo needs a source checkout. The protocols
are the parts in ``fixtures/demo_parts`` (see its docstring), run in their declared order
into the same store.
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from qa.errors import QAInputError
from qa.runner import run_protocol

__all__ = ["DemoRun", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoRun:
    """One protocol of the demo: its title, run id, run exit code, HTML report path and PDF
    report path (None when not asked for, or when no Chromium is installed)."""

    title: str
    run_id: int
    exit_code: int
    report: Path
    pdf: Path | None = None


def run_demo(out_dir: Path, store, *, n_cases: int = 24, workers: int = 1,
             language: str = "en", months: int = 0, pdf: bool = False) -> list[DemoRun]:
    """Generate the cohort under ``out_dir``, run every demo part into ``store``, write the
    reports; with ``months`` > 0 also simulate that many monthly periodic runs
    (:mod:`fixtures.periodic_demo`, its commissioning run set as the baseline) and report the
    last month; with ``pdf`` also print each report to PDF beside it (headless Chromium; a
    warning and no PDF when it is not installed). Return one :class:`DemoRun` per report, in
    order."""
    from reports.html import render_run_report

    if 0 < months < 3:
        raise QAInputError(f"--months needs at least 3 months to chart, got {months}",
                           field="--months")
    cohort = _fixtures_module("fixtures.cohort")
    demo_parts = _fixtures_module("fixtures.demo_parts")
    out_dir = Path(out_dir).resolve()
    cohort_dir = out_dir / "cohort"
    logger.info("generating %d synthetic pelvis cases in %s", n_cases, cohort_dir)
    cohort.generate_cohort(cohort_dir, n_cases=n_cases)
    runs = []
    for part in demo_parts.parts():
        logger.info("demo part: %s", part.TITLE)
        protocol_path = part.prepare(out_dir, cohort_dir)
        outcome = run_protocol(protocol_path, store, workers=workers, operator="demo")
        report = out_dir / f"report-run-{outcome.run_id}.html"
        render_run_report(store, outcome.run_id, report, language=language)
        runs.append(DemoRun(part.TITLE, outcome.run_id, int(outcome.exit_code), report,
                            _pdf(store, outcome.run_id, report, language) if pdf else None))
    if months > 0:
        periodic = _fixtures_module("fixtures.periodic_demo")
        logger.info("simulating %d months of periodic QA", months)
        _, run_ids, _ = periodic.run_periodic_demo(
            out_dir / "periodic", store, months=range(1, months + 1),
            baseline_months=min(6, months - 1))
        for label, run_id in run_ids.items():
            run = store.run(run_id)
            logger.info("periodic %s: run %d, exit code %s", label, run_id, run["exit_code"])
        last = list(run_ids)[-1]
        report = out_dir / f"report-run-{run_ids[last]}.html"
        render_run_report(store, run_ids[last], report, language=language)
        runs.append(DemoRun(f"periodic QA, {last}", run_ids[last],
                            int(store.run(run_ids[last])["exit_code"]), report,
                            _pdf(store, run_ids[last], report, language) if pdf else None))
    return runs


def _pdf(store, run_id: int, html_report: Path, language: str) -> Path | None:
    """Print the HTML report to ``<same name>.pdf``; None (and a warning) without Chromium."""
    from reports.pdf import ChromiumNotFoundError, render_run_pdf

    try:
        return render_run_pdf(store, run_id, html_report.with_suffix(".pdf"),
                              language=language, html_path=html_report)
    except ChromiumNotFoundError as exc:
        logger.warning("run %d: no PDF report: %s", run_id, exc)
        return None


def _fixtures_module(name: str):
    root = Path(__file__).resolve().parents[1]
    if not (root / "fixtures" / "cohort.py").is_file():
        raise QAInputError("the demo needs the source checkout's fixtures/ folder (cohort "
                           "generator and demo models); run it from a clone of the repository",
                           path=str(root / "fixtures"))
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(name)
