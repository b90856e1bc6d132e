"""Headless Chromium driven over the DevTools protocol (CDP) through a pipe.

Chromium is started with ``--remote-debugging-pipe``: it reads CDP commands (JSON, each ended
by a NUL byte) from file descriptor 3 and writes replies and events to descriptor 4. No port is
opened and no third-party client library is needed. Used by :mod:`reports.pdf` (printing with
page numbers) and by the browser tests (console errors of a loaded report).

Private to :mod:`reports`; the public entry points are in :mod:`reports.pdf`.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["ChromiumNotFoundError", "ChromiumError", "Chromium", "find_chromium"]

logger = logging.getLogger(__name__)

#: Executable names tried in order when ``$QA_CHROMIUM`` is not set.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe",
)


class ChromiumNotFoundError(RuntimeError):
    """No Chromium executable was found (PDF output and browser tests need one)."""


class ChromiumError(RuntimeError):
    """Chromium failed, answered a command with an error, or did not answer in time."""


def find_chromium() -> str:
    """Path of the Chromium executable: ``$QA_CHROMIUM`` if set, else the first of
    :data:`CANDIDATES` on ``PATH``.

    Raises
    ------
    ChromiumNotFoundError
        With what to install (Debian: ``apt-get install chromium``; ``make test`` and
        ``make demo`` install it when missing).
    """
    named = os.environ.get("QA_CHROMIUM")
    if named:
        found = shutil.which(named)
        if found is None:
            raise ChromiumNotFoundError(f"QA_CHROMIUM={named!r} is not an executable; "
                                        "point it at chromium or unset it")
        return found
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumNotFoundError(
        "no Chromium found on PATH (tried " + ", ".join(CANDIDATES) + "); the PDF report "
        "needs it: install it (Debian/Ubuntu: `apt-get install chromium`; `make demo` and "
        "`make test` do this when missing) or set QA_CHROMIUM to its path")


class Chromium:
    """One headless Chromium process with one page, as a context manager.

    ``send(method, **params)`` runs a CDP command on the page and returns its result;
    events received meanwhile are kept in :attr:`events` (method, params), in order.

    Parameters
    ----------
    timeout_s : float
        Longest wait for any single reply or event, in seconds.
    """

    def __init__(self, *, timeout_s: float = 60.0) -> None:
        executable = find_chromium()  # first: nothing to clean up when it is missing
        self.timeout_s = timeout_s
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._next_id = 0
        self._buffer = b""
        self._session: str | None = None
        self._profile = tempfile.TemporaryDirectory(prefix="qa-chromium-",
                                                    ignore_cleanup_errors=True)
        self._log = tempfile.TemporaryFile()  # Chromium's stderr, read on failure
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # numbered 10 and above, so that moving them onto 3 and 4 cannot clobber one another
        to_child_r, from_child_w = _renumber_high(to_child_r), _renumber_high(from_child_w)
        args = [executable, *_FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"]
        # The CDP pipe must be fds 3 and 4 of Chromium: bash moves them there and execs it
        # (no preexec_fn, which is unsafe in a process with threads; dash cannot redirect
        # descriptors above 9).
        script = (f'exec "$0" "$@" 3<&{to_child_r} 4>&{from_child_w} '
                  f'{to_child_r}<&- {from_child_w}>&-')
        try:
            self._process = subprocess.Popen(
                [shutil.which("bash") or "/bin/bash", "-c", script, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=self._log,
                pass_fds=(to_child_r, from_child_w))
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        try:
            target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
            attached = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})
            self._session = attached["sessionId"]
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run ``method`` on the page and return its result (ChromiumError on an error)."""
        return self._call(method, params, session=self._session)

    def wait_for(self, method: str) -> dict[str, Any]:
        """Wait for the next event ``method`` not yet consumed and return its params."""
        for index, (name, params) in enumerate(self.events):
            if name == method and not params.get("_seen"):
                self.events[index] = (name, {**params, "_seen": True})
                return params
        deadline = time.monotonic() + self.timeout_s
        while True:
            message = self._read(deadline)
            if message.get("method") == method:
                self.events.append((method, {**message.get("params", {}), "_seen": True}))
                return message.get("params", {})
            self._keep_event(message)

    def close(self) -> None:
        """Ask Chromium to quit, then make sure it is gone and its profile removed."""
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            try:
                self._write({"id": -1, "method": "Browser.close"})
                process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        self._log.close()
        for fd in ("_to_child", "_from_child"):
            if getattr(self, fd, None) is not None:
                try:
                    os.close(getattr(self, fd))
                except OSError:
                    pass
                setattr(self, fd, None)
        self._profile.cleanup()

    # ------------------------------------------------------------------------- plumbing

    def _call(self, method: str, params: dict[str, Any], *,
              session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._write(message)
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ChromiumError(f"Chromium refused {method}: {reply['error']}")
                return reply.get("result", {})
            self._keep_event(reply)

    def _keep_event(self, message: dict[str, Any]) -> None:
        if "method" in message:
            self.events.append((message["method"], message.get("params", {})))

    def _write(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode("utf-8") + b"\0"
        while data:
            written = os.write(self._to_child, data)
            data = data[written:]

    def _read(self, deadline: float) -> dict[str, Any]:
        scanned = 0  # the buffer before this offset holds no NUL (large replies: no rescans)
        while b"\0" not in self._buffer[scanned:]:
            scanned = len(self._buffer)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChromiumError(f"Chromium did not answer within {self.timeout_s:g} s")
            ready, _, _ = select.select([self._from_child], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise ChromiumError("Chromium exited unexpectedly: " + self._stderr_tail())
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _stderr_tail(self) -> str:
        process = self._process
        try:
            process.wait(timeout=5)
            self._log.seek(0)
            tail = self._log.read().decode("utf-8", "replace")
        except (OSError, subprocess.TimeoutExpired, ValueError):
            tail = ""
        return " ".join(tail.strip().splitlines()[-5:]) or f"exit code {process.returncode}"


def _renumber_high(fd: int) -> int:
    """``fd`` moved to a descriptor numbered 10 or above (the original is closed)."""
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


def file_url(path: str | Path) -> str:
    """``file://`` URL of a local file."""
    return Path(path).resolve().as_uri()
