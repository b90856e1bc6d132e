"""The HTML run report: one self-contained file rendered from the results store.

The report only *reads* :class:`qa.store.Store` (``run``, ``runs``, ``cases``,
``measurements``, ``verdicts``, ``errors``, ``details``, ``validations``, ``verify``) and, for
a run stored as ``running``, whether its run lock is held (:func:`qa.lock.run_state`: a free
lock means the run was interrupted); it never recomputes a metric from images and never writes
to the store. Its first page is the decision proposed to the committee
(:mod:`reports._decision`, a documented rule over stored verdicts, validations, errors, the
run's state and the risk register); the PDF is printed from this HTML
(:mod:`reports.pdf`). The only arithmetic done here is display aggregation of
stored numbers (summing stored histogram counts, averaging stored per-case tissue values), each
labelled as such in the report. Every user-supplied string goes through jinja2 autoescaping.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from qa.lock import run_state
from qa.risk import RiskTemplateError, assess_run
from reports._appendix import appendix_context
from reports._chain import chain_context
from reports._decision import decide
from reports._format import LEVELS, SUPPORTED_LANGUAGES, Formatter, level_rank
from reports._risk_section import risk_context
from reports._summary import (
    audit_rows,
    decision_context,
    is_periodic,
    recommendations,
    signoff_context,
)
from reports._tables import (
    MAIN_METRICS,
    case_table,
    error_rows,
    provenance,
    validation_rows,
    verdict_rows,
)
from reports.periodic import periodic_section
from reports.plots import missing, text
from reports.sections import check_sections

__all__ = [
    "render_run_report", "default_report_path", "Formatter", "SUPPORTED_LANGUAGES", "LEVELS",
    "MAIN_METRICS",
]

logger = logging.getLogger(__name__)

_TEMPLATES = Path(__file__).with_name("templates")


def render_run_report(store: Any, run_id: int, path: str | Path, *, language: str = "en",
                      generated_at: datetime | None = None,
                      risk_template: str | Path | None = None) -> Path:
    """Write the HTML report of one run and return its path.

    Parameters
    ----------
    store : qa.store.Store
        The results store, read only.
    run_id : int
        The run to report.
    path : str or pathlib.Path
        Output file; if it is an existing folder, the file is named by
        :func:`default_report_path` inside it. The parent folder must exist.
    language : {"en", "fr"}
        Language of the labels (message catalogs in ``reports/locales``); French also uses a
        decimal comma.
    generated_at : datetime, optional
        Time printed in the footer (aware). By default the run's own time (finished, else
        started): the same run renders the same file, byte for byte.
    risk_template : path, optional
        Risk-analysis template for the risk register (:func:`qa.risk.assess_run`); the
        protocol's ``risk:`` or the default template when None.

    Returns
    -------
    pathlib.Path
        The file written: one HTML page with inline CSS and plots embedded as ``data:`` URIs,
        no external resource and no JavaScript, printable on A4.

    Raises
    ------
    ValueError
        If ``language`` is not supported (the message lists the supported ones), or the store
        holds a verdict level other than OK / TOLERANCE / ACTION.
    """
    fmt = Formatter(language)
    run = store.run(run_id)
    out = Path(path)
    if out.is_dir():
        out = out / default_report_path(run)
    context = _context(store, run_id, run, fmt, generated_at, risk_template)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"),
                                            default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    html = env.get_template("run_report.html.j2").render(t=fmt.t, **context)
    out.write_text(html, encoding="utf-8")
    logger.info("run %s: report written to %s", run_id, out)
    return out


def default_report_path(run: Mapping[str, Any]) -> str:
    """File name of a run's report, ``report-run-<id>.html`` (id reduced to safe characters).

    ``run`` is the record of :meth:`qa.store.Store.run`; its id is read from ``run_id`` (or
    ``id``).
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", _run_id(run))
    return f"report-run-{safe}.html"


def _context(store: Any, run_id: int, run: Mapping[str, Any], fmt: Formatter,
             generated_at: datetime | None = None,
             risk_template: str | Path | None = None) -> dict[str, Any]:
    """Everything the template shows, as display strings (read from the store only)."""
    cases = store.cases(run_id)
    measurements = store.measurements(run_id)
    verdicts = store.verdicts(run_id)
    errors = store.errors(run_id)
    validations = store.validations(run_id)
    check_names = _check_names(measurements)
    units = _units(measurements)
    errored = _errored_cases(errors, cases)
    levels = [text(v) for v in verdicts["level"]] if len(verdicts) else []
    for value in levels:
        level_rank(value)  # raises on a level outside OK / TOLERANCE / ACTION
    worst = max(levels, key=level_rank) if levels else None
    when = generated_at or _run_time(run)
    assessment, risk = _risk(store, run_id, fmt, risk_template)
    state = run_state(store, run)
    decision = decide(run, verdicts, validations, errors, cases, assessment, state=state)
    sections = check_sections(store, run_id, check_names, measurements, fmt)
    periodic = periodic_section(store, run_id, fmt)
    return {
        "lang": fmt.language,
        "decision": decision_context(decision, run, assessment, fmt),
        "toc": _toc(sections, periodic is not None, risk is not None, fmt),
        "risk": risk,
        "recommendations": recommendations(decision, run, fmt),
        "signoff": signoff_context(decision, run, fmt),
        "audit": _audit(store, run_id, fmt),
        "appendix": appendix_context(verdicts, check_names, units, is_periodic(run),
                                     risk is not None, fmt),
        "header": {
            "protocol_name": text(run.get("protocol_name")),
            "protocol_kind": text(run.get("protocol_kind")),
            "run_id": _run_id(run),
            "status": fmt.t(f"run_state.label.{state}", default=text(run.get("status"))),
            "exit_code": text(run.get("exit_code")),
            "state_notice": _state_notice(state, run, cases, fmt),
            "worst": fmt.level(worst) if worst else None,
            "n_errored_cases": len(errored),
            "n_run_errors": int(sum(missing(c) for c in errors["case_id"])) if len(errors) else 0,
            "n_cases": len(cases),
        },
        "provenance": provenance(run, cases, fmt),
        "chain": chain_context(store, run_id, fmt),
        "validations": validation_rows(validations, fmt),
        "cohort_verdicts": verdict_rows(verdicts, check_names, units, fmt, cohort=True),
        "case_verdicts": verdict_rows(verdicts, check_names, units, fmt, cohort=False),
        "periodic": periodic,
        "case_table": case_table(cases, measurements, verdicts, errored, fmt),
        "errored_cases": [r for r in error_rows(errors, fmt) if r["case_id"] != ""],
        "check_sections": sections,
        "errors": error_rows(errors, fmt),
        "protocol_text": text(run.get("protocol_text")),
        "footer": {
            "software_version": text(run.get("software_version")),
            "generated_at": fmt.time(when),
        },
    }


