"""Display formatting for the HTML report: message catalogs, numbers with units, times.

Private to :mod:`reports`; :class:`Formatter` is re-exported by :mod:`reports.html`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from reports.plots import finite_or_none, missing

__all__ = ["Formatter", "SUPPORTED_LANGUAGES", "LEVELS", "level_rank"]

# Named after the public module, as before the split (log filters and caplog rely on it).
logger = logging.getLogger("reports.html")

#: Report languages, each with a message catalog ``reports/locales/<language>.yaml``.
SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "fr")
#: Verdict levels from best to worst (QATrack+ convention: tolerance warns, action stops use).
LEVELS: tuple[str, ...] = ("OK", "TOLERANCE", "ACTION")

_LOCALES = Path(__file__).with_name("locales")
_UNIT_DECIMALS = {"HU": 1, "dB": 2, "%": 1, "mm": 2, "Gy": 2, "s": 1, "": 3, "1": 3}


class Formatter:
    """Labels from the message catalog and numbers with units, for one language.

    Parameters
    ----------
    language : str
        One of :data:`SUPPORTED_LANGUAGES`.

    Notes
    -----
    Decimals by unit: HU 1, dB 2, % 1, mm 2, Gy 2, s 1, dimensionless 3 (SSIM, Dice);
    ``n_*`` metrics and voxel counts are integers; other units 4 significant digits.
    Missing or non-finite numbers print as ``n/a``, never ``nan``. French uses a decimal
    comma and a narrow no-break space between thousands.
    """

    def __init__(self, language: str) -> None:
        if language not in SUPPORTED_LANGUAGES:
            raise ValueError(
                f"unsupported report language {language!r}; "
                f"supported languages: {', '.join(SUPPORTED_LANGUAGES)}"
            )
        self.language = language
        self._catalog = _catalog(language)
        self._english = _catalog("en")

    def t(self, key: str, default: str | None = None, **values: Any) -> str:
        """The catalog text of ``key`` (English if this catalog lacks it), ``{name}`` filled."""
        message = self._catalog.get(key)
        if message is None:
            message = self._english.get(key, default)
            if message is None:
                raise KeyError(f"message {key!r} is in no catalog; add it to reports/locales")
            if default is None:
                logger.warning("message %r missing from the %s catalog", key, self.language)
        return message.format(**values) if values else message

    def number(self, value: Any, metric: str, unit: str) -> str:
        """``value`` with the precision its metric and unit call for (no unit appended)."""
        number = finite_or_none(value)
        if number is None:
            return "n/a"
        decimals = _decimals(metric, unit)
        body = f"{number:,.{decimals}f}" if decimals is not None else f"{number:,.4g}"
        if body.startswith("-") and not any(digit in body for digit in "123456789"):
            body = body[1:]  # rounds to zero: "0.0", not "-0.0" (a sign without a digit)
        return self._localise(body)

    def quantity(self, value: Any, metric: str, unit: str) -> str:
        """:meth:`number` followed by the (translated) unit."""
        body, symbol = self.number(value, metric, unit), self.unit(unit)
        return body if body == "n/a" or not symbol else f"{body} {symbol}"

    def bounds(self, low: Any, high: Any, metric: str, unit: str) -> str:
        """A tolerance or action interval: ``≥ a``, ``≤ b``, ``a – b`` or ``—``."""
        low_ok, high_ok = finite_or_none(low) is not None, finite_or_none(high) is not None
        suffix = f" {self.unit(unit)}" if self.unit(unit) else ""
        if low_ok and high_ok:
            return f"{self.number(low, metric, unit)} – {self.number(high, metric, unit)}{suffix}"
        if low_ok:
            return f"≥ {self.number(low, metric, unit)}{suffix}"
        if high_ok:
            return f"≤ {self.number(high, metric, unit)}{suffix}"
        return "—"

    def unit(self, unit: str) -> str:
        """The unit symbol in this language (``HU`` is ``UH`` in French)."""
        if unit in ("", "1"):
            return ""
        return self._catalog.get(f"unit.{unit}", unit)

    def level(self, level: str) -> dict[str, str]:
        """A verdict level for display: code, CSS class and translated text."""
        level_rank(level)
        return {"code": level, "css": level.lower(), "text": self.t(f"level.{level}")}

    def error_level(self) -> dict[str, str]:
        """The level shown for a case that failed to run."""
        return {"code": "ERROR", "css": "error", "text": self.t("level.ERROR")}

    def time(self, value: Any) -> str:
        """ISO 8601 in UTC (``…Z``); a naive time is printed as is and flagged."""
        if missing(value):
            return "n/a"
        if not isinstance(value, datetime):
            return str(value)
        if value.tzinfo is None:
            return f"{value.isoformat(timespec='seconds')} ({self.t('time.no_zone')})"
        return value.astimezone(timezone.utc).isoformat(timespec="seconds").replace(
            "+00:00", "Z")

    def attribute(self, value: Any) -> str:
        """A case attribute (sex, age, BMI …) as text."""
        if missing(value):
            return "n/a"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return str(value)
        if float(value).is_integer():
            return self._localise(f"{int(value)}")
        return self._localise(f"{float(value):g}")

    def _localise(self, body: str) -> str:
        if self.language == "fr":
            return body.replace(",", "\u202f").replace(".", ",")
        return body


def level_rank(level: str) -> int:
    """Position of a level in :data:`LEVELS` (0 = OK); ValueError for any other text."""
    try:
        return LEVELS.index(level)
    except ValueError:
        raise ValueError(
            f"verdict level {level!r} in the results store is not one of {', '.join(LEVELS)}; "
            "the store was written by an incompatible version or edited by hand"
        ) from None



def _decimals(metric: str, unit: str) -> int | None:
    if metric.startswith("n_") or unit in ("voxel", "voxels", "count"):
        return 0
    if "ssim" in metric:
        return 3
    return _UNIT_DECIMALS.get(unit)


@cache
def _catalog(language: str) -> Mapping[str, str]:
    """Flattened ``reports/locales/<language>.yaml`` merged with the section catalogs
    ``reports/locales/<language>/*.yaml`` (read-only): nested keys joined by dots.

    A key defined twice is a mistake in the catalogs and raises ``ValueError``.
    """
    files = [_LOCALES / f"{language}.yaml", *sorted((_LOCALES / language).glob("*.yaml"))]
    merged: dict[str, str] = {}
    for path in files:
        with open(path, encoding="utf-8") as handle:
            flat = _flatten(yaml.safe_load(handle) or {})
        clash = sorted(set(flat) & set(merged))
        if clash:
            raise ValueError(f"message keys {clash} defined twice in the {language} catalogs "
                             f"(again in {path.name})")
        merged.update(flat)
    return MappingProxyType(merged)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat
