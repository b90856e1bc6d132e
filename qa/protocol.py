"""The QA protocol: a YAML file naming the model, the cases, the checks and their levels.

:func:`load_protocol` reads and validates it into a frozen :class:`Protocol`. Every problem a
user can make is reported at once, in one :class:`~qa.errors.ProtocolError` naming the file
and the key path of each problem (``checks[0].tolerances.mae_hu.action``) with what is
allowed. The format is documented in ``docs/protocol.md``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from checks.base import Check
from qa import _protocol_rules as _rules
from qa.errors import ProtocolError
from qa.hashing import sha256_text
from qa.verdicts import Bound, Levels, nesting_problem

__all__ = [
    "load_protocol", "Protocol", "ModelSpec", "AttributeSpec", "RoleSpec", "CheckSpec",
    "CohortSpec", "ValidationSpec", "BaselineSpec", "TrendSpec", "DriftSpec",
]

logger = logging.getLogger(__name__)

_Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]
_Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]
# Slots whose roles hold Hounsfield units (validated against ``validation.hu_range``).
_HU_SLOTS = {"hu_accuracy": ("reference", "evaluated")}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Frozen):
    """The model under QA and how the engine runs it (``adapter``)."""

    name: str = Field(min_length=1)
    version: str
    adapter: Literal["precomputed", "torch", "command"]
    path: str | None = Field(default=None, validate_default=True)
    entrypoint: str | None = Field(default=None, validate_default=True)
    command: str | None = Field(default=None, validate_default=True)
    input: _Name | None = Field(default=None, validate_default=True)
    output: _Name
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("version", mode="before")
    @classmethod
    def _quoted_version(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"must be text: write it in quotes, e.g. version: \"{value}\" "
                             "(YAML reads 1.10 as the number 1.1)")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("adapter") == "torch":
            raise ValueError("required for adapter torch: the TorchScript file, or the weights "
                             "(state_dict) when entrypoint is given")
        return value

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("adapter") != "torch":
            raise ValueError("only allowed with adapter torch")
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise ValueError(f"must be 'package.module:callable', got {value!r}")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None, info: ValidationInfo) -> str | None:
        adapter = info.data.get("adapter")
        if adapter == "command":
            if not value or "{input}" not in value or "{output}" not in value:
                raise ValueError("adapter command needs a command line containing both "
                                 f"placeholders {{input}} and {{output}}, got {value!r}")
        elif value is not None:
            raise ValueError("only allowed with adapter command")
        return value

    @field_validator("input")
    @classmethod
    def _input(cls, value: str | None, info: ValidationInfo) -> str | None:
        adapter = info.data.get("adapter")
        if value is None and adapter in ("torch", "command"):
            raise ValueError(f"required for adapter {adapter}: the case-table role fed to the "
                             "model, e.g. input: mr")
        return value


class AttributeSpec(_Frozen):
    """A case-table column describing the patient or acquisition.

    Categorical (``values``) or numeric (``min`` and/or ``max``, inclusive, in ``unit``).
    """

    values: list[str] | None = None
    min: _Finite | None = None
    max: _Finite | None = None
    unit: str | None = None
    required: bool = True

    @field_validator("values", mode="before")
    @classmethod
    def _values(cls, value: Any) -> Any:
        if isinstance(value, list):
            out = []
            for item in value:
                if isinstance(item, bool) or not isinstance(item, (str, int)):
                    raise ValueError(f"values are compared as text: write {item!r} in quotes "
                                     "exactly as it appears in the case table")
                out.append(str(item))
            if not out or len(set(out)) != len(out):
                raise ValueError(f"need a non-empty list of distinct values, got {out}")
            return out
        return value

    @model_validator(mode="after")
    def _kind(self) -> AttributeSpec:
        numeric = self.min is not None or self.max is not None
        if self.values is not None and numeric:
            raise ValueError("give either values (categorical) or min/max (numeric), not both")
        if self.values is None and not numeric:
            raise ValueError("give values (categorical) or min and/or max (numeric)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} > max {self.max:g}; min must be <= max")
        return self

    @property
    def numeric(self) -> bool:
        """True for a numeric attribute (min/max), False for a categorical one (values)."""
        return self.values is None


class RoleSpec(_Frozen):
    """Declares a case-table path column: its kind, modality, and whether it is required.

    ``required`` None (default) means: required when bound to a required check slot or fed to
    the model, optional otherwise.

    A ``structures`` role is either a case-table column (an RTSTRUCT file, a folder of mask
    files, or a label map with its JSON label table) or, with ``members``, a group of mask
    roles of the case table (each member a column; a blank cell means that structure is
    absent for the case). With ``labels`` (label value -> structure name) it is a label map:
    a case-table image of integer labels (no JSON table needed) or the output of the model
    (``model.output``), split into one mask per listed label; other values are background.
    """

    kind: Literal["image", "mask", "dose", "structures"]
    modality: str | None = None
    required: bool | None = None
    members: list[_Name] | None = None
    labels: dict[int, str] | None = None

    @model_validator(mode="after")
    def _members(self) -> RoleSpec:
        if self.members is not None:
            if self.kind != "structures":
                raise ValueError("members is only allowed with kind: structures")
            if not self.members or len(set(self.members)) != len(self.members):
                raise ValueError(f"members must be a non-empty list of distinct mask roles, "
                                 f"got {self.members}")
        if self.labels is not None:
            if self.kind != "structures" or self.members is not None:
                raise ValueError("labels is only allowed with kind: structures, without "
                                 "members (a label map is one image)")
            names = [name.strip() for name in self.labels.values()]
            if not names or not all(names) or len(set(names)) != len(names):
                raise ValueError(f"labels must map label values to distinct, non-blank "
                                 f"structure names, e.g. {{1: bladder, 2: rectum}}, got "
                                 f"{self.labels}")
        return self


class CohortSpec(_Frozen):
    """One cohort aggregate graded over the run's cases (:func:`qa.verdicts.grade_cohort`)."""

    metric: str
    statistic: Literal["mean", "median", "p95", "min", "max", "pass_rate"]
    tolerance: Bound
    action: Bound

    @field_validator("action")
    @classmethod
    def _nested(cls, action: Bound, info: ValidationInfo) -> Bound:
        tolerance = info.data.get("tolerance")
        problem = nesting_problem(tolerance, action) if tolerance is not None else None
        if problem:
            raise ValueError(problem)
        return action

    @property
    def levels(self) -> Levels:
        """The two levels as :class:`~qa.verdicts.Levels`."""
        return Levels(self.tolerance, self.action)


