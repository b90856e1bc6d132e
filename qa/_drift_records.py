"""Result records of :mod:`qa.drift` (frozen, JSON-serialisable).

Public names are re-exported by :mod:`qa.drift`; see its docstring for the method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from qa.validation import ValidationReport, _jsonable
from qa.verdicts import Level, Verdict

__all__ = ["FeatureExpectation", "DriftSuite", "FeatureDistance", "DriftFinding", "DriftReport",
           "ModelChange"]


@dataclass(frozen=True)
class FeatureExpectation:
    """What commissioning allows for one feature.

    ``kind`` is ``"categorical"`` (``value_set``) or ``"numeric"`` (``min_value`` ..
    ``max_value``, the observed ``observed_min`` .. ``observed_max`` widened by the margin).
    ``not_null``: commissioning had no missing value, so none is allowed.
    """

    feature: str
    kind: str
    value_set: tuple[str, ...] | None
    min_value: float | None
    max_value: float | None
    observed_min: float | None
    observed_max: float | None
    not_null: bool

    def describe(self) -> str:
        """Human text of what commissioning allows."""
        if self.kind == "categorical":
            return "one of " + ", ".join(self.value_set or ())
        if self.min_value == self.max_value:
            return f"exactly {self.min_value:g} (constant at commissioning)"
        return (f"within [{self.min_value:.4g}, {self.max_value:.4g}] (commissioning range "
                f"[{self.observed_min:.4g}, {self.observed_max:.4g}] widened)")


@dataclass(frozen=True)
class DriftSuite:
    """The expectations generated from a commissioning feature frame."""

    expectations: tuple[FeatureExpectation, ...]
    margin_fraction: float
    n_reference: int

    def expectation(self, feature: str) -> FeatureExpectation:
        """The expectation of one feature (KeyError naming the features otherwise)."""
        for item in self.expectations:
            if item.feature == feature:
                return item
        raise KeyError(f"no feature {feature!r} in the drift suite; features: "
                       f"{', '.join(e.feature for e in self.expectations)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return _jsonable({"margin_fraction": self.margin_fraction,
                          "n_reference": self.n_reference,
                          "expectations": [vars(e) for e in self.expectations]})


@dataclass(frozen=True)
class FeatureDistance:
    """Two-sample comparison of one numeric feature (unit of the feature for medians)."""

    feature: str
    n_reference: int
    n_current: int
    ks_statistic: float
    ks_p_value: float
    reference_median: float
    current_median: float
    median_shift: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None)."""
        return _jsonable(vars(self))


@dataclass(frozen=True)
class DriftFinding:
    """One feature that moved away from commissioning.

    ``reasons``: ``"outside_commissioning"`` (a value outside the value set or widened
    range), ``"missing_values"``, ``"missing_column"``, ``"distribution_shift"`` (KS
    ``p < ks_alpha``). ``moved`` lists up to 20 ``{case_id, value}`` that broke an
    expectation; ``commissioning`` says what was allowed.
    """

    feature: str
    kind: str
    reasons: tuple[str, ...]
    commissioning: str
    moved: tuple[dict[str, Any], ...]
    current_values: tuple[Any, ...]
    distance: FeatureDistance | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        out = {k: v for k, v in vars(self).items() if k != "distance"}
        out["distance"] = None if self.distance is None else self.distance.to_dict()
        return _jsonable(out)


@dataclass(frozen=True)
class DriftReport:
    """Outcome of :func:`detect_input_drift`."""

    suite: DriftSuite
    validation: ValidationReport
    distances: tuple[FeatureDistance, ...]
    findings: tuple[DriftFinding, ...]
    ks_alpha: float

    @property
    def drifted(self) -> bool:
        """True when at least one feature moved."""
        return bool(self.findings)

    def features(self) -> list[str]:
        """Names of the features that moved, in suite order."""
        return [f.feature for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (the GX result under ``validation``)."""
        return {"drifted": self.drifted, "ks_alpha": self.ks_alpha,
                "suite": self.suite.to_dict(), "validation": self.validation.to_dict(),
                "distances": [d.to_dict() for d in self.distances],
                "findings": [f.to_dict() for f in self.findings]}


@dataclass(frozen=True)
class ModelChange:
    """Result of :func:`compare_fingerprints`: ``level`` ACTION when the model changed."""

    changed: bool
    fields: tuple[str, ...]
    baseline: dict[str, Any]
    current: dict[str, Any]
    level: Level
    message: str

    def to_verdict(self, check_id: str = "model_fingerprint") -> Verdict:
        """A run-level verdict (``case_id=None``, metric ``model_sha256``, value NaN)."""
        return Verdict(None, check_id, "model_sha256", "", "fingerprint", math.nan,
                       self.level, None, None, None, None, self.message)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``level`` as text)."""
        return _jsonable({**vars(self), "level": str(self.level)})
