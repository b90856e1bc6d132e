"""Strict JSON for the store's JSON text columns.

Stored JSON is strict (RFC 8259): ``NaN`` and ``±Infinity`` are not JSON, so non-finite floats
are written as ``null``. NumPy scalars and arrays, datetimes, paths, enums and dataclasses are
converted to their natural JSON form first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

__all__ = ["to_json_text", "from_json_text", "json_safe"]


def to_json_text(value: Any, *, what: str) -> str:
    """Strict JSON text of ``value`` (non-finite floats → ``null``).

    Parameters
    ----------
    value : Any
        JSON-like data; see :func:`json_safe` for the conversions applied.
    what : str
        What is being stored, used in the error message (e.g. ``"details['histogram']"``).

    Raises
    ------
    TypeError
        When a value has no JSON form; the message names ``what`` and the offending type.
    """
    try:
        return json.dumps(json_safe(value), allow_nan=False, ensure_ascii=False,
                          separators=(",", ":"))
    except TypeError as exc:
        raise TypeError(f"{what} cannot be stored as JSON: {exc}; convert it to numbers, "
                        "strings, lists and dicts first") from None


def from_json_text(text: str | None) -> Any:
    """Decode a stored JSON text; ``None`` (SQL NULL) stays ``None``."""
    return None if text is None else json.loads(text)


def json_safe(value: Any) -> Any:
    """Recursively convert ``value`` into plain JSON types.

    Non-finite floats become ``None``; NumPy scalars become Python numbers and arrays lists;
    datetimes and dates become ISO 8601 text; paths become POSIX text; enums their value;
    dataclass instances dicts; mapping keys text; tuples and sets lists (sets sorted).
    Anything else is returned unchanged (``json.dumps`` then refuses it).
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted(json_safe(item) for item in value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return value
