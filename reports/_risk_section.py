"""The "Risk register" section of the run report, from :func:`qa.risk.assess_run`.

Reads the store only (``run``, ``runs``, ``cases``, ``verdicts``, ``errors``, ``details``):
the scores are computed by :mod:`qa.risk` from the stored verdicts with the template stored
with the run (or the one given), so re-rendering a report later gives the same register.
Texts of the template are resolved to the report language (English, then the first language
given, as fallback); every value is a plain string, escaped by the template.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from qa.risk import (
    ISO_SEVERITIES,
    RiskAssessment,
    RiskRow,
    RiskTemplate,
    RiskTemplateError,
    assess_run,
    localized,
)

__all__ = ["risk_context", "assessment_context"]

logger = logging.getLogger("reports.html")

_PRIORITY_CSS = {"high": "action", "medium": "tolerance", "low": "ok", "not_assessed": "na"}
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_REGION_CSS = {"unacceptable": "action", "alarp": "tolerance", "acceptable": "ok"}


def risk_context(store: Any, run_id: int, fmt: Any, *,
                 template: RiskTemplate | str | Path | None = None) -> dict[str, Any]:
    """Display data of the risk-register section (the ``risk`` variable of
    ``reports/templates/_risk.html.j2``).

    Parameters
    ----------
    store : qa.store.Store
    run_id : int
    fmt : reports._format.Formatter
        Language and number formatting.
    template : RiskTemplate or path, optional
        Overrides the template stored with the run (``qa report --risk-template``); a
        malformed file raises :class:`qa.risk.RiskTemplateError`.

    Returns
    -------
    dict
        ``error`` (a text when the stored template cannot be read, else None), ``template``
        (name, source, SHA-256, scales and matrix names), ``unverified`` (True when the
        scales file says its O or D bands were not checked against TG-100), ``counts``,
        ``previous_run_id``, ``rows`` (display strings), ``matrix`` (ISO 14971 grid) and
        ``legend`` (thresholds used).
    """
    try:
        assessment = assess_run(store, run_id, template=template)
    except RiskTemplateError as exc:
        if template is not None:
            raise
        logger.warning("run %s: stored risk template unusable: %s", run_id, exc)
        return {"error": str(exc), "rows": [], "matrix": None}
    return assessment_context(assessment, fmt)


def assessment_context(assessment: RiskAssessment, fmt: Any) -> dict[str, Any]:
    """The same display data from an assessment already made (no store access)."""
    lang = fmt.language
    scales, matrix = assessment.scales, assessment.matrix
    return {
        "error": None,
        "template": {
            "name": localized(assessment.template_name, lang),
            "source": (fmt.t("risk.default_template") if assessment.template_source == "default"
                       else assessment.template_source),
            "sha256": assessment.template_sha256,
            "scales": scales.name,
            "matrix": matrix.name,
        },
        "unverified": not (scales.occurrence_verified and scales.detectability_verified),
        "counts": {p: str(n) for p, n in assessment.counts.items()},
        "previous_run_id": "" if assessment.previous_run_id is None
        else str(assessment.previous_run_id),
        "rows": [_row(row, fmt) for row in assessment.rows],
        "matrix": _matrix(assessment, fmt),
        "legend": {
            "confidence": fmt.number(100 * scales.confidence_level, "", "%"),
            "severity_high": str(scales.severity_high),
            "rpn_high": str(scales.rpn_high),
            "rpn_medium": str(scales.rpn_medium),
            "detection": [(fmt.t(f"risk.detection.{name}"), str(rank))
                          for name, rank in scales.detection.items()],
        },
    }


def _row(row: RiskRow, fmt: Any) -> dict[str, Any]:
    lang, e = fmt.language, row.evidence
    unit_key = "runs" if e.unit == "run" else "cases"
    return {
        "assessed": row.priority != "not_assessed",
        "mode_id": row.mode_id,
        "title": localized(row.title, lang),
        "effect": localized(row.effect, lang),
        "cause": localized(row.cause, lang),
        "mitigations": [localized(m, lang) for m in row.mitigations],
        "references": "; ".join(row.references),
        "severity": str(row.severity),
        "occurrence": _int(row.occurrence),
        "detectability": _int(row.detectability),
        "rpn": _int(row.rpn),
        "priority": {"code": row.priority, "css": _PRIORITY_CSS[row.priority],
                     "text": fmt.t(f"risk.priority.{row.priority}")},
        "iso_probability": "—" if row.iso_probability is None
        else fmt.t(f"risk.iso.probability.{row.iso_probability}", default=row.iso_probability),
        "iso_severity": fmt.t(f"risk.iso.severity.{row.iso_severity}", default=row.iso_severity),
        "iso_region": None if row.iso_region is None else {
            "code": row.iso_region, "css": _REGION_CSS[row.iso_region],
            "text": fmt.t(f"risk.iso.region.{row.iso_region}")},
        "evidence": {
            "links": ", ".join(e.links) if e.links else fmt.t("risk.no_links"),
            "has_links": bool(e.links),
            "none": fmt.t(f"risk.evidence.none_{unit_key}", n=e.n_total),
            "counts": fmt.t(f"risk.evidence.counts_{unit_key}", k=e.n_failures,
                            n=e.n_evaluated, level=fmt.t(f"level.{e.failure_level}")),
            "tolerance": fmt.t(f"risk.evidence.tolerance_{unit_key}", n=e.n_tolerance)
            if e.n_tolerance else "",
            "not_evaluated": fmt.t(f"risk.evidence.not_evaluated_{unit_key}",
                                   n=e.n_not_evaluated) if e.n_not_evaluated else "",
            "rate": _percent(e.observed_rate, fmt),
            "upper": _percent(e.upper_bound, fmt),
            "confidence": fmt.number(100 * e.confidence_level, "", "%"),
            "detection": fmt.t(f"risk.detection.{e.detection_class}"),
        },
        "change": {"code": row.change, "text": fmt.t(f"risk.change.{row.change}"),
                   "previous_rpn": _int(row.previous_rpn)},
    }


def _matrix(assessment: RiskAssessment, fmt: Any) -> dict[str, Any]:
    """Rows = probability categories (most probable first), columns = ISO severities; each
    cell: its region and the ids of the assessed modes that fall in it."""
    matrix = assessment.matrix
    cells: dict[tuple[str, str], list[str]] = {}
    for row in assessment.rows:
        if row.iso_probability is not None:
            cells.setdefault((row.iso_probability, row.iso_severity), []).append(row.mode_id)
    rows = []
    for probability, lower in matrix.probability:
        row_cells = []
        for severity in ISO_SEVERITIES:
            region = matrix.region(probability, severity)
            row_cells.append({"region": {"code": region, "css": _REGION_CSS[region],
                                         "text": fmt.t(f"risk.iso.region.{region}")},
                              "modes": ", ".join(cells.get((probability, severity), []))})
        rows.append({
            "probability": fmt.t(f"risk.iso.probability.{probability}", default=probability),
            "lower": _probability(lower, fmt),
            "cells": row_cells,
        })
    return {"severities": [fmt.t(f"risk.iso.severity.{s}", default=s) for s in ISO_SEVERITIES],
            "rows": rows}


def _probability(lower: float, fmt: Any) -> str:
    """A matrix edge: ``10⁻³`` for a power of ten, else the number."""
    if lower > 0:
        exponent = math.log10(lower)
        if abs(exponent - round(exponent)) < 1e-9:
            return "10" + str(int(round(exponent))).translate(_SUPERSCRIPT)
    return fmt.number(lower, "", "?")


def _int(value: int | None) -> str:
    return "—" if value is None else str(value)


def _percent(fraction: float | None, fmt: Any) -> str:
    if fraction is None:
        return "—"
    return f"{fmt.number(100 * fraction, 'rate', '?')} %"
