"""Alembic environment of the ALARA-QA results store.

Two ways in:

* programmatic, from :class:`qa.store.Store`: the caller puts an open SQLAlchemy connection in
  ``config.attributes["connection"]``; the migration runs inside the caller's transaction;
* the Alembic command line, for administrators::

      alembic -c qa/migrations/alembic.ini -x url=postgresql+psycopg://user@host/db upgrade head

  The URL is taken from ``-x url=...``, else the ``QA_STORE`` environment variable, else
  ``sqlite:///qa.db`` in the current folder (the same default as ``Store()``).
"""

from __future__ import annotations

import logging.config

from alembic import context

from qa.store._engine import default_url, make_engine
from qa.store._schema import metadata

config = context.config
target_metadata = metadata


_PRE_CHAIN = frozenset({"0001", "0002", "0003"})  # revisions before the ledger (0004)


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        before = set(context.get_context().get_current_heads())
        context.run_migrations()
        after = set(context.get_context().get_current_heads())
        if before & _PRE_CHAIN and after == set(context.script.get_heads()):
            from qa.store._ledger import adopt_unchained

            adopt_unchained(connection)  # rows written before the chain: docs/store.md


def run_migrations_online() -> None:
    """Run the migrations on a live connection (the only mode the store supports)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if config.config_file_name is not None:
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = context.get_x_argument(as_dictionary=True).get("url") or default_url()
    engine = make_engine(url)
    try:
        with engine.connect().execution_options(qa_write=True) as connection, \
                connection.begin():
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the ALARA-QA store migrations need a database connection: "
                     "run `alembic upgrade head` without --sql")
run_migrations_online()
