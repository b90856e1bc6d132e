"""Plain, strict JSON values from anything a check, the engine or great_expectations returns.

One converter for the whole code base (results records, store columns, validation reports):
non-finite floats become ``None`` because NaN and ±Infinity are not JSON (RFC 8259).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

__all__ = ["json_safe"]


def json_safe(value: Any, *, fallback: Callable[[Any], Any] | None = None) -> Any:
    """Recursively convert ``value`` into plain JSON types.

    Non-finite floats become ``None``; NumPy scalars become Python numbers and arrays lists;
    datetimes and dates become ISO 8601 text; paths become POSIX text; enums their value;
    dataclass instances dicts; mapping keys text; tuples and sets lists (sets sorted);
    pandas' missing markers (``pd.NA``, ``pd.NaT``) ``None``. Anything else goes through
    ``fallback`` (e.g. ``str``) when given, else is returned unchanged (``json.dumps`` then
    refuses it).
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return json_safe(value.item(), fallback=fallback)
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist(), fallback=fallback)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item, fallback=fallback) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item, fallback=fallback) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted(json_safe(item, fallback=fallback) for item in value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, enum.Enum):
        return json_safe(value.value, fallback=fallback)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe({f.name: getattr(value, f.name) for f in dataclasses.fields(value)},
                         fallback=fallback)
    if _is_pandas_missing(value):
        return None
    return fallback(value) if fallback is not None else value


def _is_pandas_missing(value: Any) -> bool:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False
    return value is pd.NA or value is pd.NaT
