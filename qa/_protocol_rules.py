"""Protocol rules: YAML reading, registry-dependent checks and problem messages.

Private helpers of :mod:`qa.protocol` (import the public API from there):

- :func:`parse_yaml` reads the YAML with a loader that refuses a key written twice and reports
  syntax errors with line and column;
- :func:`pydantic_problems` turns a pydantic ``ValidationError`` into ``(key_path, message)``
  pairs naming the allowed keys, and :func:`dedupe` drops repeats;
- :func:`semantic_problems` checks what needs the check registry (check names, slots,
  metrics, options, ids, role kinds); :func:`check_classes` and :func:`role_kinds` also serve
  the :class:`~qa.protocol.Protocol` methods;
- :func:`problems_error` builds the one :class:`~qa.errors.ProtocolError` listing them all.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from checks.base import Check
from qa.errors import ProtocolError
from qa.verdicts import WILDCARD_LABEL, split_metric_key

if TYPE_CHECKING:
    from qa.protocol import CheckSpec

__all__ = [
    "CHECK_KEYS", "parse_yaml", "pydantic_problems", "dedupe", "problems_error",
    "check_classes", "semantic_problems", "role_kinds",
]

#: Keys of a check item that are not slot bindings.
CHECK_KEYS = ("check", "id", "options", "tolerances", "cohort", "pool")
_METRIC_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^\[\]]+\])?$")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last)."""


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping key written twice."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise _DuplicateKeyError(
                "while reading a mapping", node.start_mark,
                f"key {key!r} is written twice (first on line {seen[key].line + 1}); keep one",
                key_node.start_mark)
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _construct_mapping)


def parse_yaml(text: str, path: Path) -> dict:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, _DuplicateKeyError):
            raise ProtocolError(f"at {where}{problem}", path=str(path)) from None
        raise ProtocolError(f"malformed YAML at {where}{problem}; fix the syntax (indentation, "
                            "quotes, colons)", path=str(path)) from None
    if not isinstance(data, dict):
        raise ProtocolError("the protocol must be a YAML mapping (name:, kind:, model:, cases:, "
                            f"checks: ...), got {type(data).__name__}", path=str(path))
    return data


def _key_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def pydantic_problems(exc: ValidationError, root: type[BaseModel]) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # slot bindings are written as keys of the check
        if len(loc) >= 3 and loc[0] == "checks" and loc[2] == "bindings":
            loc = loc[:2] + loc[3:]
        kind = err["type"]
        if kind in ("extra_forbidden", "unexpected_keyword_argument"):
            allowed = _allowed_keys(loc[:-1], root)
            message = f"unknown key {loc[-1]!r}; allowed keys: {', '.join(allowed)}"
        elif kind == "missing":
            message = "required key is missing"
        else:
            message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            if kind != "value_error":
                message += f" (got {_short(err.get('input'))})"
        problems.append((_key_path(loc), message))
    return problems