class CheckSpec(_Frozen):
    """One check of the protocol: name, id, slot bindings, options and levels.

    In YAML the slot bindings are written as keys of the check (``reference: ct``); they are
    collected in ``bindings`` (slot name -> role). ``pool`` (cohort-level checks only):
    ``run`` (default) analyses this run's cases; ``since_baseline`` pools the active
    baseline's run, the protocol's complete runs since, and this run (each case's latest
    result counts), e.g. a commissioning cohort plus the monthly cases accumulated since.
    """

    check: str
    id: _Name
    pool: Literal["run", "since_baseline"] = "run"
    options: dict[str, Any] = Field(default_factory=dict)
    tolerances: dict[str, Levels] = Field(default_factory=dict)
    cohort: list[CohortSpec] = Field(default_factory=list)
    bindings: dict[str, _Name] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_bindings(cls, data: Any) -> Any:
        if isinstance(data, dict) and "bindings" not in data:
            data = dict(data)
            bindings = {k: data.pop(k) for k in list(data) if k not in _rules.CHECK_KEYS}
            data["bindings"] = bindings
            if "id" not in data and isinstance(data.get("check"), str):
                data["id"] = data["check"]
        return data


class ValidationSpec(_Frozen):
    """Image-metadata expectations (see :func:`qa.validation.validate_image_metadata`)."""

    hu_range: tuple[_Finite, _Finite] | None = None
    spacing_mm: Bound | None = None

    @field_validator("hu_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] >= value[1]:
            raise ValueError(f"must be [low, high] with low < high, got {list(value)}")
        return value


class BaselineSpec(_Frozen):
    """The optional ``baseline:`` key of a periodic protocol (see ``docs/periodic.md``).

    ``protocol``: name of the protocol whose baseline applies (default: this protocol's
    name). ``constancy_cases``: the case ids of the constancy set (default: every case of
    the baseline run); each must be in the run and in the baseline, else ACTION.
    ``levels``: check id -> metric key (``metric`` or ``metric[label]``) -> levels on
    the absolute difference to the baseline value, in the metric's unit.
    """

    protocol: str | None = None
    constancy_cases: list[str] | None = None
    levels: dict[str, dict[str, Levels]] = Field(default_factory=dict)


class TrendSpec(_Frozen):
    """One cohort aggregate charted over a periodic protocol's runs (``trend:``).

    ``check``: a check id of the protocol; ``metric``: ``metric`` or ``metric[label]``;
    ``statistic``: a cohort statistic that check declares under ``cohort:`` for that metric
    (the chart reads the stored cohort verdicts); ``charts``: any of ``imr``, ``ewma``,
    ``cusum`` (:mod:`qa.trend`); ``baseline_points``: leading runs that set the limits
    (>= 2; limits are provisional below 8); ``level`` of an alarm.
    """

    check: _Name
    metric: str
    statistic: Literal["mean", "median", "p95", "min", "max", "pass_rate"] = "mean"
    charts: list[Literal["imr", "ewma", "cusum"]] = Field(
        default_factory=lambda: ["imr", "ewma", "cusum"], min_length=1)
    baseline_points: int = Field(default=6, ge=2)
    run_rules: bool = False
    level: Literal["TOLERANCE", "ACTION"] = "TOLERANCE"


class DriftSpec(_Frozen):
    """Input drift of a periodic protocol (``drift:``): which declared attributes describe
    the acquisition (scanner, kVp, slice thickness, HU percentiles ...), compared with the
    baseline run's cases by :func:`qa.drift.detect_input_drift`; ``level`` of a finding."""

    features: list[_Name] = Field(min_length=1)
    level: Literal["TOLERANCE", "ACTION"] = "TOLERANCE"


class Protocol(_Frozen):
    """A validated protocol. Build it with :func:`load_protocol`.

    Besides the YAML fields it exposes ``path``, ``base_dir`` (the protocol's folder, against
    which relative paths are resolved), ``text`` (the YAML as written), ``sha256`` (of the
    text) and ``case_table_path``.
    """

    name: str = Field(min_length=1)
    kind: Literal["commissioning", "periodic"]
    description: str | None = None
    operator: str | None = None
    model: ModelSpec
    cases: str
    data_root: str | None = None
    attributes: dict[_Name, AttributeSpec] = Field(default_factory=dict)
    roles: dict[_Name, RoleSpec] = Field(default_factory=dict)
    checks: list[CheckSpec] = Field(min_length=1)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    baseline: BaselineSpec | None = None
    trend: list[TrendSpec] = Field(default_factory=list)
    drift: DriftSpec | None = None
    risk: str | None = None

    _path: Path = PrivateAttr(default=Path("protocol.yaml"))
    _text: str = PrivateAttr(default="")

    @property
    def path(self) -> Path:
        """The protocol file (absolute)."""
        return self._path

    @property
    def base_dir(self) -> Path:
        """The folder of the protocol file; relative paths in it are resolved from here."""
        return self._path.parent

    @property
    def text(self) -> str:
        """The YAML text as written."""
        return self._text

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of :attr:`text` (UTF-8)."""
        return sha256_text(self._text)

    @property
    def case_table_path(self) -> Path:
        """The case table, resolved against :attr:`base_dir`."""
        return self.base_dir / self.cases

    @property
    def data_root_path(self) -> Path:
        """The folder every case-table path must lie in (symlinks resolved): ``data_root``
        resolved against :attr:`base_dir`, else the case table's folder."""
        if self.data_root is None:
            return self.case_table_path.parent
        return self.base_dir / Path(self.data_root).expanduser()

    @property
    def model_path(self) -> Path | None:
        """``model.path`` resolved against :attr:`base_dir`, or None."""
        return None if self.model.path is None else self.base_dir / self.model.path

    @property
    def risk_path(self) -> Path | None:
        """``risk`` resolved against :attr:`base_dir`, or None."""
        return None if self.risk is None else self.base_dir / self.risk

    def check_spec(self, check_id: str) -> CheckSpec:
        """The check with this id (KeyError listing the ids otherwise)."""
        for spec in self.checks:
            if spec.id == check_id:
                return spec
        raise KeyError(f"no check {check_id!r}; ids: {', '.join(c.id for c in self.checks)}")

    def roles_used(self) -> dict[str, str]:
        """Role -> kind (``image``, ``mask``, ``dose``) of every role the protocol uses.

        From the ``roles:`` declarations, the model input (kind ``image`` unless declared) and
        the check slot bindings (the slot's kind), in that order of appearance.
        """
        shape = {
            "attributes": dict(self.attributes),
            "roles": {r: {"kind": d.kind, "members": d.members} for r, d in self.roles.items()},
            "model": {"input": self.model.input, "output": self.model.output},
            "checks": [{"check": c.check, **c.bindings} for c in self.checks],
        }
        return _rules.role_kinds(shape, _rules.check_classes(self.checks))[0]

    def required_roles(self) -> set[str]:
        """Roles every case must provide: ``roles.<r>.required`` when given, otherwise roles
        fed to the model or bound to a required check slot."""
        required = {self.model.input} if self.model.input else set()
        classes = _rules.check_classes(self.checks)
        for spec in self.checks:
            for slot, role in spec.bindings.items():
                if classes[spec.check].slots[slot].required:
                    required.add(role)
        required -= {r for r, d in self.roles.items() if d.required is False}
        required |= {r for r, d in self.roles.items() if d.required}
        if self.model.adapter != "precomputed":
            required.discard(self.model.output)
        return required - set(self.grouped_roles())

    def case_table_roles(self) -> dict[str, str]:
        """Role -> kind of the roles read from the case table (the model output is not, unless
        the adapter is ``precomputed``)."""
        roles = self.roles_used()
        if self.model.adapter != "precomputed":
            roles.pop(self.model.output, None)
        for role in self.grouped_roles():
            roles.pop(role, None)
        return roles

    def grouped_roles(self) -> dict[str, list[str]]:
        """``structures`` roles assembled from member mask roles: role -> members."""
        return {r: list(d.members) for r, d in self.roles.items() if d.members is not None}

    def ct_roles(self) -> set[str]:
        """Image roles holding Hounsfield units: declared ``modality: CT``, or bound to the
        reference/evaluated slots of ``hu_accuracy`` (except the output of a model the engine
        runs: its HU values are what the checks judge, not input data to validate)."""
        roles = {r for r, d in self.roles.items() if d.kind == "image"
                 and (d.modality or "").upper() == "CT"}
        produced = self.model.output if self.model.adapter != "precomputed" else None
        for spec in self.checks:
            for slot in _HU_SLOTS.get(spec.check, ()):
                # a model's output is judged by the checks, not by data validation
                if slot in spec.bindings and spec.bindings[slot] != produced:
                    roles.add(spec.bindings[slot])
        return roles

    def check_instances(self) -> list[tuple[CheckSpec, Check]]:
        """Each check spec with an instance of its class built from the validated options."""
        classes = _rules.check_classes(self.checks)
        out = []
        for spec in self.checks:
            cls = classes[spec.check]
            options = TypeAdapter(cls.Options).validate_python(spec.options)
            out.append((spec, cls(options)))
        return out


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol YAML file.

    Parameters
    ----------
    path : str or Path
        The YAML file; ``cases``, ``model.path`` and ``risk`` are relative to its folder.

    Returns
    -------
    Protocol

    Raises
    ------
    ProtocolError
        The file is missing, not UTF-8, not valid YAML (line and column given), or violates
        the schema; the message lists every problem with its key path and what is allowed,
        and ``error.problems`` holds them as ``(key_path, message)`` pairs.
    """
    path = Path(path).resolve()
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ProtocolError("protocol file not found; check the path", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the "
                            "protocol as UTF-8", path=str(path)) from None
    data = _rules.parse_yaml(text, path)
    problems: list[tuple[str, str]] = []
    protocol = None
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        problems.extend(_rules.pydantic_problems(exc, Protocol))
    problems.extend(_rules.semantic_problems(data))
    problems = _rules.dedupe(problems)
    if problems:
        raise _rules.problems_error(problems, path)
    assert protocol is not None
    protocol._path = path
    protocol._text = text
    logger.debug("loaded protocol %s (sha256 %s)", path, protocol.sha256)
    return protocol

