"""Alembic environment of ecl-persistence (async; SQLite and PostgreSQL).

Started from ``alembic init -t async``. Two ways in:

- ``Database.migrate()`` shares its own connection through
  ``config.attributes["connection"]``;
- the ``alembic`` command builds an engine from ``-x url=...`` or
  ``ECL_DATABASE_URL``, with the same connection set-up the package uses.

The dialect's strategy says how a migration runs: on SQLite in batch mode,
with foreign keys switched off around it (a table rebuild must not cascade
away child rows) and checked with ``PRAGMA foreign_key_check`` before the
transaction commits; on PostgreSQL after a transaction advisory lock, so
that processes migrating at once take turns.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from ecl_persistence.config import DatabaseConfig, normalize_url
from ecl_persistence.dialects import strategy_for
from ecl_persistence.errors import MigrationFailedError
from ecl_persistence.migrations import (
    begin_migration,
    check_migration,
    guarded,
    render_as_batch,
)
from ecl_persistence.orm import Base

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("ECL_DATABASE_URL")
    )
    if not url:
        raise MigrationFailedError(
            "no database URL: set ECL_DATABASE_URL or pass -x url=... to alembic"
        )
    return url


def run_migrations_offline() -> None:
    """Emit the SQL of the migrations instead of running them (``--sql``)."""
    url = normalize_url(_url())
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=strategy_for(url.get_backend_name()).render_as_batch,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on ``connection`` in one transaction."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=render_as_batch(connection),
        transactional_ddl=True,
        compare_type=True,
    )
    with guarded(connection), context.begin_transaction():
        begin_migration(connection)
        context.run_migrations()
        check_migration(connection)


async def run_async_migrations() -> None:
    """Build an engine as the package does, then run the migrations on one connection."""
    from ecl_persistence.database import build_engine

    engine = build_engine(DatabaseConfig(url=_url()))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Run the migrations against a live database."""
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
