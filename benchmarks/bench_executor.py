"""Executors: cases per minute of the demo sCT protocol, local processes beside Dask.

Generates the demo pelvis cohort (``fixtures.cohort``, 24 cases by default) and runs the demo
MR-to-sCT HU protocol (torch model, ``hu_accuracy`` and ``subgroup_bias``) with each executor
into its own SQLite store: ``local`` with 1 and 2 processes, ``dask`` (a LocalCluster) with 1
and 2 workers. The wall time covers the whole run (pool or cluster start-up, the cases, the
cohort phase, the validations), as an operator sees it. Prints cases per minute and the
speed-up over one local process, and checks that every executor stored the same
measurements.

Run: ``.venv/bin/python benchmarks/bench_executor.py [--cases N] [--repeat R]``.
Numbers depend on the cores free at the time: compare the ratios printed in one run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # fixtures/ (source checkout)

CONFIGS = (("local", 1), ("local", 2), ("dask", 1), ("dask", 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=1, help="best of R runs per executor")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("great_expectations", "distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from fixtures.cohort import generate_cohort
    from fixtures.demo_parts import sct_hu
    from qa.runner import run_protocol
    from qa.store import Store

    with tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp:
        cohort = Path(tmp) / "cohort"
        generate_cohort(cohort, n_cases=args.cases)
        protocol = sct_hu.prepare(Path(tmp), cohort)
        print(f"demo sCT protocol, {args.cases} cases, {os.cpu_count()} CPU(s); best of "
              f"{args.repeat}; wall time of the whole run")
        print(f"{'executor':>9} {'workers':>8} {'seconds':>9} {'cases/min':>10} "
              f"{'speed-up':>9}")
        reference, first_s = None, None
        for kind, workers in CONFIGS:
            times = []
            for attempt in range(args.repeat):
                with Store(f"sqlite:///{tmp}/{kind}-{workers}-{attempt}.db") as store:
                    start = time.perf_counter()
                    run_id = run_protocol(protocol, store, workers=workers, executor=kind,
                                          progress=False).run_id
                    times.append(time.perf_counter() - start)
                    measured = store.measurements(run_id).drop(columns="run_id")
            if reference is None:
                reference = measured
            elif not measured.reset_index(drop=True).equals(reference.reset_index(drop=True)):
                raise SystemExit(f"{kind} with {workers} worker(s) stored other measurements")
            best = min(times)
            first_s = first_s or best
            print(f"{kind:>9} {workers:>8} {best:>9.1f} {60 * args.cases / best:>10.1f} "
                  f"{first_s / best:>8.2f}x")
        print("every executor stored the same measurements")


if __name__ == "__main__":
    main()
