"""Per-check report sections, one module per check name.

A module ``reports/sections/<check>.py`` (``<check>`` as registered in
:mod:`checks.registry`) provides

* ``TEMPLATE``: the jinja2 template of the section, under ``reports/templates/`` (by
  convention ``sections/<check>.html.j2``); the template receives ``section`` (the dict
  below) plus the report's usual globals (``t``, ``or_na`` ...);
* ``build(store, run_id, check_id, measurements, fmt) -> dict``: display data of one check
  of the run, read from the store only (never recomputing a metric).

Its message-catalog keys may live in ``reports/locales/<language>/<check>.yaml`` beside the
main catalog. A check without a section module simply has no section of its own (its
verdicts and per-case values still appear in the common tables).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = ["available_sections", "check_sections"]


def available_sections() -> list[str]:
    """Check names that have a report section module."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def check_sections(store: Any, run_id: int, check_names: Mapping[str, str],
                   measurements: pd.DataFrame, fmt: Any) -> list[dict[str, Any]]:
    """One section dict per check of the run that has a section module, in protocol order.

    ``check_names`` maps check id -> check name. Each dict has ``template``, ``check_id``,
    ``check`` and ``several`` (True when the run has several checks of that name) added to
    what the module's ``build`` returned.
    """
    known = set(available_sections())
    counts: dict[str, int] = {}
    for name in check_names.values():
        counts[name] = counts.get(name, 0) + 1
    sections = []
    for check_id, name in check_names.items():
        if name not in known:
            continue
        module = importlib.import_module(f"{__name__}.{name}")
        section = dict(module.build(store, run_id, check_id, measurements, fmt))
        section.update(template=module.TEMPLATE, check_id=check_id, check=name,
                       several=counts[name] > 1)
        sections.append(section)
    return sections
