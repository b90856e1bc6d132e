"""The argument parser of the ``qa`` command (:func:`qa.cli.main` runs the commands).

Every subcommand's options and help, and the ``qa compare KIND`` plug-ins (modules
``qa/compare_<kind>.py``), which add their own subparsers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qa import __version__

__all__ = ["build_parser"]

_EPILOG = """exit codes of `qa run` (the highest that applies):
  0   all verdicts OK, no error, data validation passed
  10  a verdict at TOLERANCE, or data validation failed (review)
  20  a verdict at ACTION (stop clinical use until resolved)
  30  some cases or checks could not be run (errors stored; the others ran)
  40  the run could not start (protocol, case table, model or store, or another run of the
      same protocol on the same store held the lock past --lock-timeout); nothing stored
  2   command-line usage error
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qa", description="ALARA-QA: commissioning and periodic QA of dose-reducing AI.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"alara-qa {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_store(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", metavar="URL", default=None,
                       help="SQLAlchemy URL of the results store (default: $QA_STORE, "
                            "else sqlite:///qa.db in the working folder)")

    run = sub.add_parser("run", help="run a protocol over its case table",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    run.add_argument("protocol", type=Path, help="protocol YAML file")
    with_store(run)
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="local worker processes (default 1)")
    run.add_argument("--operator", default=None, help="who runs it (default: login name)")
    run.add_argument("--report", type=Path, default=None, metavar="PATH",
                     help="also write the audit report to PATH (PDF when PATH ends in .pdf, "
                          "else HTML)")
    run.add_argument("--lang", default="en", choices=("en", "fr"), help="report language")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar on stderr (default: when stderr is a terminal)")
    run.add_argument("--junit", type=Path, default=None, metavar="FILE",
                     help="also write JUnit XML for a CI server (one test case per check x "
                          "case and per cohort verdict; also written when the run cannot "
                          "start)")
    run.add_argument("--json", type=Path, default=None, metavar="FILE",
                     help="also write a JSON summary (exit code, verdict counts, every "
                          "non-OK verdict and error)")
    run.add_argument("--trust-model", action="store_true",
                     help="allow a torch model file that needs full unpickling (torch.save of "
                          "a whole model): it can run arbitrary code, so only for files "
                          "from a source you trust (recorded in the run's model fingerprint)")
    run.add_argument("--reason", default=None, metavar="TEXT",
                     help="why the tolerance or action levels differ from the previous run of "
                          "this protocol (required then; kept in the audit trail)")
    run.add_argument("--lock-timeout", type=float, default=300.0, metavar="SECONDS",
                     help="wait this long for another run of the same protocol on the same "
                          "store to finish, then exit 40 (default 300)")
    run.add_argument("--executor", choices=("local", "dask"), default="local",
                     help="where the cases run: local processes (--workers), or Dask tasks "
                          "(a LocalCluster of --workers processes, or --scheduler)")
    run.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="Dask scheduler of an existing cluster, e.g. tcp://host:8786 "
                          "(with --executor dask; workers must see the same files)")
    run.add_argument("--resume", type=int, default=None, metavar="RUN",
                     help="complete the interrupted run RUN (shown incomplete by `qa runs`): "
                          "only its missing cases, then its cohort phase; PROTOCOL, data and "
                          "model must be those it started with")

    runs = sub.add_parser("runs", help="list the runs in the store")
    with_store(runs)

    report = sub.add_parser("report", help="render the audit report of a run (HTML and/or PDF)")
    report.add_argument("run", type=int, help="run id (see `qa runs`)")
    with_store(report)
    report.add_argument("--out", type=Path, default=None,
                        help="output file or folder (default: report-run-<id>.html/.pdf here); "
                             "with --format both the suffix is replaced by .html and .pdf")
    report.add_argument("--lang", default="en", choices=("en", "fr"))
    report.add_argument("--format", default="html", choices=("html", "pdf", "both"),
                        help="html (default), pdf (printed by headless Chromium), or both")
    report.add_argument("--risk-template", type=Path, default=None, metavar="PATH",
                        help="risk-analysis template for the risk register (default: the one "
                             "stored with the run)")

    export = sub.add_parser("export", help="export a run's tables as CSV or Parquet")
    export.add_argument("run", type=int, help="run id (see `qa runs`)")
    with_store(export)
    export.add_argument("--format", choices=("csv", "parquet"), default="csv")
    export.add_argument("--out", type=Path, default=None,
                        help="output folder (default: run-<id>-export)")

    baseline = sub.add_parser("baseline", help="set or list the baselines periodic runs are "
                                               "compared with")
    actions = baseline.add_subparsers(dest="action", required=True, metavar="ACTION")
    set_ = actions.add_parser("set", help="make a complete run the active baseline of its "
                                          "protocol (the previous one is kept)")
    set_.add_argument("run", type=int, help="run id (see `qa runs`)")
    set_.add_argument("--reason", required=True,
                      help="why (mandatory; kept for the audit trail)")
    set_.add_argument("--operator", default=None, help="who sets it (default: login name)")
    with_store(set_)
    listing = actions.add_parser("list", help="list every baseline, the active ones marked")
    listing.add_argument("--protocol", default=None, metavar="NAME",
                         help="only this protocol name")
    with_store(listing)

    verify = sub.add_parser("verify", help="re-check the store's SHA-256 chain: exit 0 when "
                                           "intact, 1 naming each record changed or removed")
    with_store(verify)
    verify.add_argument("--anchor", action="append", default=[], metavar="HASH",
                        help="a head hash printed earlier (e.g. in a report) that the chain "
                             "must still contain; repeatable")
    approve = sub.add_parser("approve", help="record that a finished run was reviewed and "
                                             "approved, and why (audit trail)")
    approve.add_argument("run", type=int, help="run id (see `qa runs`)")
    approve.add_argument("--reason", required=True, help="why (mandatory)")
    approve.add_argument("--operator", default=None, help="who approves (default: login name)")
    with_store(approve)
    audit = sub.add_parser("audit", help="list the audit trail: baselines set, runs "
                                         "approved, tolerance changes, with who and why")
    audit.add_argument("--protocol", default=None, metavar="NAME",
                       help="only events of this protocol name")
    with_store(audit)

    history = sub.add_parser("history", help="runs and their verdicts over time")
    history.add_argument("--protocol", default=None, metavar="NAME",
                         help="only runs of this protocol name")
    history.add_argument("--metric", default=None, metavar="M",
                         help="add the cohort statistics of this metric: metric, "
                              "metric[label] or check_id.metric[label]")
    with_store(history)

    checks = sub.add_parser("checks", help="list the checks a protocol may use")
    checks.set_defaults(store=None)

    compare = sub.add_parser("compare", help="one-off comparison of two files (no store)")
    kinds = compare.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, module in _compare_modules().items():
        module.configure(kinds.add_parser(kind, help=module.HELP))

    demo = sub.add_parser("demo", help="generate the synthetic cohort, run the demo "
                                       "commissioning protocol, write the report")
    demo.add_argument("--out", type=Path, default=Path("demo-output"),
                      help="folder for the cohort and the report (default demo-output)")
    with_store(demo)
    demo.add_argument("--cases", type=int, default=24, help="number of cases (default 24)")
    demo.add_argument("--workers", type=int, default=1, metavar="N")
    demo.add_argument("--lang", default="en", choices=("en", "fr"))
    demo.add_argument("--months", type=int, default=0, metavar="N",
                      help="also simulate N monthly periodic runs (12: the model is silently "
                           "replaced at month 8, the scanner protocol changes at month 10)")
    return parser


def _compare_modules() -> dict:
    """``qa compare KIND`` plug-ins: modules ``qa/compare_<kind>.py`` exposing ``HELP``,
    ``configure(parser)`` and ``run(args) -> int``."""
    import importlib
    import pkgutil

    import qa

    names = sorted(m.name for m in pkgutil.iter_modules(qa.__path__)
                   if m.name.startswith("compare_"))
    return {n.removeprefix("compare_"): importlib.import_module(f"qa.{n}") for n in names}