#: Catalog key of the title of each check's section (``<check>.title`` when not listed).
_SECTION_TITLES = {"hu_accuracy": "section.hu", "subgroup_bias": "bias.title"}


def _toc(sections: list[dict[str, Any]], periodic: bool, risk: bool,
         fmt: Formatter) -> list[dict[str, str]]:
    """Table of contents: anchor id and title of each top-level section, in page order."""
    entries = [("decision", "section.decision"), ("provenance", "section.provenance"),
               ("validation", "section.validation"), ("verdicts", "section.verdicts")]
    if periodic:
        entries.append(("periodic", "periodic.title"))
    toc = [{"anchor": a, "title": fmt.t(k)} for a, k in entries]
    for section in sections:
        key = _SECTION_TITLES.get(section["check"], f"{section['check']}.title")
        title = fmt.t(key, default=section["check"])
        if section["several"]:
            title = f"{title} — {section['check_id']}"
        toc.append({"anchor": f"check-{section['check_id']}", "title": title})
    tail = [("cases", "section.cases"), ("risk", "risk.title") if risk else None,
            ("recommendations", "section.recommendations"), ("errors", "section.errors"),
            ("signoff", "section.signoff"), ("appendix", "section.appendix")]
    toc += [{"anchor": a, "title": fmt.t(k)} for a, k in filter(None, tail)]
    return toc


def _risk(store: Any, run_id: int, fmt: Formatter,
          template: str | Path | None) -> tuple[Any | None, dict[str, Any]]:
    """The risk assessment (for the decision; None when the template stored with the run is
    unusable) and the display data of the risk-register section (:mod:`reports._risk_section`,
    which then shows the template error). A template given explicitly must be valid."""
    try:
        assessment = assess_run(store, run_id, template=template)
    except RiskTemplateError:
        if template is not None:
            raise
        assessment = None
    return assessment, risk_context(store, run_id, fmt, template=template)


def _audit(store: Any, run_id: int, fmt: Formatter) -> list[dict[str, str]]:
    """The run's recorded decisions; none for a store without an audit trail."""
    events = getattr(store, "audit_events", None)
    return [] if events is None else audit_rows(events(run_id=run_id), fmt)


def _state_notice(state: str, run: Mapping[str, Any], cases: pd.DataFrame,
                  fmt: Formatter) -> dict[str, str] | None:
    """The first-page notice of a run that has not finished (``run_state.notice.*``): its
    process died (interrupted: how to finish it) or still runs (results partial); else None.
    """
    if state not in ("interrupted", "running"):
        return None
    values = {"run": _run_id(run), "n_cases": len(cases)}
    return {"title": fmt.t(f"run_state.notice.{state}.title"),
            "text": fmt.t(f"run_state.notice.{state}.text", **values)}


def _run_time(run: Mapping[str, Any]) -> Any:
    """The run's own time: finished, else started (the report never prints "now")."""
    finished = run.get("finished_at")
    return run.get("started_at") if missing(finished) else finished


def _run_id(run: Mapping[str, Any]) -> str:
    value = run.get("run_id")
    return text(run.get("id") if missing(value) else value)


def _check_names(measurements: pd.DataFrame) -> dict[str, str]:
    """check_id → check name, in order of first appearance."""
    names: dict[str, str] = {}
    for check_id, name in zip(measurements["check_id"], measurements["check"], strict=True):
        names.setdefault(text(check_id), text(name))
    return names


def _units(measurements: pd.DataFrame) -> dict[tuple[str, str, str | None], str]:
    """(check_id, metric, label) → unit, plus (check_id, metric, None) for any label."""
    units: dict[tuple[str, str, str | None], str] = {}
    for row in measurements[["check_id", "metric", "label", "unit"]].itertuples(index=False):
        key = (text(row.check_id), text(row.metric))
        units.setdefault((*key, text(row.label)), text(row.unit))
        units.setdefault((*key, None), text(row.unit))
    return units


def _errored_cases(errors: pd.DataFrame, cases: pd.DataFrame) -> list[str]:
    """Cases with an error row or with status ``error``, in order of first mention."""
    found = [text(c) for c in errors["case_id"] if not missing(c)] if len(errors) else []
    if len(cases):
        found += [text(c) for c, s in zip(cases["case_id"], cases["status"], strict=True)
                  if text(s) == "error"]
    return list(dict.fromkeys(found))
