"""Strict JSON for the store's JSON text columns.

Stored JSON is strict (RFC 8259): ``NaN`` and ``±Infinity`` are not JSON, so non-finite floats
are written as ``null``. NumPy scalars and arrays, datetimes, paths, enums and dataclasses are
converted to their natural JSON form first.
"""

from __future__ import annotations

import json
from typing import Any

from qa.jsonsafe import json_safe

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
    """Decode a stored JSON text; SQL NULL stays ``None`` (also when pandas' string
    inference already turned it into a missing value)."""
    return json.loads(text) if isinstance(text, str) else None
