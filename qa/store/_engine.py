"""Engines for the results store: URL defaults, SQLite pragmas, migrations on open."""

from __future__ import annotations

import logging
import os
import threading
import time
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

__all__ = ["StoreError", "default_url", "resolve_url", "mask_url", "make_engine",
           "upgrade_to_head", "MIGRATIONS_DIR", "SQLITE_BUSY_TIMEOUT_S"]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0
_DEFAULT_URL = "sqlite:///qa.db"
_PG_LOCK_KEY = 0x51A_0A1A  # advisory lock serialising concurrent migrations on PostgreSQL
_UPGRADE_LOCK = threading.Lock()  # Alembic's context proxy is process-global


class StoreError(RuntimeError):
    """The results store cannot be opened or is at a schema this software does not know."""


def default_url() -> str:
    """``QA_STORE`` when set (and not empty), else ``sqlite:///qa.db`` in the current folder."""
    return os.environ.get("QA_STORE") or _DEFAULT_URL


def resolve_url(url: str) -> str:
    """Make a relative SQLite file path absolute (against the current folder).

    SQLite resolves relative paths at each connect; fixing the path when the store opens keeps
    later connections on the same file even if the process changes folder.
    """
    parsed = sa.make_url(url)
    database = parsed.database
    if (parsed.get_backend_name() != "sqlite" or not database or database == ":memory:"
            or database.startswith("file:") or Path(database).is_absolute()):
        return url
    return parsed.set(database=str(Path(database).resolve())).render_as_string(
        hide_password=False)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and ``repr``)."""
    return sa.make_url(url).render_as_string(hide_password=True)


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; on SQLite with WAL, a busy timeout, foreign keys and real BEGINs.

    pysqlite's own transaction handling neither starts a transaction before DDL nor takes the
    write lock up front; as the SQLAlchemy documentation recommends ("Serializable isolation /
    Savepoints / Transactional DDL"), the driver is put in autocommit mode and BEGIN is emitted
    here: ``BEGIN IMMEDIATE`` for connections with the execution option ``qa_write=True`` (so
    concurrent writers wait up to the busy timeout instead of failing), ``BEGIN`` otherwise.
    """
    parsed = sa.make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S} if is_sqlite else {}
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        extra = " (pip install 'alara-qa[postgres]')" if "postgres" in parsed.drivername else ""
        raise StoreError(f"cannot open the results store {mask_url(url)}: the database driver "
                         f"is not installed{extra}: {exc}") from exc
    if is_sqlite:
        file_db = bool(parsed.database) and parsed.database != ":memory:"

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:  # noqa: ANN001
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            if file_db:
                _use_wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(connection: sa.Connection) -> None:
            write = connection.get_execution_options().get("qa_write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
    return engine


def _use_wal(cursor, timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> None:  # noqa: ANN001
    """Put a SQLite file in WAL mode (a persistent property of the file).

    Converting the journal needs exclusive access, and SQLite may refuse it at once, without
    running its busy handler (where waiting could deadlock with another connection's lock):
    a second process opening a brand-new store while the first converts or migrates it could
    fail with "database is locked". So the mode is read first (WAL already: nothing to do, no
    lock taken), and the conversion is retried with a growing pause for up to ``timeout_s``;
    another process finishing the conversion meanwhile is success.
    """
    import sqlite3

    deadline = time.monotonic() + timeout_s
    pause_s = 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return  # SQLite answers with the mode now in force (a read-only file keeps its own)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
        time.sleep(pause_s)
        pause_s = min(2 * pause_s, 0.2)


def upgrade_to_head(engine: sa.Engine, url_shown: str) -> None:
    """Bring the schema to the newest migration; a no-op when it is already there.

    The current revision is read first (one small query); only when it differs is
    ``alembic upgrade head`` run, inside one transaction that holds the write lock (SQLite
    ``BEGIN IMMEDIATE``, PostgreSQL advisory lock), so concurrent openers migrate once.

    Raises
    ------
    StoreError
        The database cannot be reached, or it is at a revision this software does not know
        (written by a newer ALARA-QA).
    """
    try:
        with engine.connect() as connection:
            current = _current_heads(connection)
        if current == _script_heads():
            return
        _refuse_unknown(current, url_shown)
        with _UPGRADE_LOCK, engine.connect().execution_options(qa_write=True) as connection:
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                                       {"key": _PG_LOCK_KEY})
                current = _current_heads(connection)
                if current == _script_heads():
                    return
                _refuse_unknown(current, url_shown)
                config = _alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
            logger.info("results store %s migrated from %s to %s", url_shown,
                        sorted(current) or "empty", sorted(_script_heads()))
    except sa.exc.OperationalError as exc:
        raise StoreError(
            f"cannot open the results store {url_shown}: {exc.orig}; check that the folder "
            "exists and is writable (SQLite) or that the server is up and the user, host and "
            "database in the URL are right (PostgreSQL), or set QA_STORE to another URL"
        ) from exc


def _current_heads(connection: sa.Connection) -> frozenset[str]:
    return frozenset(MigrationContext.configure(connection).get_current_heads())


def _refuse_unknown(current: frozenset[str], url_shown: str) -> None:
    unknown = current - _known_revisions()
    if unknown:
        raise StoreError(
            f"the results store {url_shown} is at schema revision {', '.join(sorted(unknown))}, "
            "which this version of ALARA-QA does not know (it was written by a newer version); "
            "upgrade alara-qa, or use another store URL"
        )


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


def _script_heads() -> frozenset[str]:
    return frozenset(_script().get_heads())


@lru_cache(maxsize=1)
def _known_revisions() -> frozenset[str]:
    return frozenset(rev.revision for rev in _script().walk_revisions())
