"""The QA protocol: a YAML file naming the model, the cases, the checks and their levels.

:func:`load_protocol` reads and validates it into a frozen :class:`Protocol`. Every problem a
user can make is reported at once, in one :class:`~qa.errors.ProtocolError` naming the file
and the key path of each problem (``checks[0].tolerances.mae_hu.action``) with what is
allowed. The format is documented in ``docs/protocol.md``. The schema of each section
(model, roles, attributes, checks, cohort checks, validation, baseline, trend, drift) is in
:mod:`qa._protocol_specs`; the cross-section rules in :mod:`qa._protocol_rules`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
)

from checks.base import Check
from qa import _protocol_rules as _rules
from qa._protocol_specs import (
    AttributeSpec,
    BaselineSpec,
    CheckSpec,
    CohortSpec,
    DriftSpec,
    ModelSpec,
    RoleSpec,
    TrendSpec,
    ValidationSpec,
    _Frozen,
    _Name,
)
from qa.errors import ProtocolError
from qa.hashing import sha256_text

__all__ = [
    "load_protocol", "Protocol", "ModelSpec", "AttributeSpec", "RoleSpec", "CheckSpec",
    "CohortSpec", "ValidationSpec", "BaselineSpec", "TrendSpec", "DriftSpec",
]

logger = logging.getLogger(__name__)

# Slots whose roles hold Hounsfield units (validated against ``validation.hu_range``).
_HU_SLOTS = {"hu_accuracy": ("reference", "evaluated")}


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

