"""Where the cases of a run are computed: this process, local processes, or Dask workers.

:func:`case_results` yields one :class:`~qa.case_runner.CaseResult` per case **as each
finishes** (completion order, not table order); the runner stores each one when it arrives.
Arrival order never changes what is stored or read back: every case carries its position in
the case table and the store's read methods sort by it.

Executors (:class:`ExecutorSpec`, normalised once from the command line):

* ``local`` with ``workers == 1``: the cases run one after the other in this process.
* ``local`` with ``workers > 1``: a :class:`concurrent.futures.ProcessPoolExecutor` of
  ``workers`` *spawned* processes (no ``fork``: torch and database handles are not
  fork-safe); each loads the protocol, its checks and the model once.
* ``dask``: each case is a Dask task (``dask.distributed``). Without a scheduler address a
  :class:`~dask.distributed.LocalCluster` of ``workers`` processes (one thread each) is
  started for the run and shut down after it; with ``scheduler="tcp://host:8786"`` the cases
  go to that cluster, whose workers must have ALARA-QA installed and see the protocol, the
  case table and the images at the same paths. Each worker process loads the protocol,
  checks and model once (cached by protocol path and SHA-256; a worker that reads a
  different protocol text refuses). Dask is imported only when this executor is used.

Thread caps: with ``n`` local worker processes (process pool or ``LocalCluster``) each gets
``cpu_count // n`` threads (at least 1), so the cores are not oversubscribed; a Dask worker of
a remote cluster gets ``cpu_count // nthreads`` of its host. :func:`cap_threads` applies the
cap to torch's intra-op threads and to numba's parallel kernels (the gamma search) in the
worker: in the pool's initialiser and before each case (process pool), in the task wrapper
before each case (Dask: numba's setting belongs to the thread that runs the task). Neither
module is imported to be capped. Values do not depend on these counts (each parallel
iteration computes its own points). BLAS/OpenMP threads: the workers of the
``LocalCluster`` keep this process's settings (Dask would set them to 1), because sums that
BLAS splits over threads (RMSE, Bland-Altman limits) change in the last bit (~1e-15
relative) with the thread count; a remote cluster's workers keep their own settings, so
their values may differ from a local run's in that last bit.

A case whose worker fails (a crashed worker process, a Dask ``KilledWorker``) becomes a
:class:`CaseResult` with one error naming what happened; the other cases go on.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Literal

from qa.case_runner import CaseContext, CaseResult, process_case
from qa.dataset import Case

__all__ = ["EXECUTORS", "ExecutorSpec", "case_results", "cap_threads", "worker_threads"]

logger = logging.getLogger(__name__)

#: The executors ``qa run --executor`` accepts.
EXECUTORS = ("local", "dask")


@dataclass(frozen=True)
class ExecutorSpec:
    """How to compute the cases of a run.

    Parameters
    ----------
    kind : {"local", "dask"}
    workers : int
        Local worker processes, or the number of workers of the Dask ``LocalCluster``
        (ignored with ``scheduler``). At least 1.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``); only with ``dask``.
    """

    kind: Literal["local", "dask"] = "local"
    workers: int = 1
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor {self.kind!r} is not one of {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.scheduler is not None and self.kind != "dask":
            raise ValueError("a scheduler address needs the dask executor (--executor dask)")

    def describe(self) -> str:
        """A short phrase for the log (``"dask, LocalCluster of 2 workers"``)."""
        if self.kind == "local":
            return "this process" if self.workers == 1 else f"{self.workers} local processes"
        if self.scheduler:
            return f"dask, scheduler {self.scheduler}"
        return f"dask, LocalCluster of {self.workers} worker(s)"


def case_results(spec: ExecutorSpec, context: CaseContext, cases: Sequence[Case],
                 progress: bool | None = None) -> Iterator[CaseResult]:
    """Compute every case with the executor ``spec``; yield each result as it finishes.

    Parameters
    ----------
    spec : ExecutorSpec
    context : qa.case_runner.CaseContext
        The protocol, checks and model of the run (used as is in this process; worker
        processes rebuild it from ``context.protocol.path``).
    cases : sequence of qa.dataset.Case
    progress : bool, optional
        Progress bar on stderr (default: only when stderr is a terminal).

    Yields
    ------
    CaseResult
        One per case, in completion order.
    """
    from tqdm import tqdm

    cases = list(cases)
    bar = tqdm(total=len(cases), unit="case", file=sys.stderr, desc="QA",
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    if spec.kind == "dask":
        results = _dask_results(spec, context, cases)
    elif spec.workers == 1 or len(cases) <= 1:
        results = (process_case(context, case) for case in cases)
    else:
        results = _pool_results(spec.workers, context, cases)
    try:
        for result in results:
            yield result
            bar.update()
    finally:
        results.close()
        bar.close()


def failed_case(case: Case, exc: BaseException, where: str) -> CaseResult:
    """The result of a case whose worker failed: one error saying what happened."""
    result = CaseResult(case.case_id, case.position, dict(case.attributes))
    result.errors.append({"message": f"the {where} computing this case failed: "
                                     f"{type(exc).__name__}: {exc}; the other cases went on "
                                     "(see the log; rerun to retry this case)",
                          "check_id": None, "role": None, "path": None, "field": None})
    return result


# ------------------------------------------------------------------------- local processes


def _pool_results(workers: int, context: CaseContext,
                  cases: list[Case]) -> Iterator[CaseResult]:
    """Cases on ``workers`` spawned processes, at most ``workers`` in flight.

    A worker process that dies (a segfault in a model, the out-of-memory killer) breaks the
    whole pool and fails every case in flight. Those cases are then each retried alone in a
    fresh one-process pool: a case that kills its process alone is the culprit and becomes
    an error; the others are computed; a fresh pool takes the remaining cases.
    """
    threads = worker_threads(workers)
    queue = deque(cases)
    while queue:
        suspects: list[Case] = []
        with _new_pool(workers, context, threads) as pool:
            running: dict[Future, Case] = {}
            while (queue or running) and not suspects:
                while queue and len(running) < workers:
                    case = queue.popleft()
                    running[pool.submit(_work, case)] = case
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    case = running.pop(future)
                    outcome = _outcome(future, case)
                    if outcome is None:
                        suspects.append(case)
                    else:
                        yield outcome
            # the pool is broken: the other cases in flight fail too, or have just finished
            for future, case in running.items():
                wait([future])
                outcome = _outcome(future, case)
                if outcome is None:
                    suspects.append(case)
                else:
                    yield outcome
        for case in suspects:
            logger.warning("case %s: a worker process died; retrying the case alone",
                           case.case_id)
            with _new_pool(1, context, threads) as alone:
                future = alone.submit(_work, case)
                wait([future])
                outcome = _outcome(future, case)
            yield outcome if outcome is not None else failed_case(
                case, future.exception() or RuntimeError("unknown failure"), "worker process")


def _outcome(future: Future, case: Case) -> CaseResult | None:
    """The result of a finished future; None when its worker process died (pool broken)."""
    exc = future.exception()
    if exc is None:
        return future.result()
    if isinstance(exc, BrokenProcessPool):
        return None
    logger.error("case %s: worker process failed: %s", case.case_id, exc)
    return failed_case(case, exc, "worker process")


def _new_pool(workers: int, context: CaseContext, threads: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=_init_worker,
                               initargs=(str(context.protocol.path), context.protocol.sha256,
                                         threads, _trusts_model(context)))


_WORKER_CONTEXTS: dict[tuple[str, str, bool], CaseContext] = {}
_POOL_KEY: tuple[str, str, bool] | None = None
#: Threads of this pool worker (numba, torch): ``cpu_count // workers``, at least 1.
_POOL_THREADS = 1


def worker_context(protocol_path: str, protocol_sha256: str, threads: int | None,
                   trust_model: bool = False) -> CaseContext:
    """The protocol, checks and model of this worker process, loaded once per protocol.

    Raises
    ------
    qa.errors.ProtocolError
        The protocol file now reads differently from the one the run started with.
    """
    key = (protocol_path, protocol_sha256, trust_model)
    context = _WORKER_CONTEXTS.get(key)
    if context is None:
        from qa.cohort_runner import is_cohort_check
        from qa.errors import ProtocolError
        from qa.models import load_adapter
        from qa.protocol import load_protocol

        protocol = load_protocol(protocol_path)
        if protocol.sha256 != protocol_sha256:
            raise ProtocolError(
                f"the protocol {protocol_path} changed since the run started (SHA-256 "
                f"{protocol.sha256[:12]}…, the run has {protocol_sha256[:12]}…); do not edit "
                "a protocol while it runs", path=protocol_path)
        adapter = load_adapter(protocol.model, protocol.base_dir, num_threads=threads,
                               trust_model=trust_model)
        checks = [(spec, check) for spec, check in protocol.check_instances()
                  if not is_cohort_check(check)]
        context = _WORKER_CONTEXTS[key] = CaseContext(protocol, checks, adapter)
    return context


def worker_threads(workers: int) -> int:
    """Threads for each of ``workers`` worker processes on this host: ``cpu_count //
    workers``, at least 1."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def cap_threads(threads: int) -> None:
    """Cap the threads of numba's parallel kernels and of torch in this process to
    ``threads`` (at least 1), without importing either.

    * numba, already imported: ``numba.set_num_threads`` (at most the size of numba's pool),
      which holds for the calling thread: call it from the thread that computes the cases.
      Not imported yet: ``NUMBA_NUM_THREADS`` in this process's environment (a smaller value
      already there is kept), which numba reads when a check imports it; child processes of
      this worker (a ``command`` model) inherit it.
    * torch, already imported (a torch model, or a check that imports it):
      ``torch.set_num_threads`` (process-wide intra-op threads). Not imported yet: nothing;
      a later call does it.

    BLAS/OpenMP variables are left alone (see the module docstring).
    """
    threads = max(1, int(threads))
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    else:
        current = os.environ.get("NUMBA_NUM_THREADS", "")
        if not (current.isdigit() and 0 < int(current) <= threads):
            os.environ["NUMBA_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _init_worker(protocol_path: str, protocol_sha256: str, threads: int,
                 trust_model: bool) -> None:
    """Process-pool initialiser: cap the threads (:func:`cap_threads`, before and after
    loading, which may import torch or numba), load the protocol, checks and model once."""
    global _POOL_KEY, _POOL_THREADS
    cap_threads(threads)
    worker_context(protocol_path, protocol_sha256, threads, trust_model)
    cap_threads(threads)
    _POOL_KEY = (protocol_path, protocol_sha256, trust_model)
    _POOL_THREADS = threads


