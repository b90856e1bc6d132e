"""What every check family shares: measurement records, metric descriptions, the check interface.

A *check* is a thin class around the pure functions of its family. It names its input
slots (roles), its options, its metrics with units, and turns one case's volumes into
:class:`Measurement` rows plus JSON-serialisable details (histograms ...). It does no file
I/O, no database access and no printing: the engine (``qa.runner``) feeds it volumes and
stores what it returns.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

__all__ = ["Measurement", "MetricInfo", "Slot", "CheckOutput", "Check", "CohortInput",
           "CohortCheck"]


@dataclass(frozen=True)
class Measurement:
    """One number: ``metric`` (name with unit suffix), ``value``, ``unit``, ``label``.

    ``label`` qualifies the metric (tissue class, structure, criterion); ``""`` is the
    overall value.
    """

    metric: str
    value: float
    unit: str
    label: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))


@dataclass(frozen=True)
class MetricInfo:
    """Describes a metric a check produces."""

    unit: str
    description: str
    better: Literal["lower", "higher", "zero"] = "lower"

    def is_finite(self, value: float) -> bool:  # pragma: no cover - trivial
        return math.isfinite(value)


@dataclass(frozen=True)
class Slot:
    """An input slot of a check, filled by a case-table role (or the model output).

    ``kind`` says how the engine loads it: ``"image"`` (float volume), ``"mask"`` (boolean
    volume), ``"dose"`` (Gy), ``"structures"`` (a read-only mapping structure name ->
    boolean Volume, each mask read when accessed, so iterate it rather than keep its masks:
    an RTSTRUCT rasterised on the grid of slot ``grid_from``, a folder of mask files, a label
    map with a JSON label table, or mask roles grouped in the protocol; see
    :func:`qa.io.read_structures`).
    """

    kind: Literal["image", "mask", "dose", "structures"]
    required: bool = True
    description: str = ""
    grid_from: str | None = None


@dataclass(frozen=True)
class CheckOutput:
    """What a check returns for one case.

    ``problems``: input problems the check met on part of the case and went on past (one
    structure of twenty that cannot be read, is not binary or lies on another grid). Each is a
    :class:`qa.errors.QAInputError` naming what to fix; the engine records it as an error of
    the case (so the case's status is ``error`` and the decision stays blocked) and stores the
    measurements of the rest. The part it concerns is reported as NaN rows, never left out.
    """

    measurements: tuple[Measurement, ...]
    details: dict[str, Any] = field(default_factory=dict)
    problems: tuple[Exception, ...] = ()


class Check(ABC):
    """Base class of the thin per-family check classes.

    Subclasses set the class attributes and implement :meth:`run`. ``Options`` is a
    pydantic dataclass (``extra="forbid"``) so the protocol loader can validate the
    options written in YAML and name the offending key.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    slots: ClassVar[dict[str, Slot]]
    metrics: ClassVar[dict[str, MetricInfo]]
    Options: ClassVar[type]

    def __init__(self, options: Any | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @abstractmethod
    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        """Compute the measurements of one case from volumes keyed by slot name."""

    def require_inputs(self, inputs: dict[str, Any]) -> None:
        """Raise :class:`qa.errors.QAInputError` naming the first required slot absent
        from ``inputs`` (the engine binds slots to roles; a direct caller may forget one)."""
        from qa.errors import QAInputError

        for slot_name, slot in self.slots.items():
            if slot.required and inputs.get(slot_name) is None:
                raise QAInputError(
                    f"input {slot_name!r} ({slot.description}) is missing; map it to a "
                    "case-table role in the protocol.", check=self.name)


@dataclass(frozen=True)
class CohortInput:
    """What a cohort-level check sees: the run's per-case results and the case attributes.

    ``measurements``: columns case_id, check_id, check, metric, label, value, unit (one row
    per per-case measurement of the run, or of several runs when the engine pools them).
    ``cases``: case_id, then one column per declared attribute (numbers for numeric
    attributes, text for categorical ones, None/NaN when blank). ``verdicts``: the per-case
    verdicts (case_id, check_id, metric, label, value, level). ``attributes``: attribute
    name -> its protocol declaration (``values`` or ``min``/``max``, ``unit``).
    """

    measurements: Any
    cases: Any
    verdicts: Any
    attributes: dict[str, Any] = field(default_factory=dict)


class CohortCheck(ABC):
    """Base class of checks that run once per run on the whole cohort (e.g. subgroup bias).

    Same class attributes as :class:`Check` but no ``slots``: the engine calls
    :meth:`run_cohort` after every case has been checked. Measurements it returns are
    cohort-level (stored with no case); details are JSON-serialisable.
    """

    scope: ClassVar[str] = "cohort"
    #: No per-case inputs: a protocol entry of a cohort check has options and levels only.
    slots: ClassVar[dict[str, Slot]] = {}
    name: ClassVar[str]
    title: ClassVar[str]
    metrics: ClassVar[dict[str, MetricInfo]]
    Options: ClassVar[type]

    def __init__(self, options: Any | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @abstractmethod
    def run_cohort(self, data: CohortInput) -> CheckOutput:
        """Compute the cohort-level measurements and details."""
