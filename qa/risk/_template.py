"""Risk-analysis templates (the department's AMDEC / FMEA) and their frozen record.

A template is a YAML file (format in ``docs/risk.md``; the default is
``reports/risk_templates/default.yaml``): failure modes with their effect, TG-100 severity,
the checks and metrics that give evidence for them, and mitigations. It may name its own
scales (``scales:``) and ISO 14971 matrix (``matrix:``) files, relative to itself; otherwise
the packaged ``qa/risk/data/tg100.yaml`` and ``iso14971.yaml`` apply.

:func:`template_record` reads a template and the scales and matrix it uses into one JSON-able
record (texts and SHA-256), the form the runner stores with each run; :func:`parse_record`
turns a record back into a :class:`RiskTemplate` without touching the file system, so a report
rendered later uses exactly the template of the run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qa.hashing import sha256_text
from qa.risk._scales import (
    DATA_DIR,
    DETECTION_CLASSES,
    IsoMatrix,
    RiskTemplateError,
    Scales,
    parse_matrix,
    parse_scales,
)

__all__ = [
    "RiskTemplate", "FailureMode", "EvidenceLink", "load_template", "template_record",
    "parse_record", "localized", "DEFAULT_TEMPLATE", "LocalText",
]

#: The default template: AI in imaging and radiotherapy.
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "reports" / "risk_templates" / \
    "default.yaml"
#: A text in one or several languages: a plain string, or ``{en: ..., fr: ...}``.
LocalText = str | Mapping[str, str]

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_TEMPLATE_KEYS = ("name", "version", "description", "scales", "matrix", "failure_modes")
_MODE_KEYS = ("id", "title", "effect", "cause", "severity", "unit", "failure_level",
              "evidence", "mitigations", "detection", "references")
_EVIDENCE_KEYS = ("check", "metric", "label")


@dataclass(frozen=True)
class EvidenceLink:
    """A check (id or name, or an engine id: ``baseline``, ``drift``, ``errors``) and
    optionally one metric and label whose verdicts count as evidence."""

    check: str
    metric: str | None = None
    label: str | None = None

    def describe(self) -> str:
        """``check.metric[label]`` as written in the template."""
        text = self.check if self.metric is None else f"{self.check}.{self.metric}"
        return text if self.label is None else f"{text}[{self.label}]"


@dataclass(frozen=True)
class FailureMode:
    """One failure mode of the template (texts kept in all their languages)."""

    id: str
    title: LocalText
    effect: LocalText
    cause: LocalText | None
    severity: int
    unit: str  # "case" or "run"
    failure_level: str  # "ACTION" or "TOLERANCE"
    evidence: tuple[EvidenceLink, ...]
    mitigations: tuple[LocalText, ...]
    detection: dict[str, int]  # per-mode overrides of the scales' D per detection class
    references: tuple[str, ...]


@dataclass(frozen=True)
class RiskTemplate:
    """A validated template with the scales and ISO matrix it uses, and its provenance."""

    name: LocalText
    version: str
    failure_modes: tuple[FailureMode, ...]
    scales: Scales
    matrix: IsoMatrix
    source: str
    sha256: str
    record: dict[str, Any]


def localized(text: LocalText | None, language: str) -> str:
    """``text`` in ``language``; else English; else the first language given; ``""`` for None.

    >>> localized({"en": "bone", "fr": "os"}, "fr"), localized("bone", "fr")
    ('os', 'bone')
    """
    if text is None:
        return ""
    if isinstance(text, str):
        return text
    for key in (language, "en"):
        if text.get(key):
            return str(text[key])
    return str(next(iter(text.values()), ""))


def load_template(path: str | Path | None = None) -> RiskTemplate:
    """Read and validate a template file (None: the default template).

    Raises
    ------
    RiskTemplateError
        Missing or unreadable file, bad YAML (line and column), or a key that breaks the
        format; ``path`` names the file and ``field`` the key path (``failure_modes[2].severity``).
    """
    return parse_record(template_record(path))


def template_record(path: str | Path | None = None) -> dict[str, Any]:
    """The JSON-able record of a template and the scales and matrix it names.

    Keys: ``source`` (the template path, or ``"default"``), ``template_text``,
    ``template_sha256`` (SHA-256 of the UTF-8 text), ``scales_source``, ``scales_text``,
    ``matrix_source``, ``matrix_text``. The record is validated before it is returned.
    """
    file = DEFAULT_TEMPLATE if path is None else Path(path).resolve()
    text = _read(file)
    data = _parse_yaml(text, str(file))
    refs = {}
    for key, default in (("scales", DATA_DIR / "tg100.yaml"),
                         ("matrix", DATA_DIR / "iso14971.yaml")):
        named = data.get(key)
        if named is not None and not isinstance(named, str):
            raise RiskTemplateError(f"must be a file path (relative to the template), got "
                                    f"{named!r}", path=str(file), field=key)
        ref = default if named is None else (file.parent / named).resolve()
        refs[key] = (ref, _read(ref, what=f"{key} file named by {file}"))
    record = {
        "source": "default" if path is None else str(file),
        "template_text": text, "template_sha256": sha256_text(text),
        "scales_source": str(refs["scales"][0]), "scales_text": refs["scales"][1],
        "matrix_source": str(refs["matrix"][0]), "matrix_text": refs["matrix"][1],
    }
    parse_record(record)
    return record


def parse_record(record: Mapping[str, Any]) -> RiskTemplate:
    """A :class:`RiskTemplate` from a record of :func:`template_record` (no file access)."""
    try:
        source = str(record["source"])
        text = str(record["template_text"])
        scales_source, matrix_source = str(record["scales_source"]), str(record["matrix_source"])
        scales_text, matrix_text = str(record["scales_text"]), str(record["matrix_text"])
    except (KeyError, TypeError) as exc:
        raise RiskTemplateError(f"the stored risk template record lacks {exc}; re-run the "
                                "protocol or pass a template explicitly",
                                field="risk_register/template") from None
    shown = "default template" if source == "default" else source
    data = _parse_yaml(text, shown)
    scales = parse_scales(_parse_yaml(scales_text, scales_source), scales_source)
    matrix = parse_matrix(_parse_yaml(matrix_text, matrix_source), matrix_source)
    unknown = [k for k in data if k not in _TEMPLATE_KEYS]
    if unknown:
        raise RiskTemplateError(f"unknown key {unknown[0]!r}; allowed keys: "
                                f"{', '.join(_TEMPLATE_KEYS)}", path=shown, field=str(unknown[0]))
    modes_in = data.get("failure_modes")
    if not isinstance(modes_in, list) or not modes_in:
        raise RiskTemplateError("must be a non-empty list of failure modes (id, title, effect, "
                                "severity, evidence, mitigations)", path=shown,
                                field="failure_modes")
    modes = [_mode(item, i, shown) for i, item in enumerate(modes_in)]
    seen: dict[str, int] = {}
    for i, mode in enumerate(modes):
        if mode.id in seen:
            raise RiskTemplateError(f"duplicate id {mode.id!r} (also failure_modes"
                                    f"[{seen[mode.id]}]); give each failure mode its own id",
                                    path=shown, field=f"failure_modes[{i}].id")
        seen[mode.id] = i
    return RiskTemplate(
        name=_text(data.get("name", "risk analysis"), shown, "name"),
        version=str(data.get("version", "")), failure_modes=tuple(modes), scales=scales,
        matrix=matrix, source=source, sha256=str(record.get("template_sha256") or
                                                 sha256_text(text)),
        record=dict(record))


def _mode(item: Any, i: int, where: str) -> FailureMode:
    at = f"failure_modes[{i}]"
    if not isinstance(item, Mapping):
        raise RiskTemplateError(f"must be a mapping, got {type(item).__name__}", path=where,
                                field=at)
    unknown = [k for k in item if k not in _MODE_KEYS]
    if unknown:
        raise RiskTemplateError(f"unknown key {unknown[0]!r}; allowed keys: "
                                f"{', '.join(_MODE_KEYS)}", path=where,
                                field=f"{at}.{unknown[0]}")
    for key in ("id", "title", "effect", "severity"):
        if key not in item:
            raise RiskTemplateError("required key is missing", path=where, field=f"{at}.{key}")
    mode_id = item["id"]
    if not isinstance(mode_id, str) or not _ID.match(mode_id):
        raise RiskTemplateError(f"must be a name of letters, digits, _ . - (starting with a "
                                f"letter), got {mode_id!r}", path=where, field=f"{at}.id")
    severity = item["severity"]
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 10:
        raise RiskTemplateError(f"must be a whole TG-100 severity rank 1-10, got {severity!r}",
                                path=where, field=f"{at}.severity")
    unit = item.get("unit", "case")
    if unit not in ("case", "run"):
        raise RiskTemplateError(f"must be case or run, got {unit!r}", path=where,
                                field=f"{at}.unit")
    level = str(item.get("failure_level", "ACTION")).upper()
    if level not in ("ACTION", "TOLERANCE"):
        raise RiskTemplateError(f"must be ACTION or TOLERANCE, got {item['failure_level']!r}",
                                path=where, field=f"{at}.failure_level")
    evidence = item.get("evidence") or []
    if not isinstance(evidence, list):
        raise RiskTemplateError("must be a list of {check, metric, label}", path=where,
                                field=f"{at}.evidence")
    links = tuple(_link(e, f"{at}.evidence[{j}]", where) for j, e in enumerate(evidence))
    mitigations = item.get("mitigations") or []
    if not isinstance(mitigations, list):
        raise RiskTemplateError("must be a list of texts", path=where,
                                field=f"{at}.mitigations")
    detection = item.get("detection") or {}
    if not isinstance(detection, Mapping) or any(k not in DETECTION_CLASSES for k in detection):
        raise RiskTemplateError(f"must map detection classes ({', '.join(DETECTION_CLASSES)}) "
                                f"to D ranks, got {detection!r}", path=where,
                                field=f"{at}.detection")
    for key, rank in detection.items():
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 10:
            raise RiskTemplateError(f"must be a whole D rank 1-10, got {rank!r}", path=where,
                                    field=f"{at}.detection.{key}")
    return FailureMode(
        id=mode_id, title=_text(item["title"], where, f"{at}.title"),
        effect=_text(item["effect"], where, f"{at}.effect"),
        cause=None if item.get("cause") is None else _text(item["cause"], where, f"{at}.cause"),
        severity=severity, unit=unit, failure_level=level, evidence=links,
        mitigations=tuple(_text(m, where, f"{at}.mitigations[{j}]")
                          for j, m in enumerate(mitigations)),
        detection=dict(detection),
        references=tuple(str(r) for r in item.get("references") or []))


def _link(item: Any, at: str, where: str) -> EvidenceLink:
    if isinstance(item, str):  # "check.metric[label]" shorthand
        check, _, rest = item.partition(".")
        metric, label = rest, None
        if rest.endswith("]") and "[" in rest:
            metric, _, label = rest[:-1].partition("[")
        item = {"check": check, "metric": metric or None, "label": label}
    if not isinstance(item, Mapping):
        raise RiskTemplateError("must be {check, metric, label} or 'check.metric[label]'",
                                path=where, field=at)
    unknown = [k for k in item if k not in _EVIDENCE_KEYS]
    if unknown:
        raise RiskTemplateError(f"unknown key {unknown[0]!r}; allowed keys: "
                                f"{', '.join(_EVIDENCE_KEYS)}", path=where,
                                field=f"{at}.{unknown[0]}")
    values = {}
    for key in _EVIDENCE_KEYS:
        value = item.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise RiskTemplateError(f"must be a non-empty text, got {value!r}", path=where,
                                    field=f"{at}.{key}")
        values[key] = value
    if values["check"] is None:
        raise RiskTemplateError("required key is missing (a check id or name, or baseline, "
                                "drift, errors)", path=where, field=f"{at}.check")
    return EvidenceLink(values["check"], values["metric"], values["label"])


def _text(value: Any, where: str, at: str) -> LocalText:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, Mapping) and value and all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in value.items()):
        return dict(value)
    raise RiskTemplateError(f"must be a text, or texts by language ({{en: ..., fr: ...}}), got "
                            f"{value!r}", path=where, field=at)


def _read(file: Path, what: str = "risk template") -> str:
    try:
        return file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RiskTemplateError(f"{what} not found; check the path", path=str(file)) from None
    except UnicodeDecodeError as exc:
        raise RiskTemplateError(f"not UTF-8 text ({exc.reason} at byte {exc.start}); save it "
                                "as UTF-8", path=str(file)) from None
    except OSError as exc:
        raise RiskTemplateError(f"cannot read {what}: {exc.strerror}", path=str(file)) from None


def _parse_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise RiskTemplateError(f"malformed YAML at {at}{getattr(exc, 'problem', None) or exc}; "
                                "fix the syntax (indentation, quotes, colons)",
                                path=where) from None
    if not isinstance(data, dict):
        raise RiskTemplateError(f"must be a YAML mapping, got {type(data).__name__}", path=where)
    return data