def _allowed_keys(loc: tuple, root: type[BaseModel]) -> list[str]:
    """Field names of the model found at ``loc`` by walking the annotations."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        fields = _fields(tp)
        if fields is not None:
            tp = fields[part].annotation if part in fields else None
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    fields = _fields(_unwrap(tp))
    return [] if fields is None else [name for name in fields if name != "bindings"]


def _unwrap(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _fields(tp: Any) -> dict | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.model_fields
    return getattr(tp, "__pydantic_fields__", None)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def dedupe(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    unknown = {where for where, what in problems if what.startswith("unknown key")}
    seen, out = set(), []
    for item in problems:
        if item in seen or (item[0] in unknown and not item[1].startswith("unknown key")):
            continue
        seen.add(item)
        out.append(item)
    return out


def problems_error(problems: list[tuple[str, str]], path: Path) -> ProtocolError:
    """One :class:`~qa.errors.ProtocolError` listing every problem; ``problems`` kept on it."""
    n = len(problems)
    if n == 1:  # one line, like every other input error
        where, what = problems[0]
        error = ProtocolError(f"1 problem in the protocol: {what.rstrip('.')}; fix it and "
                              "run again",
                              path=str(path), field=where)
    else:
        lines = "\n".join(f"  - {where}: {what}" for where, what in problems)
        error = ProtocolError(f"{n} problems in the protocol; fix them and run again:\n{lines}",
                              path=str(path))
    error.problems = problems
    return error


def check_classes(specs: Iterable[CheckSpec]) -> dict[str, type[Check]]:
    from checks.registry import get_check

    return {spec.check: get_check(spec.check) for spec in specs}


def semantic_problems(data: dict) -> list[tuple[str, str]]:
    """Problems that need the check registry: names, slots, metrics, options, ids, kinds."""
    from checks.registry import available_checks, get_check

    problems: list[tuple[str, str]] = []
    checks = data.get("checks")
    if not isinstance(checks, list):
        return problems
    classes: dict[str, type[Check]] = {}
    seen_ids: dict[str, int] = {}
    for i, item in enumerate(checks):
        if not isinstance(item, dict):
            continue
        where = f"checks[{i}]"
        name = item.get("check")
        check_id = item.get("id", name)
        if isinstance(check_id, str):
            if check_id in seen_ids:
                hint = "" if "id" in item else " (it defaults to the check name: add id:)"
                problems.append((f"{where}.id", f"duplicate check id {check_id!r}, also used by "
                                 f"checks[{seen_ids[check_id]}]{hint}; give each check a "
                                 "unique id"))
            else:
                seen_ids[check_id] = i
        if not isinstance(name, str):
            continue
        if name not in available_checks():
            problems.append((f"{where}.check", f"unknown check {name!r}; known checks: "
                             f"{', '.join(available_checks())}"))
            continue
        try:
            cls = get_check(name)
        except (ImportError, AttributeError) as exc:
            problems.append((f"{where}.check", f"check {name!r} is registered but cannot be "
                             f"loaded ({exc}); check the installation"))
            continue
        classes[name] = cls
        problems.extend(_check_item_problems(where, item, cls))
    problems.extend(role_kinds(data, classes)[1])
    problems.extend(_baseline_problems(data, checks, classes))
    return problems


def _trend_problems(data: dict, checks: list) -> list[tuple[str, str]]:
    """``trend:`` entries chart cohort statistics that a check of the protocol declares."""
    trend = data.get("trend")
    if not isinstance(trend, list) or not trend:
        return []
    problems: list[tuple[str, str]] = []
    if data.get("kind") != "periodic":
        problems.append(("trend", "control charts follow a periodic protocol's runs; set "
                         "kind: periodic or remove trend:"))
    declared: dict[str, set[tuple[str, str]]] = {}
    for item in checks:
        if isinstance(item, dict):
            check_id = item.get("id", item.get("check"))
            cohort = item.get("cohort") if isinstance(item.get("cohort"), list) else []
            declared[str(check_id)] = {(str(c.get("metric")), str(c.get("statistic")))
                                       for c in cohort if isinstance(c, dict)}
    for i, entry in enumerate(trend):
        if not isinstance(entry, dict) or not isinstance(entry.get("check"), str):
            continue
        check_id = entry["check"]
        if check_id not in declared:
            problems.append((f"trend[{i}].check", f"no check with id {check_id!r}; ids: "
                             f"{', '.join(declared) or 'none'}"))
            continue
        wanted = (str(entry.get("metric")), str(entry.get("statistic", "mean")))
        if wanted not in declared[check_id]:
            problems.append((f"trend[{i}]", f"check {check_id!r} declares no cohort statistic "
                             f"{wanted[1]} of {wanted[0]}: add it under its cohort: so each "
                             "run stores the value the chart follows"))
    return problems


def _baseline_problems(data: dict, checks: list, classes: dict[str, type[Check]]
                       ) -> list[tuple[str, str]]:
    """``baseline:`` only in periodic protocols, naming per-case checks and their metrics;
    the check ids ``baseline`` / ``baseline.*`` are the engine's."""
    problems: list[tuple[str, str]] = []
    by_id: dict[str, type[Check]] = {}
    for i, item in enumerate(checks):
        if not isinstance(item, dict):
            continue
        check_id = item.get("id", item.get("check"))
        if isinstance(check_id, str) and (check_id == "baseline"
                                          or check_id.startswith("baseline.")):
            problems.append((f"checks[{i}].id", f"check id {check_id!r} is reserved for the "
                             "baseline comparison; choose another id"))
        if isinstance(check_id, str) and item.get("check") in classes:
            by_id[check_id] = classes[item["check"]]
    problems.extend(_trend_problems(data, checks))
    drift = data.get("drift")
    if isinstance(drift, dict):
        if data.get("kind") != "periodic":
            problems.append(("drift", "input drift is judged against a baseline: set kind: "
                             "periodic or remove drift:"))
        attributes = data.get("attributes") if isinstance(data.get("attributes"), dict) else {}
        image_features = ("manufacturer", "kvp", "slice_thickness_mm", "field_strength_t",
                          "ctdivol_mgy", "convolution_kernel", "p01", "p50", "p99",
                          "spacing_z_mm", "spacing_y_mm", "spacing_x_mm", "min_value",
                          "max_value")
        for i, feature in enumerate(drift.get("features") or []):
            role, dot, key = str(feature).partition(".")
            if dot and key in image_features:
                continue  # an image feature the runner measures on role `role`
            if feature not in attributes:
                problems.append((f"drift.features[{i}]", f"{feature!r} is neither a declared "
                                 f"attribute (known: {', '.join(attributes) or 'none'}) nor "
                                 f"an image feature <role>.<feature> (features: "
                                 f"{', '.join(image_features)})"))
    baseline = data.get("baseline")
    if not isinstance(baseline, dict):
        return problems
    if data.get("kind") != "periodic":
        problems.append(("baseline", "a baseline comparison belongs to a periodic protocol; "
                         "set kind: periodic or remove baseline:"))
    levels = baseline.get("levels")
    for check_id, metrics in (levels.items() if isinstance(levels, dict) else []):
        cls = by_id.get(check_id)
        if cls is None:
            problems.append((f"baseline.levels.{check_id}", f"no check with id {check_id!r}; "
                             f"ids: {', '.join(by_id) or 'none'}"))
            continue
        if getattr(cls, "scope", "case") == "cohort":
            problems.append((f"baseline.levels.{check_id}", "baseline levels compare per-case "
                             f"values; {check_id!r} is a cohort-level check"))
            continue
        for key in (metrics if isinstance(metrics, dict) else {}):
            problem = _metric_key_problem(key, cls, one_label=True)
            if problem:
                problems.append((f"baseline.levels.{check_id}.{key}", problem))
    return problems