def _work(case: Case) -> CaseResult:
    assert _POOL_KEY is not None, "worker not initialised"
    cap_threads(_POOL_THREADS)  # again: a previous case may have imported torch or numba
    return process_case(_WORKER_CONTEXTS[_POOL_KEY], case)


# ------------------------------------------------------------------------------------ dask


def _dask_results(spec: ExecutorSpec, context: CaseContext,
                  cases: list[Case]) -> Iterator[CaseResult]:
    import dask
    from dask.distributed import Client, LocalCluster, as_completed

    if not logger.isEnabledFor(logging.DEBUG):  # importing distributed set it to INFO
        logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = None
    if spec.scheduler:
        client = Client(spec.scheduler)
        threads = None  # decided on each worker from its own host
    else:
        # Dask starts its workers with single-threaded BLAS/OpenMP; the local executors keep
        # this process's settings. Sums of squares (RMSE, Bland-Altman limits) then differ in
        # the last bit (~1e-15 relative), so the workers keep this process's settings too.
        unset = {f"distributed.nanny.pre-spawn-environ.{name}": None
                 for name in _BLAS_THREAD_VARIABLES}
        with dask.config.set(unset):
            cluster = LocalCluster(n_workers=spec.workers, threads_per_worker=1,
                                   processes=True, dashboard_address=None)
        client = Client(cluster)
        threads = worker_threads(spec.workers)
    try:
        protocol = context.protocol
        futures = client.map(_dask_case, cases, protocol_path=str(protocol.path),
                             protocol_sha256=protocol.sha256, threads=threads,
                             trust_model=_trusts_model(context),
                             key=[f"qa-case-{case.position}-{case.case_id}" for case in cases],
                             pure=False)
        by_key = {future.key: case for future, case in zip(futures, cases, strict=True)}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # KilledWorker, a worker without qa installed, …
                case = by_key[future.key]
                logger.error("case %s: dask task failed: %s", case.case_id, exc)
                yield failed_case(case, exc, "dask worker")
            finally:
                future.release()
    finally:
        client.close()
        if cluster is not None:
            # Every result is in: a worker slow to exit is killed after 4 s, which Dask logs
            # as a warning that would only alarm the reader of a QA log.
            nanny = logging.getLogger("distributed.nanny")
            level = nanny.level
            nanny.setLevel(logging.ERROR)
            try:
                cluster.close()
            finally:
                nanny.setLevel(level)


#: Environment variables Dask sets to 1 in its worker processes by default.
_BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _dask_case(case: Case, *, protocol_path: str, protocol_sha256: str,
               threads: int | None, trust_model: bool) -> CaseResult:
    """One case on a Dask worker (the worker's context is loaded on its first case)."""
    if threads is None:
        from dask.distributed import get_worker

        threads = worker_threads(get_worker().state.nthreads)
    cap_threads(threads)  # in the thread that runs the case (numba's setting is per thread)
    return process_case(worker_context(protocol_path, protocol_sha256, threads, trust_model),
                        case)


def _trusts_model(context: CaseContext) -> bool:
    """Whether the run's model was loaded with ``trust_model`` (workers load it the same)."""
    return bool(getattr(context.adapter, "trust_model", False))
