"""A lock so that two runs of the same protocol on the same store never interleave.

``qa run`` from cron or a CI server may start while the previous run of the same protocol is
still going (a slow month, a manual rerun). :func:`run_lock` serialises them:

* SQLite file store: an exclusive ``fcntl.flock`` (``msvcrt.locking`` on Windows) on a file
  next to the database, ``<db>.run-<key>.lock``, where ``key`` is the first 16 hex digits of
  SHA-256(protocol hash, store URL). The operating system releases it when the process ends,
  even on a crash, so a stale lock cannot block the next month's run. The file stays (removing
  it would race with a waiting run); it holds the pid, host and start time of the holder.
* PostgreSQL: a session advisory lock (``pg_try_advisory_lock``) on a 63-bit number from the
  same key, held by a dedicated connection for the run.
* In-memory SQLite: one process only, no lock needed.

A run that cannot get the lock within ``timeout_s`` raises :class:`RunLockTimeoutError` (the CLI
exits 40, nothing stored).

Because the lock dies with its holder, it also tells a live run from a dead one:
:func:`run_state` calls a ``running`` run whose lock no process holds ``interrupted`` (its
process died: killed, power loss, out of memory). ``qa runs`` lists such a run as incomplete
and the report (:mod:`reports.html`) says so on its first page; both read it through
:func:`run_state`. :func:`run_lock_held` only looks: it never writes the lock file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import platform
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from qa.errors import QAInputError

__all__ = ["RunLockTimeoutError", "run_lock", "lock_key", "run_lock_held", "run_state",
           "is_interrupted", "INTERRUPTED"]

logger = logging.getLogger(__name__)

_POLL_S = 0.2
#: :func:`run_state` of a ``running`` run whose run lock no process holds (its process died).
INTERRUPTED = "interrupted"


class RunLockTimeoutError(QAInputError):
    """Another run of the same protocol on the same store held the lock for too long."""


def lock_key(protocol_sha256: str, store_url: str) -> str:
    """Hex SHA-256 of the protocol hash and the store URL (what the lock is keyed by)."""
    return hashlib.sha256(f"{protocol_sha256}\n{store_url}".encode()).hexdigest()


@contextmanager
def run_lock(store_url: str, protocol_sha256: str, *, timeout_s: float,
             what: str = "this protocol") -> Iterator[None]:
    """Hold the run lock of (protocol, store) for the duration of the ``with`` block.

    Parameters
    ----------
    store_url : str
        The store's URL (``Store.url``: SQLite paths already absolute).
    protocol_sha256 : str
        ``Protocol.sha256``.
    timeout_s : float
        How long to wait for a run holding the lock, in seconds (0: do not wait).
    what : str
        How to name the protocol in the timeout message.

    Raises
    ------
    RunLockTimeoutError
        The lock was still held after ``timeout_s``; the message names the holder when known.
    ValueError
        ``timeout_s`` is negative.
    """
    if timeout_s < 0:
        raise ValueError(f"lock timeout must be >= 0 seconds, got {timeout_s}")
    key = lock_key(protocol_sha256, store_url)
    if sa.make_url(store_url).get_backend_name() == "postgresql":
        with _pg_lock(store_url, key, timeout_s, what):
            yield
        return
    path = _lock_path(store_url, key)
    if path is None:
        yield  # in-memory store: private to this process
        return
    with _file_lock(path, timeout_s, what):
        yield


def run_lock_held(store_url: str, protocol_sha256: str) -> bool:
    """True when some process holds the run lock of (protocol, store) now.

    It only looks: a free lock is taken and released at once (no waiting, nothing written),
    and a lock file that does not exist yet is not created. An in-memory SQLite store has no
    lock (one process only): False.
    """
    key = lock_key(protocol_sha256, store_url)
    if sa.make_url(store_url).get_backend_name() == "postgresql":
        return _pg_held(store_url, key)
    path = _lock_path(store_url, key)
    if path is None or not path.exists():
        return False
    # opened read only (flock needs no write access): a store may be read from read-only media
    with open(path, encoding="utf-8") as handle:
        if not _try_lock(handle):
            return True
        _unlock(handle)
        return False


def run_state(store: Any, run: Mapping[str, Any]) -> str:
    """The state of ``run`` (a :meth:`qa.store.Store.run` record or a row of
    :meth:`~qa.store.Store.runs`) in ``store`` (its ``url`` is read).

    Returns
    -------
    str
        The stored ``status`` (``running``, ``complete``, ``incomplete``, ``failed``), except
        :data:`INTERRUPTED` for a ``running`` run whose run lock no process holds: the process
        that ran it died, and ``qa run PROTOCOL --resume RUN`` can complete it. A run started
        through the Python API without the lock (e.g. by ``qa demo``) looks interrupted to
        another process while it runs, and so does a ``running`` run of an in-memory store.
    """
    status = str(run["status"])
    if status != "running":
        return status
    held = run_lock_held(store.url, str(run["protocol_hash"]))
    return status if held else INTERRUPTED


def is_interrupted(store: Any, run: Mapping[str, Any]) -> bool:
    """True when :func:`run_state` of ``run`` is :data:`INTERRUPTED`."""
    return run_state(store, run) == INTERRUPTED


def _lock_path(store_url: str, key: str) -> Path | None:
    """The lock file of a SQLite file store, ``<db>.run-<key[:16]>.lock``; None in memory."""
    parsed = sa.make_url(store_url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return None
    return Path(f"{database}.run-{key[:16]}.lock")


@contextmanager
def _file_lock(path: Path, timeout_s: float, what: str) -> Iterator[None]:
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
    try:
        deadline = time.monotonic() + timeout_s
        waited = False
        while not _try_lock(handle):
            if time.monotonic() >= deadline:
                handle.seek(0)
                holder = handle.read().strip() or "unknown process"
                raise RunLockTimeoutError(
                    f"another `qa run` of {what} on the same store is still running "
                    f"({holder}); waited {timeout_s:g} s for it. Let it finish, or wait "
                    "longer with --lock-timeout SECONDS", path=str(path))
            if not waited:
                logger.warning("waiting up to %g s for another run of %s (lock %s)",
                               timeout_s, what, path)
                waited = True
            time.sleep(_POLL_S)
        handle.seek(0)
        handle.truncate()
        handle.write(_holder())
        handle.flush()
        try:
            yield
        finally:
            _unlock(handle)
    finally:
        handle.close()


def _holder() -> str:
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"pid {os.getpid()} on {platform.node()}, started {started}"


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(handle) -> bool:  # noqa: ANN001
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(handle) -> None:  # noqa: ANN001
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(handle) -> bool:  # noqa: ANN001
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(handle) -> None:  # noqa: ANN001
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _pg_number(key: str) -> int:
    return int(key[:16], 16) & 0x7FFF_FFFF_FFFF_FFFF  # a positive bigint


def _pg_held(store_url: str, key: str) -> bool:
    """Whether another session holds the advisory lock (taken and released at once if not)."""
    number = _pg_number(key)
    engine = sa.create_engine(store_url, poolclass=sa.pool.NullPool,
                              isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            if not connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                      {"k": number}).scalar_one():
                return True
            connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": number})
            return False
    finally:
        engine.dispose()


@contextmanager
def _pg_lock(store_url: str, key: str, timeout_s: float, what: str) -> Iterator[None]:
    number = _pg_number(key)
    engine = sa.create_engine(store_url, poolclass=sa.pool.NullPool,
                              isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            deadline = time.monotonic() + timeout_s
            waited = False
            while not connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                         {"k": number}).scalar_one():
                if time.monotonic() >= deadline:
                    shown = sa.make_url(store_url).render_as_string(hide_password=True)
                    raise RunLockTimeoutError(
                        f"another `qa run` of {what} on the store {shown} is still running "
                        f"(PostgreSQL advisory lock {number} is held); waited {timeout_s:g} s "
                        "for it. Let it finish, or wait longer with --lock-timeout SECONDS")
                if not waited:
                    logger.warning("waiting up to %g s for another run of %s (advisory lock "
                                   "%d)", timeout_s, what, number)
                    waited = True
                time.sleep(_POLL_S)
            try:
                yield
            finally:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": number})
    finally:
        engine.dispose()
