"""Four processes writing runs into one store at once lose nothing (SQLite and PostgreSQL).

Each child opens its own ``Store``, waits for a common start signal, then writes its runs
(cases, measurements, verdicts, finish) as fast as it can, so the writes interleave. Every row
is then counted with plain SQL, the measured values summed against the sum computed here, and
the hash chain verified: the writers were serialised (no seq gap, no lost or doubled entry).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from qa.store import Store

WORKERS, RUNS, CASES, METRICS = 4, 3, 4, 5

_WRITER = f"""
import pathlib, sys, time
from checks.base import Measurement
from qa.store import Store
url, folder, worker = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
store = Store(url)
(folder / f"ready-{{worker}}").touch()
while not (folder / "go").exists():
    time.sleep(0.002)
for r in range({RUNS}):
    run_id = store.create_run(
        protocol_name=f"writer {{worker}}", protocol_kind="periodic", protocol_hash="a",
        protocol_text="t", dataset_hash="d", case_table_path="c.csv",
        model={{"name": "m", "version": "1", "adapter": "torch"}}, software_version="0",
        operator="op", hostname="h")
    for c in range({CASES}):
        case_id = f"case-{{c}}"
        store.add_case(run_id, case_id, position=c, attributes={{"worker": worker}})
        store.add_measurements(run_id, case_id, "hu", "hu_accuracy", [
            Measurement(f"m{{m}}", worker * 1000 + r * 100 + c * 10 + m, "HU")
            for m in range({METRICS})])
        store.add_verdicts(run_id, [{{"check_id": "hu", "metric": "m0", "level": "OK",
                                      "case_id": case_id, "value": 1.0}}])
    store.finish_run(run_id, "complete", exit_code=0)
store.close()
"""


@pytest.mark.slow  # ~1.5 s of CPU per child to import pandas and SQLAlchemy, 4 children
def test_four_processes_writing_at_once_lose_nothing(store_url, tmp_path):
    Store(store_url).close()  # migrated once before the writers start
    children = [subprocess.Popen([sys.executable, "-c", _WRITER, store_url, str(tmp_path),
                                  str(worker)], stderr=subprocess.PIPE, text=True)
                for worker in range(WORKERS)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < WORKERS and time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            break
        time.sleep(0.01)
    (tmp_path / "go").touch()
    errors = [child.communicate(timeout=120)[1] for child in children]
    outcomes = [(child.returncode, stderr) for child, stderr in zip(children, errors,
                                                                    strict=True)]
    assert outcomes == [(0, "")] * WORKERS

    engine = sa.create_engine(store_url)
    with engine.connect() as connection:
        def count(sql: str) -> int:
            return connection.exec_driver_sql(sql).scalar_one()

        assert count("SELECT count(*) FROM runs WHERE status = 'complete'") == WORKERS * RUNS
        assert count("SELECT count(*) FROM cases") == WORKERS * RUNS * CASES
        assert count("SELECT count(*) FROM measurements") == WORKERS * RUNS * CASES * METRICS
        assert count("SELECT count(*) FROM verdicts") == WORKERS * RUNS * CASES
        expected_sum = sum(w * 1000 + r * 100 + c * 10 + m for w in range(WORKERS)
                           for r in range(RUNS) for c in range(CASES) for m in range(METRICS))
        assert count("SELECT sum(value) FROM measurements") == expected_sum
        # per run: create, 3 writes per case, finish
        entries = WORKERS * RUNS * (2 + 3 * CASES)
        assert count("SELECT count(*) FROM ledger") == entries
        assert count("SELECT max(seq) FROM ledger") == entries
    engine.dispose()
    with Store(store_url) as store:
        result = store.verify()
    assert result.ok and result.n_entries == entries
