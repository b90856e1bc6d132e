"""Fixtures of the store tests: every store test runs on SQLite and on PostgreSQL.

PostgreSQL: the server at 127.0.0.1:5432 (trust auth, database ``test``); one fresh database
per test session, one fresh schema per test; the PostgreSQL cases are skipped when psycopg or
the server is missing, unless ``QA_TEST_POSTGRES=required`` (set it in CI), which makes that
a failure.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from qa.store import Store
from tests.qa.store_helpers import PG_PASSWORD


@pytest.fixture(scope="session")
def pg_database():
    """URL of a fresh PostgreSQL database for this session (dropped at the end), and an
    AUTOCOMMIT engine on it."""
    if os.environ.get("QA_TEST_POSTGRES") == "required":
        import psycopg  # noqa: F401  (CI: a missing driver fails instead of skipping)
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg[binary]")
    admin = None
    for user in ("postgres", "root"):
        engine = sa.create_engine(f"postgresql+psycopg://{user}@127.0.0.1:5432/test",
                                  isolation_level="AUTOCOMMIT",
                                  connect_args={"connect_timeout": 3})
        try:
            with engine.connect():
                admin = (engine, user)
                break
        except sa.exc.OperationalError:
            engine.dispose()
    if admin is None:
        message = "PostgreSQL server not reachable at 127.0.0.1:5432 (users postgres, root)"
        if os.environ.get("QA_TEST_POSTGRES") == "required":
            pytest.fail(message + " and QA_TEST_POSTGRES=required")
        pytest.skip(message)
    engine, user = admin
    name = f"qa_test_{uuid.uuid4().hex[:12]}"
    with engine.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    url = f"postgresql+psycopg://{user}:{PG_PASSWORD}@127.0.0.1:5432/{name}"
    on_database = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        yield url, on_database
    finally:
        on_database.dispose()
        with engine.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """An empty database: a SQLite file, or a fresh schema in the session's PostgreSQL db."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'qa.db'}"
    base, engine = request.getfixturevalue("pg_database")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with engine.connect() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    return f"{base}?options=-csearch_path%3D{schema}"


@pytest.fixture
def store(store_url):
    with Store(store_url) as opened:
        yield opened
