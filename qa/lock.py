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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from qa.errors import QAInputError

__all__ = ["RunLockTimeoutError", "run_lock", "lock_key"]

logger = logging.getLogger(__name__)

_POLL_S = 0.2


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
    parsed = sa.make_url(store_url)
    if parsed.get_backend_name() == "postgresql":
        with _pg_lock(store_url, key, timeout_s, what):
            yield
        return
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        yield  # in-memory store: private to this process
        return
    path = Path(f"{database}.run-{key[:16]}.lock")
    with _file_lock(path, timeout_s, what):
        yield


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


@contextmanager
def _pg_lock(store_url: str, key: str, timeout_s: float, what: str) -> Iterator[None]:
    number = int(key[:16], 16) & 0x7FFF_FFFF_FFFF_FFFF  # a positive bigint
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
