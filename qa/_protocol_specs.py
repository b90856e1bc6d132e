"""The sections of a QA protocol as frozen pydantic models (see :mod:`qa.protocol`).

``model``, ``roles``, ``attributes``, ``checks`` (per case and cohort), ``validation``,
``baseline``, ``trend`` and ``drift``: each class validates its own keys and values and names
what is allowed; :class:`qa.protocol.Protocol` puts them together and checks the rules that
span sections.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from qa import _protocol_rules as _rules
from qa.verdicts import Bound, Levels, checked_action

__all__ = ["ModelSpec", "AttributeSpec", "RoleSpec", "CheckSpec", "CohortSpec",
           "ValidationSpec", "BaselineSpec", "TrendSpec", "DriftSpec"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]
_Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]


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
        return checked_action(action, info)

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