def _check_item_problems(where: str, item: dict, cls: type[Check]) -> list[tuple[str, str]]:
    problems = []
    if item.get("pool", "run") != "run" and getattr(cls, "scope", "case") != "cohort":
        problems.append((f"{where}.pool", f"pool pools the results of several runs for a "
                         f"cohort-level check; {cls.name} runs per case"))
    bindings = {k: v for k, v in item.items() if k not in CHECK_KEYS}
    for key in bindings:
        if key not in cls.slots:
            allowed = list(CHECK_KEYS) + list(cls.slots)
            problems.append((f"{where}.{key}", f"unknown key {key!r}; allowed keys: "
                             f"{', '.join(allowed)} (slots of {cls.name}: "
                             f"{', '.join(cls.slots)})"))
    for slot, info in cls.slots.items():
        if info.required and slot not in bindings:
            problems.append((f"{where}.{slot}", f"missing binding for required slot {slot!r} "
                             f"(kind {info.kind}) of check {cls.name}; bind it to a case-table "
                             f"role or the model output, e.g. {slot}: <role>"))
    tolerances = item.get("tolerances")
    tolerance_keys = set(tolerances) if isinstance(tolerances, dict) else set()
    for key in tolerance_keys:
        problem = _metric_key_problem(key, cls)
        if problem:
            problems.append((f"{where}.tolerances.{key}", problem))
    cohort = item.get("cohort")
    for j, entry in enumerate(cohort if isinstance(cohort, list) else []):
        if not isinstance(entry, dict) or not isinstance(entry.get("metric"), str):
            continue
        key = entry["metric"]
        problem = _metric_key_problem(key, cls, one_label=True)
        if problem:
            problems.append((f"{where}.cohort[{j}].metric", problem))
        elif entry.get("statistic") == "pass_rate" and not _graded_per_case(key,
                                                                            tolerance_keys):
            problems.append((f"{where}.cohort[{j}]", f"pass_rate of {key!r} counts cases whose "
                             f"per-case verdict is OK: add tolerances.{key} (known: "
                             f"{', '.join(sorted(map(str, tolerance_keys))) or 'none'})"))
    options = item.get("options", {})
    if isinstance(options, dict):
        try:
            TypeAdapter(cls.Options).validate_python(options)
        except ValidationError as exc:
            for err in exc.errors():
                sub = _key_path(tuple(err["loc"]))
                message = err["msg"].removeprefix("Value error, ")
                if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
                    allowed = ", ".join(_fields(cls.Options) or ())
                    message = f"unknown option; allowed options: {allowed}"
                problems.append((f"{where}.options.{sub}", message))
    else:
        problems.append((f"{where}.options", "must be a mapping of option names to values"))
    return problems


