"""Export one run's tables to a folder of CSV or Parquet files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from qa.store._json import to_json_text

if TYPE_CHECKING:
    from qa.store._store import Store

__all__ = ["EXPORT_TABLES", "export_run"]

EXPORT_TABLES = ("runs", "cases", "measurements", "verdicts", "errors", "details", "validations")
_JSON_COLUMNS = {"runs": ("model_details", "summary"), "details": ("payload",),
                 "validations": ("statistics", "result")}


def export_run(store: Store, run_id: int, path: str | Path, format: str = "csv") -> list[Path]:
    """Write the run's tables into the folder ``path``, one file per table.

    Files, in this order: ``runs``, ``cases``, ``measurements``, ``verdicts``, ``errors``,
    ``details``, ``validations`` with the suffix ``.csv`` or ``.parquet``. Existing files of
    these names are replaced. Columns and row order are those of the ``Store`` read methods;
    JSON columns (``model_details``, ``summary``, ``payload``, ``statistics``, ``result``) are
    written as strict JSON text.

    CSV: UTF-8 with a header; missing values (NULL text, NaN numbers) are empty cells, so
    ``pandas.read_csv`` gives NaN for them and for the empty ``label`` ``''`` (restore it with
    ``fillna({"label": ""})``); datetimes are ISO 8601 with ``+00:00``.
    Parquet needs pyarrow (the ``export`` extra) and keeps types and ``''`` exactly.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    ValueError
        Unknown ``format``, or ``path`` is an existing file.
    ImportError
        ``format="parquet"`` without pyarrow installed.
    KeyError
        Unknown ``run_id``.
    """
    if format not in ("csv", "parquet"):
        raise ValueError(f"export format {format!r} is not one of 'csv', 'parquet'")
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError("Parquet export needs pyarrow: pip install 'alara-qa[export]', "
                              "or export with format='csv'") from None
    folder = Path(path)
    if folder.is_file():
        raise ValueError(f"export path {folder} is a file; give a folder (it is created if "
                         "missing) to hold one file per table")
    frames = _frames_of(store, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in frames.items():
        target = folder / f"{name}.{format}"
        if format == "csv":
            frame.to_csv(target, index=False, date_format="%Y-%m-%dT%H:%M:%S.%f%z")
        else:
            _parquet_safe(frame).to_parquet(target, index=False)
        written.append(target)
    return written


def _frames_of(store: Store, run_id: int) -> dict[str, pd.DataFrame]:
    runs = store.runs()
    frames: dict[str, pd.DataFrame] = {
        "runs": runs[runs["run_id"] == run_id].reset_index(drop=True),
        "cases": store.cases(run_id),
        "measurements": store.measurements(run_id),
        "verdicts": store.verdicts(run_id),
        "errors": store.errors(run_id),
        "details": store.details(run_id),
        "validations": store.validations(run_id),
    }
    if frames["runs"].empty:
        store.run(run_id)  # raises the store's "run not found" KeyError
    for name, columns in _JSON_COLUMNS.items():
        frame = frames[name]
        for column in columns:
            frame[column] = [None if value is None else to_json_text(value, what=column)
                             for value in frame[column]]
    return frames


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Case attributes may mix types in one column; Parquet needs one type: use text then."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        kinds = {type(value) for value in frame[column] if not _missing(value)}
        if len(kinds) > 1:
            frame[column] = [None if _missing(v) else str(v) for v in frame[column]]
    return frame


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
