"""The ``qa`` command: run protocols, list runs, export results, render reports, run the demo.

Everything a person or a cron job needs, without prompts. Logs go to stderr; the only thing
printed on stdout is the result a script may want (the report path, the run table).
Exit codes: see :mod:`qa.exitcodes` (0 OK, 10 TOLERANCE, 20 ACTION, 30 errors in some cases,
40 could not start, 2 usage). The argument parser is in :mod:`qa._cli_parser`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from qa._cli_parser import _compare_modules, build_parser
from qa.errors import QAInputError
from qa.exitcodes import ExitCode

__all__ = ["main", "build_parser"]

logger = logging.getLogger("qa")

def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    if args.command in ("run", "demo") and args.verbose == 0:
        level = logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # great_expectations narrates its ephemeral context at INFO; keep our log readable.
    logging.getLogger("great_expectations").setLevel(max(level, logging.WARNING))
    handler = _COMMANDS[args.command]
    try:
        return int(handler(args))
    except QAInputError as exc:
        print(f"qa {args.command}: error: {exc}", file=sys.stderr)
        return int(ExitCode.NOT_STARTED)
    except KeyError as exc:  # unknown run id and similar lookups
        print(f"qa {args.command}: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return int(ExitCode.NOT_STARTED)
    except RuntimeError as exc:  # qa.store.StoreError: the store cannot be opened
        if type(exc).__name__ != "StoreError":
            raise
        print(f"qa {args.command}: error: {exc}", file=sys.stderr)
        return int(ExitCode.NOT_STARTED)


def _open_store(url: str | None):
    from qa.store import Store

    return Store(url)


def _cmd_run(args: argparse.Namespace) -> int:
    from qa.lock import run_lock
    from qa.protocol import load_protocol
    from qa.runner import run_protocol

    if args.lock_timeout < 0:
        raise QAInputError(f"--lock-timeout must be >= 0 seconds, got {args.lock_timeout:g}")
    if args.scheduler is not None and args.executor != "dask":
        print("qa run: error: --scheduler needs --executor dask", file=sys.stderr)
        return int(ExitCode.USAGE)
    try:
        protocol = load_protocol(args.protocol)
        store = _open_store(args.store)
    except (QAInputError, RuntimeError) as exc:
        _not_started(args, exc)
        raise
    try:
        try:
            with run_lock(store.url, protocol.sha256, timeout_s=args.lock_timeout,
                          what=f"protocol {protocol.name!r}"):
                if args.resume is not None:
                    from qa.executors import ExecutorSpec
                    from qa.resume import resume_run

                    outcome = resume_run(
                        protocol, store, args.resume, progress=args.progress,
                        executor=ExecutorSpec(args.executor, args.workers, args.scheduler),
                        operator=args.operator, trust_model=args.trust_model)
                else:
                    from qa.resume import open_runs_of

                    for open_run in open_runs_of(store, protocol.sha256):
                        logger.warning("run %d of this protocol was interrupted; `qa run %s "
                                       "--resume %d` would complete it instead of starting "
                                       "over", open_run, args.protocol, open_run)
                    outcome = run_protocol(protocol, store, workers=args.workers,
                                           operator=args.operator, progress=args.progress,
                                           trust_model=args.trust_model,
                                           executor=args.executor, scheduler=args.scheduler,
                                           reason=args.reason)
        except QAInputError as exc:
            _not_started(args, exc)
            raise
        _print_summary(outcome.run_id, outcome.summary)
        report = None
        if args.report is not None:
            report = _render_after_run(store, outcome.run_id, args.report, args.lang)
            if report is not None:
                print(report)
        _write_run_files(args, store, outcome.run_id, report)
        return int(outcome.exit_code)
    finally:
        store.close()


def _write_run_files(args: argparse.Namespace, store, run_id: int, report: Path | None) -> None:
    from qa.junit import junit_xml, write_junit
    from qa.store._engine import mask_url
    from qa.summary import run_summary, write_json

    if args.junit is not None:
        write_junit(junit_xml(store, run_id), args.junit)
        logger.info("JUnit XML written to %s", args.junit)
    if args.json is not None:
        extra = {"store": mask_url(store.url), "report": None if report is None else str(report),
                 "junit": None if args.junit is None else str(args.junit.resolve())}
        write_json(run_summary(store, run_id, extra), args.json)
        logger.info("JSON summary written to %s", args.json)


def _not_started(args: argparse.Namespace, exc: BaseException) -> None:
    """Write the --junit / --json files of a run that could not start (nothing stored)."""
    from qa.junit import not_started_junit_xml, write_junit
    from qa.summary import not_started_summary, write_json

    if type(exc).__name__ != "StoreError" and not isinstance(exc, QAInputError):
        return
    if args.junit is not None:
        write_junit(not_started_junit_xml(str(args.protocol), str(exc)), args.junit)
    if args.json is not None:
        write_json(not_started_summary(args.protocol, exc), args.json)


def _cmd_runs(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    try:
        frame = store.runs()
        if frame.empty:
            print("no runs in the store", file=sys.stderr)
            return 0
        from qa.resume import run_states

        # a running run whose process died (its run lock is free) is listed as incomplete
        interrupted = run_states(store, frame) == "interrupted"
        frame.loc[interrupted, "status"] = "incomplete"
        columns = [c for c in ("run_id", "protocol_name", "protocol_kind", "model_name",
                               "model_version", "status", "exit_code", "started_at", "operator")
                   if c in frame.columns]
        print(frame[columns].to_string(index=False))
        for run_id in frame.loc[interrupted, "run_id"]:
            print(f"run {run_id}: interrupted (its process died while running); complete it "
                  f"with `qa run PROTOCOL --resume {run_id}`", file=sys.stderr)
        return 0
    finally:
        store.close()


def _cmd_report(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    try:
        from reports.pdf import ChromiumError, ChromiumNotFoundError, render_run_reports

        try:
            paths = render_run_reports(store, args.run, args.out, language=args.lang,
                                       format=args.format, risk_template=args.risk_template)
        except (ChromiumNotFoundError, ChromiumError) as exc:  # the PDF needs Chromium
            print(f"qa report: error: {exc}", file=sys.stderr)
            return int(ExitCode.NOT_STARTED)
        for path in paths:
            print(path.resolve())
        return 0
    finally:
        store.close()


def _cmd_export(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    try:
        out = args.out or Path(f"run-{args.run}-export")
        for path in store.export(args.run, out, args.format):
            print(path)
        return 0
    finally:
        store.close()


def _cmd_baseline(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    try:
        if args.action == "set":
            from qa.runner import login_name

            try:
                baseline_id = store.set_baseline(args.run, reason=args.reason,
                                                 operator=args.operator or login_name())
            except ValueError as exc:
                print(f"qa baseline set: error: {exc}", file=sys.stderr)
                return int(ExitCode.NOT_STARTED)
            row = store.baselines().set_index("baseline_id").loc[baseline_id]
            print(f"baseline {baseline_id}: run {row.run_id} of {row.protocol_name!r}, model "
                  f"{row.model_name} {row.model_version}"
                  + ("" if _isna(row.previous_id) else f" (replaces baseline "
                                                         f"{int(row.previous_id)}, kept)"))
            return 0
        frame = store.baselines(args.protocol)
        if frame.empty:
            print("no baselines in the store", file=sys.stderr)
            return 0
        frame = frame.assign(set_at=frame["set_at"].dt.strftime("%Y-%m-%d %H:%M"),
                             model_sha256=frame["model_sha256"].fillna("").str[:12],
                             active=frame["active"].map({True: "yes", False: ""}))
        print(frame.to_string(index=False))
        return 0
    finally:
        store.close()


def _cmd_verify(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    try:
        result = store.verify(anchors=args.anchor)
    finally:
        store.close()
    for problem in result.problems:
        print(problem)
    for note in result.notes:
        print(f"note: {note}")
    head = result.head_hash or "none (empty ledger)"
    if result.ok:
        print(f"chain intact: {result.n_entries} ledger entries, {result.n_records} records; "
              f"head {head}")
        return 0
    count = len(result.problems)
    print(f"chain BROKEN: {count} problem{'s' if count > 1 else ''}; head {head}")
    return 1


def _cmd_approve(args: argparse.Namespace) -> int:
    from qa.runner import login_name

    store = _open_store(args.store)
    try:
        operator = args.operator or login_name()
        try:
            event_id = store.approve_run(args.run, operator=operator, reason=args.reason)
        except ValueError as exc:
            print(f"qa approve: error: {exc}", file=sys.stderr)
            return int(ExitCode.NOT_STARTED)
        print(f"run {args.run} approved by {operator} (audit event {event_id})")
        return 0
    finally:
        store.close()


def _cmd_audit(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    try:
        frame = store.audit_events(args.protocol)
    finally:
        store.close()
    if frame.empty:
        print("no audit events" + (f" of protocol {args.protocol!r}" if args.protocol else "")
              + " in the store", file=sys.stderr)
        return 0
    frame = frame.assign(at=frame["at"].dt.strftime("%Y-%m-%d %H:%M"))
    print(frame[["event_id", "at", "operator", "action", "target", "protocol_name",
                 "reason"]].to_string(index=False))
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from qa.history import format_history, history_frame

    store = _open_store(args.store)
    try:
        try:
            frame = history_frame(store, args.protocol, args.metric)
        except ValueError as exc:
            print(f"qa history: error: {exc}", file=sys.stderr)
            return int(ExitCode.USAGE)
        if frame.empty:
            print("no runs" + (f" of protocol {args.protocol!r}" if args.protocol else "")
                  + " in the store", file=sys.stderr)
            return 0
        print(format_history(frame))
        return 0
    finally:
        store.close()


def _isna(value) -> bool:  # noqa: ANN001
    import pandas as pd

    return bool(pd.isna(value))


def _cmd_checks(args: argparse.Namespace) -> int:
    from checks.registry import available_checks, get_check

    for name in available_checks():
        cls = get_check(name)
        metrics = ", ".join(f"{m} [{info.unit}]" for m, info in cls.metrics.items())
        slots = ", ".join(f"{s}{'' if slot.required else '?'}" for s, slot in cls.slots.items())
        print(f"{name}: {cls.title}\n  slots: {slots}\n  metrics: {metrics}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    return int(_compare_modules()[args.kind].run(args))


def _cmd_demo(args: argparse.Namespace) -> int:
    from qa.demo import run_demo

    store = _open_store(args.store)
    try:
        runs = run_demo(args.out, store, n_cases=args.cases, workers=args.workers,
                        language=args.lang, months=args.months, pdf=True)
    finally:
        store.close()
    for run in runs:
        logger.info("demo %s: run %d, run exit code %d", run.title, run.run_id, run.exit_code)
        print(run.report)
        if run.pdf is not None:
            print(run.pdf)
    # The demo models are deliberately imperfect (the sCT model is worse for high BMI):
    # TOLERANCE/ACTION verdicts are the expected outcome, so the demo exits 0 once its
    # reports are written.
    return 0


def _render(store, run_id: int, out: Path | None, language: str, *,
            risk_template: Path | None = None) -> Path:
    from reports.html import default_report_path, render_run_report

    path = out if out is not None else Path(default_report_path(store.run(run_id)))
    return render_run_report(store, run_id, path, language=language,
                             risk_template=risk_template).resolve()


def _render_after_run(store, run_id: int, out: Path, language: str) -> Path | None:
    """``qa run --report``: HTML, or PDF for a ``.pdf`` path. A PDF that cannot be printed
    (no Chromium) is reported on stderr; the run's exit code stays the run's."""
    if out.suffix.lower() != ".pdf":
        return _render(store, run_id, out, language)
    from reports.pdf import ChromiumError, ChromiumNotFoundError, render_run_reports

    try:
        [path] = render_run_reports(store, run_id, out, language=language, format="pdf")
    except (ChromiumNotFoundError, ChromiumError) as exc:
        print(f"qa run: the run is stored but its PDF report was not written: {exc}; "
              f"render it later with `qa report {run_id} --format pdf`", file=sys.stderr)
        return None
    return path.resolve()


def _print_summary(run_id: int, summary: dict) -> None:
    counts = summary.get("verdicts", {})
    print(f"run {run_id}: {summary.get('exit_meaning')} — verdicts "
          + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f"; cases with errors: {len(summary.get('cases_with_errors', []))}",
          file=sys.stderr)


_COMMANDS = {"run": _cmd_run, "runs": _cmd_runs, "report": _cmd_report,
             "export": _cmd_export, "checks": _cmd_checks, "compare": _cmd_compare,
             "baseline": _cmd_baseline, "history": _cmd_history,
             "verify": _cmd_verify, "approve": _cmd_approve, "audit": _cmd_audit,
             "demo": _cmd_demo}