def _graded_per_case(key: str, tolerance_keys: set[str]) -> bool:
    """Whether a per-case tolerance grades ``key``: its own, or for ``metric[label]`` the
    default keys ``metric[*]`` and ``metric`` (see :func:`qa.verdicts.grade_measurements`)."""
    metric, label = split_metric_key(key)
    return key in tolerance_keys or (bool(label) and (
        f"{metric}[{WILDCARD_LABEL}]" in tolerance_keys or metric in tolerance_keys))


def _metric_key_problem(key: Any, cls: type[Check], *, one_label: bool = False) -> str | None:
    if not isinstance(key, str) or not _METRIC_KEY.match(key):
        return f"write the metric as 'metric' or 'metric[label]', got {key!r}"
    metric, label = split_metric_key(key)
    if metric not in cls.metrics:
        return (f"check {cls.name} has no metric {metric!r}; its metrics: "
                f"{', '.join(cls.metrics)}")
    if one_label and label == WILDCARD_LABEL:
        return (f"{key!r} names every label; here name one, e.g. '{metric}[bladder]' "
                f"('{metric}[*]' is only for tolerances)")
    return None


def role_kinds(data: dict, classes: dict[str, type[Check]]
                ) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Role -> kind from roles:, the model input and the slot bindings, plus conflicts."""
    kinds: dict[str, str] = {}
    origin: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    attributes = data.get("attributes") if isinstance(data.get("attributes"), dict) else {}

    def claim(role: Any, kind: str, where: str) -> None:
        if not isinstance(role, str):
            return
        if role == "case_id" or role in attributes:
            what = "the case id column" if role == "case_id" else f"attribute {role!r}"
            problems.append((where, f"role {role!r} clashes with {what}; rename one of them"))
        elif role in kinds and kinds[role] != kind:
            problems.append((where, f"role {role!r} is used as kind {kind} here but as kind "
                             f"{kinds[role]} at {origin[role]}; a role holds one kind of file"))
        elif role not in kinds:
            kinds[role], origin[role] = kind, where

    roles = data.get("roles") if isinstance(data.get("roles"), dict) else {}
    for role, decl in roles.items():
        if isinstance(decl, dict) and decl.get("kind") in ("image", "mask", "dose",
                                                           "structures"):
            claim(role, decl["kind"], f"roles.{role}.kind")
            for member in decl.get("members") or []:
                claim(member, "mask", f"roles.{role}.members")
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    if model.get("input") not in kinds:
        claim(model.get("input"), "image", "model.input")
    for i, item in enumerate(data.get("checks") or []):
        if not isinstance(item, dict) or item.get("check") not in classes:
            continue
        cls = classes[item["check"]]
        for slot, role in item.items():
            if slot in cls.slots:
                claim(role, cls.slots[slot].kind, f"checks[{i}].{slot}")
    output = model.get("output")
    if isinstance(output, str) and output not in kinds:
        claim(output, "image", "model.output")
    decl = roles.get(output) if isinstance(output, str) else None
    if (kinds.get(output) == "structures" and model.get("adapter") in ("torch", "command")
            and not (isinstance(decl, dict) and decl.get("labels"))):
        problems.append((f"roles.{output}", f"the model output {output!r} fills a structures "
                         "slot: declare the label map it writes, e.g. roles: {"
                         f"{output}: {{kind: structures, labels: {{1: bladder, 2: rectum}}}}}}"))
    return kinds, problems
