"""Helpers of the store tests: a run with one row of everything, written by hand."""

from __future__ import annotations

import dataclasses
import enum
import math

import numpy as np

from checks.base import Measurement
from qa.errors import ReaderError
from qa.store import Store

PG_PASSWORD = "pw-never-shown"  # trust auth ignores it; used to check masking


def new_run(store: Store, **overrides) -> int:
    arguments = dict(
        protocol_name="MR-to-sCT pelvis", protocol_kind="commissioning", protocol_hash="a" * 64,
        protocol_text="name: MR-to-sCT pelvis\nchecks: []\n", dataset_hash="b" * 64,
        case_table_path="data/cases.csv",
        model={"name": "mr2ct", "version": "2.1", "adapter": "torch", "sha256": "c" * 64,
               "path": "models/mr2ct.ts", "input": "mr"},
        software_version="0.1.0", operator="physicist", hostname="qa-host")
    arguments.update(overrides)
    return store.create_run(**arguments)


class Level(enum.Enum):
    OK = "OK"
    ACTION = "ACTION"


@dataclasses.dataclass(frozen=True)
class Verdict:
    check_id: str
    metric: str
    level: Level
    value: float
    case_id: str | None = None
    statistic: str = "value"
    label: str = ""
    tolerance_max: float | None = None
    action_max: float | None = None
    message: str = ""
    unit: str = "HU"  # not a verdict column: ignored


def fill_run(store: Store) -> int:
    """A run with cases written out of table order, and one row of everything."""
    run_id = new_run(store)
    store.add_case(run_id, "p02", position=1, attributes={"sex": "F", "age": np.int64(61)})
    store.add_case(run_id, "p01", position=0, attributes={"sex": "M", "bmi": 24.5})
    store.add_case(run_id, "p03", position=2, attributes={"sex": "M", "bmi": math.nan},
                   status="error")
    store.add_measurements(run_id, "p02", "hu", "hu_accuracy", [
        Measurement("mae_hu", 71.5, "HU"), Measurement("mae_hu", 180.0, "HU", "bone")])
    store.add_measurements(run_id, "p01", "hu", "hu_accuracy", [
        Measurement("mae_hu", 55.25, "HU"), Measurement("mae_hu", math.nan, "HU", "bone"),
        Measurement("me_hu", -math.inf, "HU")])
    store.add_verdicts(run_id, [
        {"check_id": "hu", "metric": "mae_hu", "level": "tolerance", "case_id": "p02",
         "value": 71.5, "tolerance_max": 70.0, "action_max": 90.0, "message": "above 70 HU"},
        Verdict("hu", "mae_hu", Level.OK, 55.25, case_id="p01", tolerance_max=70.0,
                action_max=90.0),
        Verdict("hu", "mae_hu", Level.OK, 63.375, statistic="mean", tolerance_max=70.0),
    ])
    store.add_details(run_id, "p01", "hu", {
        "histogram": {"edges_hu": np.array([-100.0, 0.0, 100.0]), "counts": [3, np.nan]},
        "n_voxels": np.int32(12)})
    store.add_errors_from(run_id, ReaderError("cannot read the CT series; check the path",
                                              path="p03/ct", role="ct", field="ImagePosition"),
                          case_id="p03", check_id="hu")
    store.add_error(run_id, "dataset hash changed since commissioning")
    store.add_validation(run_id, "case_table", True,
                         {"success": True, "results": [{"success": True}],
                          "statistics": {"evaluated_expectations": 4, "success_percent": 100.0}})
    return run_id


def upgrade_to(url: str, revision: str) -> None:
    """Migrate the database at ``url`` to ``revision`` (as the store does, without opening
    a :class:`Store`, which would go to head)."""
    from alembic import command

    from qa.store import _engine

    engine = _engine.make_engine(url)
    try:
        with engine.connect().execution_options(qa_write=True) as connection, \
                connection.begin():
            config = _engine._alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


#: One finished run row written with raw SQL into a store of revision 0003 (before the hash
#: chain existed): migration 0004 adopts it into the chain.
PRE_CHAIN_RUN_SQL = (
    "INSERT INTO runs (uid, protocol_name, protocol_kind, protocol_hash, protocol_text, "
    "dataset_hash, case_table_path, model_name, model_version, model_adapter, "
    "model_details, software_version, operator, hostname, started_at, status, "
    "finished_at, exit_code) VALUES ('u1', 'p', 'periodic', 'h', 't', 'd', 'c.csv', "
    "'m', '1', 'torch', '{}', '0.1', 'op', 'host', '2026-01-01 00:00:00', "
    "'complete', '2026-01-01 01:00:00', 0)")
