"""Report section of the ``hu_accuracy`` check: summed error histogram, tissue thresholds,
per-tissue MAE (see :func:`reports.plots.hu_section`)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports.plots import hu_section

TEMPLATE = "sections/hu_accuracy.html.j2"


def build(store: Any, run_id: int, check_id: str, measurements: pd.DataFrame,
          fmt: Any) -> dict[str, Any]:
    """Display data of one ``hu_accuracy`` check of the run, read from the store."""
    return hu_section(store.details(run_id, check_id=check_id), measurements, check_id, fmt)
