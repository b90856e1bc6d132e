"""Append-only results store of ALARA-QA runs (SQLite file by default, PostgreSQL by URL).

The schema is created and upgraded by the Alembic migrations shipped in ``qa/migrations``;
:class:`Store` brings a database to the newest revision when it opens it. See ``docs/store.md``
for the tables, the append-only rule, URLs and how to migrate by hand.

Examples
--------
>>> from qa.store import Store
>>> store = Store("sqlite://")                      # in memory
>>> run_id = store.create_run(
...     protocol_name="demo", protocol_kind="commissioning", protocol_hash="0" * 64,
...     protocol_text="name: demo\\n", dataset_hash="1" * 64, case_table_path="cases.csv",
...     model={"name": "mr2ct", "version": "2.1", "adapter": "torch"},
...     software_version="0.1.0", operator="physicist", hostname="qa-host")
>>> store.run(run_id)["status"]
'running'
>>> store.close()
"""

from qa.store._audit import AUDIT_COLUMNS
from qa.store._baselines import BASELINE_COLUMNS
from qa.store._engine import StoreError, default_url
from qa.store._export import EXPORT_TABLES, export_run
from qa.store._frames import (
    CASE_COLUMNS,
    DETAIL_COLUMNS,
    ERROR_COLUMNS,
    MEASUREMENT_COLUMNS,
    RUN_COLUMNS,
    VALIDATION_COLUMNS,
    VERDICT_COLUMNS,
)
from qa.store._json import json_safe, to_json_text
from qa.store._store import Store, UnknownRunError
from qa.store._verify import ChainProblem, VerifyResult

__all__ = [
    "Store", "StoreError", "UnknownRunError", "default_url", "export_run", "json_safe",
    "to_json_text", "EXPORT_TABLES", "RUN_COLUMNS", "CASE_COLUMNS", "MEASUREMENT_COLUMNS",
    "VERDICT_COLUMNS", "ERROR_COLUMNS", "DETAIL_COLUMNS", "VALIDATION_COLUMNS",
    "BASELINE_COLUMNS", "AUDIT_COLUMNS", "VerifyResult", "ChainProblem",
]
