"""Row builders and argument checks shared by :class:`qa.store.Store` writes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Mapping
from typing import Any

from qa.store._schema import LEVELS

__all__ = ["cases_of", "where", "aware", "verdict_row"]

_VERDICT_BOUNDS = ("tolerance_min", "tolerance_max", "action_min", "action_max")


def cases_of(case_id: str | None) -> set[str]:
    return set() if case_id is None else {case_id}


def where(case_id: str | None) -> str:
    return "cohort level (no case)" if case_id is None else f"case {case_id!r}"


def aware(value: dt.datetime | None, name: str) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.timezone.utc)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} {value.isoformat()} has no time zone; give a timezone-aware "
                         "datetime, e.g. datetime.now(timezone.utc)")
    return value.astimezone(dt.timezone.utc)


def verdict_row(run_id: int, index: int, item: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        data = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    elif isinstance(item, Mapping):
        data = dict(item)
    else:
        raise TypeError(f"verdict {index}: expected a mapping or a dataclass instance, got "
                        f"{type(item).__name__}")
    missing = [key for key in ("check_id", "metric", "level") if data.get(key) is None]
    if missing:
        raise ValueError(f"verdict {index}: missing {', '.join(missing)}")
    level = data["level"]
    if isinstance(level, enum.Enum):
        level = level.value if isinstance(level.value, str) else level.name
    level = str(level).upper()
    if level not in LEVELS:
        raise ValueError(f"verdict {index} ({data['check_id']}.{data['metric']}): level "
                         f"{data['level']!r} is not one of {', '.join(LEVELS)}")
    value = data.get("value")
    return {
        "run_id": run_id, "case_id": data.get("case_id"), "check_id": data["check_id"],
        "metric": data["metric"], "label": data.get("label") or "",
        "statistic": data.get("statistic") or "value",
        "value": math.nan if value is None else float(value), "level": level,
        **{key: None if data.get(key) is None else float(data[key]) for key in _VERDICT_BOUNDS},
        "message": data.get("message") or "",
    }
