"""Scoring scales of the risk register: TG-100 bands, Clopper–Pearson bound, ISO 14971 matrix.

Pure functions and frozen records; the tables themselves live in data files
(``qa/risk/data/tg100.yaml``, ``qa/risk/data/iso14971.yaml``) that a department may replace.

References
----------
.. [1] Huq MS et al., "The report of Task Group 100 of the AAPM: Application of risk analysis
   methods to radiation therapy quality management", Med Phys 2016;43(7):4209–4262,
   doi:10.1118/1.4947547, Table II (O, S, D scales). The severity scale was checked against a
   public encoding of Table II; the O and D bands were NOT confirmed (see the data file).
.. [2] Clopper CJ, Pearson ES, "The use of confidence or fiducial limits illustrated in the
   case of the binomial", Biometrika 1934;26(4):404–413, doi:10.1093/biomet/26.4.404.
.. [3] ISO 14971:2019, Medical devices — Application of risk management to medical devices;
   the example 5 × 5 matrix follows Elahi B, Safety Risk Management for Medical Devices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy import stats

from qa.errors import QAInputError

__all__ = [
    "Scales", "IsoMatrix", "clopper_pearson_upper", "clopper_pearson_interval",
    "occurrence_rank", "parse_scales", "parse_matrix", "RiskTemplateError", "DETECTION_CLASSES",
    "ISO_SEVERITIES", "ISO_REGIONS",
]

#: Detection classes, best first (see ``detection:`` in ``tg100.yaml``).
DETECTION_CLASSES = ("every_case", "some_cases", "run_level", "not_in_protocol")
#: ISO 14971 severity categories, mildest first (matrix columns).
ISO_SEVERITIES = ("negligible", "minor", "serious", "critical", "catastrophic")
#: ISO 14971 acceptability regions and their one-letter codes in the data file.
ISO_REGIONS = {"a": "acceptable", "r": "alarp", "u": "unacceptable"}

DATA_DIR = Path(__file__).with_name("data")


def clopper_pearson_interval(k: int, n: int, confidence_level: float = 0.95
                             ) -> tuple[float, float]:
    """Two-sided, equal-tailed Clopper–Pearson ("exact") interval of a binomial proportion.

    Parameters
    ----------
    k : int
        Failures observed, ``0 <= k <= n``.
    n : int
        Trials (cases or runs), ``n >= 1``.
    confidence_level : float
        Two-sided level ``1 − α`` in (0, 1); each tail holds ``α / 2``.

    Returns
    -------
    (lower, upper) : tuple of float
        ``lower = B(α/2; k, n − k + 1)`` (0 when k = 0) and
        ``upper = B(1 − α/2; k + 1, n − k)`` (1 when k = n), B the beta quantile [2]_.

    Examples
    --------
    With no failure in 30 cases the 95 % upper end is ``1 − 0.025^(1/30)``:

    >>> round(clopper_pearson_interval(0, 30)[1], 5), round(1 - 0.025 ** (1 / 30), 5)
    (0.1157, 0.1157)
    """
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise ValueError(f"k and n must be whole numbers, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level!r}")
    alpha = 1.0 - confidence_level
    lower = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lower, upper


def clopper_pearson_upper(k: int, n: int, confidence_level: float = 0.95) -> float:
    """Upper end of :func:`clopper_pearson_interval` (a one-sided ``1 − α/2`` bound)."""
    return clopper_pearson_interval(k, n, confidence_level)[1]


def occurrence_rank(rate: float, upper_percent: Mapping[int, float], above_last: int) -> int:
    """TG-100 occurrence rank O of a failure rate (fraction of cases, 0–1).

    The rank is the smallest whose band upper edge (``upper_percent``, in %) is >= the rate
    in percent (edges inclusive); above every edge, ``above_last``. With the TG-100 table,
    0.05 % → 3, 0.051 % → 4, 5 % → 9, 5.01 % → 10.
    """
    if not math.isfinite(rate) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be a fraction in [0, 1], got {rate!r}")
    percent = 100.0 * rate
    for rank in sorted(upper_percent):
        if percent <= upper_percent[rank]:
            return int(rank)
    return int(above_last)


@dataclass(frozen=True)
class Scales:
    """The O, S, D scales, detection classes and priority rules of one scales file."""

    name: str
    source: str
    occurrence_upper_percent: dict[int, float]
    occurrence_above_last: int
    occurrence_verified: bool
    undetected_percent: dict[int, float]
    detectability_above_last: int
    detectability_verified: bool
    severity_verified: bool
    severity_labels: dict[int, Any]
    detection: dict[str, int]
    severity_high: int
    rpn_high: int
    rpn_medium: int
    confidence_level: float

    def occurrence(self, rate: float) -> int:
        """O of a failure rate (fraction), see :func:`occurrence_rank`."""
        return occurrence_rank(rate, self.occurrence_upper_percent, self.occurrence_above_last)

    @property
    def verified(self) -> bool:
        """True when the O, S and D tables were all checked against their source."""
        return self.occurrence_verified and self.detectability_verified and \
            self.severity_verified


@dataclass(frozen=True)
class IsoMatrix:
    """An ISO 14971 probability × severity matrix with its acceptability regions."""

    name: str
    source: str
    probability: tuple[tuple[str, float], ...]  # (category, lower edge), most probable first
    severity_of_rank: dict[int, str]
    regions: dict[str, dict[str, str]]  # probability -> severity -> region

    def probability_of(self, rate: float) -> str:
        """The first category whose lower edge the rate (fraction) reaches."""
        for category, lower in self.probability:
            if rate >= lower:
                return category
        return self.probability[-1][0]

    def region(self, probability: str, severity: str) -> str:
        """``acceptable``, ``alarp`` or ``unacceptable``."""
        return self.regions[probability][severity]


class RiskTemplateError(QAInputError):
    """A risk template, scales or matrix file does not follow the format.

    ``path`` names the file and ``field`` the key path; the message says what is allowed.
    """


def _fail(where: str, key: str, message: str) -> RiskTemplateError:
    return RiskTemplateError(message, path=where, field=key)


def parse_scales(data: Any, where: str) -> Scales:
    """Validate the mapping read from a scales file (``where`` names it in errors)."""
    data = _mapping(data, where, "(top level)")
    occurrence = _mapping(data.get("occurrence"), where, "occurrence")
    detectability = _mapping(data.get("detectability"), where, "detectability")
    severity = _mapping(data.get("severity"), where, "severity")
    detection = _mapping(data.get("detection"), where, "detection")
    priorities = _mapping(data.get("priorities"), where, "priorities")
    upper = _ranked_numbers(occurrence.get("upper_percent"), where, "occurrence.upper_percent")
    undetected = _ranked_numbers(detectability.get("undetected_percent"), where,
                                 "detectability.undetected_percent")
    missing = [c for c in DETECTION_CLASSES if c not in detection]
    if missing:
        raise _fail(where, "detection", f"missing {', '.join(missing)}: give a D rank 1-10 "
                    f"for each of {', '.join(DETECTION_CLASSES)}")
    level = data.get("confidence_level", 0.95)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.5 <= level < 1:
        raise _fail(where, "confidence_level", f"must be a number in [0.5, 1), got {level!r}")
    return Scales(
        name=str(data.get("name", "")), source=str(data.get("source", "")),
        occurrence_upper_percent=upper,
        occurrence_above_last=_rank(occurrence.get("above_last", 10), where,
                                    "occurrence.above_last"),
        occurrence_verified=occurrence.get("verified") is True,
        undetected_percent=undetected,
        detectability_above_last=_rank(detectability.get("above_last", 10), where,
                                       "detectability.above_last"),
        detectability_verified=detectability.get("verified") is True,
        severity_verified=severity.get("verified") is True,
        severity_labels={int(k): v for k, v in (severity.get("labels") or {}).items()},
        detection={c: _rank(detection[c], where, f"detection.{c}") for c in DETECTION_CLASSES},
        severity_high=_rank(priorities.get("severity_high", 8), where,
                            "priorities.severity_high"),
        rpn_high=_positive_int(priorities.get("rpn_high"), where, "priorities.rpn_high"),
        rpn_medium=_positive_int(priorities.get("rpn_medium"), where, "priorities.rpn_medium"),
        confidence_level=float(level),
    )


def parse_matrix(data: Any, where: str) -> IsoMatrix:
    """Validate the mapping read from an ISO 14971 matrix file."""
    data = _mapping(data, where, "(top level)")
    rows = data.get("probability")
    if not isinstance(rows, list) or not rows:
        raise _fail(where, "probability", "must be a list of {id, min}, most probable first")
    probability = []
    for i, row in enumerate(rows):
        row = _mapping(row, where, f"probability[{i}]")
        lower = row.get("min")
        if isinstance(lower, bool) or not isinstance(lower, (int, float)) or lower < 0:
            raise _fail(where, f"probability[{i}].min", f"must be a number >= 0, got {lower!r}")
        probability.append((str(row.get("id")), float(lower)))
    if [p[1] for p in probability] != sorted((p[1] for p in probability), reverse=True) \
            or probability[-1][1] != 0:
        raise _fail(where, "probability", "list the categories from the most probable "
                    "(highest min) down to one with min 0")
    severity = _mapping(data.get("severity"), where, "severity")
    severity_of_rank: dict[int, str] = {}
    for category in ISO_SEVERITIES:
        for rank in severity.get(category) or []:
            severity_of_rank[_rank(rank, where, f"severity.{category}")] = category
    if sorted(severity_of_rank) != list(range(1, 11)):
        raise _fail(where, "severity", "each TG-100 rank 1-10 must be listed under exactly "
                    f"one of {', '.join(ISO_SEVERITIES)}")
    regions_in = _mapping(data.get("regions"), where, "regions")
    regions: dict[str, dict[str, str]] = {}
    for category, _ in probability:
        cells = regions_in.get(category)
        if not isinstance(cells, list) or len(cells) != len(ISO_SEVERITIES) or \
                any(c not in ISO_REGIONS for c in cells):
            raise _fail(where, f"regions.{category}", "must list 5 of a / r / u (one per "
                        f"severity: {', '.join(ISO_SEVERITIES)}), got {cells!r}")
        regions[category] = {s: ISO_REGIONS[c] for s, c in zip(ISO_SEVERITIES, cells,
                                                                strict=True)}
    return IsoMatrix(name=str(data.get("name", "")), source=str(data.get("source", "")),
                     probability=tuple(probability), severity_of_rank=severity_of_rank,
                     regions=regions)


def _mapping(value: Any, where: str, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, key, f"must be a mapping, got {type(value).__name__}")
    return value


def _rank(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        raise _fail(where, key, f"must be a whole rank 1-10, got {value!r}")
    return value


def _positive_int(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(where, key, f"must be a whole number >= 1, got {value!r}")
    return value


def _ranked_numbers(value: Any, where: str, key: str) -> dict[int, float]:
    value = _mapping(value, where, key)
    out: dict[int, float] = {}
    for rank, number in value.items():
        rank = _rank(rank, where, key)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0:
            raise _fail(where, f"{key}.{rank}", f"must be a percentage >= 0, got {number!r}")
        out[rank] = float(number)
    ordered = [out[r] for r in sorted(out)]
    if not out or ordered != sorted(ordered) or len(set(ordered)) != len(ordered):
        raise _fail(where, key, f"must increase strictly with the rank, got {out}")
    return out
