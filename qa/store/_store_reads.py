"""Read part of :class:`qa.store.Store`: runs, cases, measurements, verdicts, errors,
details and validations as pandas frames, and the export of a run.

A mixin: the methods use the store's engine (:class:`qa.store._store.Store` sets it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd
import sqlalchemy as sa

from qa.store import _frames
from qa.store import _schema as tables


class UnknownRunError(KeyError):
    """A run id that is not in the store (a :class:`KeyError` whose text reads plainly)."""

    def __str__(self) -> str:
        return str(self.args[0])


class StoreReads:
    """The read methods of a store (every frame is read in its own connection)."""

    _engine: sa.Engine
    _url_shown: str


    def runs(self) -> pd.DataFrame:
        """All runs, oldest first; columns :data:`qa.store.RUN_COLUMNS`."""
        with self._engine.connect() as connection:
            return _frames.runs_frame(connection)

    def run(self, run_id: int) -> dict[str, Any]:
        """One run as a dict (keys :data:`qa.store.RUN_COLUMNS`, JSON decoded)."""
        with self._engine.connect() as connection:
            row = connection.execute(
                sa.select(tables.runs).where(tables.runs.c.id == run_id)).first()
        if row is None:
            raise self._unknown(run_id)
        return _frames.run_record(row)

    def cases(self, run_id: int) -> pd.DataFrame:
        """case_id, position, status, then one column per attribute, by position."""
        return self._read(_frames.cases_frame, run_id)

    def measurements(self, run_id: int, check_id: str | None = None) -> pd.DataFrame:
        """Measurements by case position, check_id, metric, label (NaN where NULL)."""
        return self._read(_frames.measurements_frame, run_id, check_id)

    def verdicts(self, run_id: int) -> pd.DataFrame:
        """Per-case verdicts by case position, then cohort verdicts."""
        return self._read(_frames.verdicts_frame, run_id)

    def errors(self, run_id: int) -> pd.DataFrame:
        """Errors by case position (run-level last), then in recording order."""
        return self._read(_frames.errors_frame, run_id)

    def details(self, run_id: int, check_id: str | None = None,
                name: str | None = None) -> pd.DataFrame:
        """JSON details (``payload`` decoded) by case position, check_id, name."""
        return self._read(_frames.details_frame, run_id, check_id, name)

    def validations(self, run_id: int) -> pd.DataFrame:
        """Data validations in recording order (``statistics``, ``result`` decoded)."""
        return self._read(_frames.validations_frame, run_id)

    def export(self, run_id: int, path: str | Path,
               format: Literal["csv", "parquet"] = "csv") -> list[Path]:
        """Write the run's tables into the folder ``path``, one file per table.

        See :func:`qa.store.export_run` for the files and their encoding.
        """
        from qa.store._export import export_run

        return export_run(self, run_id, path, format)

    def _unknown(self, run_id: int) -> UnknownRunError:
        return UnknownRunError(f"run {run_id} not found in store {self._url_shown}; "
                               "`qa runs` lists them")

    def _read(self, reader: Any, run_id: int, *args: Any) -> pd.DataFrame:
        with self._engine.connect() as connection:
            query = sa.select(tables.runs.c.id).where(tables.runs.c.id == run_id)
            if connection.execute(query).first() is None:
                raise self._unknown(run_id)
            return reader(connection, run_id, *args)
