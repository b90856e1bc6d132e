"""Specification of the run lock: two runs of one protocol on one store never interleave."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from qa.cli import main
from qa.exitcodes import ExitCode
from qa.lock import RunLockTimeoutError, lock_key, run_lock, run_lock_held
from qa.store import Store
from tests.cohort_builders import write_precomputed_cohort

_HOLD = """
import pathlib, sys, time
from qa.hashing import sha256_text
from qa.lock import run_lock
folder = pathlib.Path(sys.argv[1])
protocol_sha256 = sha256_text(pathlib.Path(sys.argv[3]).read_bytes().decode("utf-8"))
with run_lock(sys.argv[2], protocol_sha256, timeout_s=0):  # as Protocol.sha256
    (folder / "locked").touch()
    while not (folder / "release").exists():
        time.sleep(0.01)
"""


def _wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_second_run_of_the_same_protocol_waits_then_exits_40(tmp_path, capsys):
    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 10.0})
    url = f"sqlite:///{tmp_path / 'qa.db'}"
    Store(url).close()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path), url, str(protocol)],
                              stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(tmp_path / "locked")
        junit = tmp_path / "out.xml"
        code = main(["run", str(protocol), "--store", url, "--lock-timeout", "0.5",
                     "--junit", str(junit)])
        assert code == ExitCode.NOT_STARTED
        err = capsys.readouterr().err
        assert "another `qa run` of protocol 'sCT HU accuracy — test' on the same store is " \
               "still running (pid " in err
        assert "waited 0.5 s for it. Let it finish, or wait longer with --lock-timeout" in err
        assert "error" in junit.read_text(encoding="utf-8")  # CI sees a failed start
        with Store(url) as store:
            assert store.runs().empty  # nothing stored

        log = tmp_path / "waiting.log"
        with open(log, "w", encoding="utf-8") as stderr:
            waiting = subprocess.Popen(
                [sys.executable, "-m", "qa", "run", str(protocol), "--store", url,
                 "--lock-timeout", "60"], stdout=subprocess.DEVNULL, stderr=stderr)
            deadline = time.monotonic() + 60
            while "waiting up to 60 s for another run of protocol" not in log.read_text(
                    encoding="utf-8"):
                assert waiting.poll() is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, "the second run never waited"
                time.sleep(0.05)
            with Store(url) as store:
                assert store.runs().empty  # it waits before creating its run
            (tmp_path / "release").touch()
            assert waiting.wait(timeout=120) == ExitCode.OK, log.read_text(encoding="utf-8")
    finally:
        (tmp_path / "release").touch()
        holder.communicate(timeout=60)
    assert holder.returncode == 0
    with Store(url) as store:
        assert store.runs()["status"].tolist() == ["complete"]


def test_the_file_lock_is_per_protocol_and_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'qa.db'}"
    with run_lock(url, "a" * 64, timeout_s=0):
        with pytest.raises(RunLockTimeoutError, match="waited 0 s"):
            with run_lock(url, "a" * 64, timeout_s=0):
                pass
        with run_lock(url, "b" * 64, timeout_s=0):  # another protocol: no wait
            pass
        with run_lock(f"sqlite:///{tmp_path / 'other.db'}", "a" * 64, timeout_s=0):
            pass
    with run_lock(url, "a" * 64, timeout_s=0):  # released on exit
        pass
    assert (tmp_path / f"qa.db.run-{lock_key('a' * 64, url)[:16]}.lock").exists()


def test_run_lock_held_only_looks(tmp_path):
    url = f"sqlite:///{tmp_path / 'qa.db'}"
    path = tmp_path / f"qa.db.run-{lock_key('a' * 64, url)[:16]}.lock"
    assert not run_lock_held(url, "a" * 64)
    assert not path.exists()  # a lock no run ever took: not created by looking
    with run_lock(url, "a" * 64, timeout_s=0):
        holder = path.read_text(encoding="utf-8")
        assert run_lock_held(url, "a" * 64)
        assert not run_lock_held(url, "b" * 64)
    assert path.read_text(encoding="utf-8") == holder  # looking writes nothing
    assert not run_lock_held(url, "a" * 64)
    with run_lock(url, "a" * 64, timeout_s=0):  # looking left it free
        pass
    assert not run_lock_held("sqlite://", "a" * 64)  # in memory: no lock, one process


def test_a_negative_lock_timeout_is_refused(tmp_path, capsys):
    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 10.0})
    code = main(["run", str(protocol), "--store", f"sqlite:///{tmp_path / 'qa.db'}",
                 "--lock-timeout", "-1"])
    assert code == ExitCode.NOT_STARTED
    assert "--lock-timeout must be >= 0 seconds, got -1" in capsys.readouterr().err


def test_the_postgresql_lock_is_an_advisory_lock():
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg[binary]")
    url = None
    for user in ("postgres", "root"):
        candidate = f"postgresql+psycopg://{user}@127.0.0.1:5432/test"
        engine = sa.create_engine(candidate, connect_args={"connect_timeout": 3})
        try:
            with engine.connect():
                url = candidate
                break
        except sa.exc.OperationalError:
            continue
        finally:
            engine.dispose()
    if url is None:
        pytest.skip("PostgreSQL server not reachable at 127.0.0.1:5432 (users postgres, root)")
    assert not run_lock_held(url, "c" * 64)
    with run_lock(url, "c" * 64, timeout_s=0):
        assert run_lock_held(url, "c" * 64) and not run_lock_held(url, "d" * 64)
        with pytest.raises(RunLockTimeoutError, match="PostgreSQL advisory lock .* is held"):
            with run_lock(url, "c" * 64, timeout_s=0.3):
                pass
        with run_lock(url, "d" * 64, timeout_s=0):
            pass
    with run_lock(url, "c" * 64, timeout_s=0):
        pass
