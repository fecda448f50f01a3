"""Alembic, driven from Python: where the scripts are, and upgrade/downgrade on an engine.

The scripts live in ``alembic/`` at the root of the source tree and are
shipped inside the wheel as ``ecl_persistence/alembic``, so migrations run
from an installed package as well as from a checkout.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ecl_persistence.dialects import strategy_for
from ecl_persistence.errors import (
    DbError,
    MigrationFailedError,
    QueryFailedError,
    SchemaNotReadyError,
)

__all__ = [
    "alembic_config",
    "alembic_ini_path",
    "begin_migration",
    "check_migration",
    "current_revision",
    "downgrade",
    "explain_missing_schema",
    "guarded",
    "head_revision",
    "render_as_batch",
    "script_location",
    "upgrade",
]

_HERE = Path(__file__).resolve().parent


def script_location() -> Path:
    """The directory of the Alembic scripts, installed or in a checkout."""
    for candidate in (_HERE / "alembic", _HERE.parent.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise MigrationFailedError("the Alembic scripts are missing from this installation")


def alembic_ini_path() -> Path:
    """The ``alembic.ini`` to pass to the ``alembic`` command as ``-c``."""
    return script_location().parent / "alembic.ini"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for our scripts, sharing ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision of the scripts."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise MigrationFailedError("no Alembic revision found")
    return head


def guarded(connection: Connection) -> AbstractContextManager[None]:
    """Around a migration on ``connection``: what keeps it safe on its dialect.

    On SQLite, foreign keys are off inside (a batch migration rebuilds
    tables, and dropping the original would cascade away every child row);
    call :func:`check_migration` before the migration's transaction commits.
    """
    return strategy_for(connection.dialect).migration_guard(connection)


def begin_migration(connection: Connection) -> None:
    """First in the migration's transaction: wait until no other migration of the database runs.

    On PostgreSQL a transaction advisory lock
    (:data:`~ecl_persistence.dialects.postgresql.MIGRATION_LOCK`); on SQLite
    the transaction's ``BEGIN IMMEDIATE`` did it already. Processes that all
    migrate at once then take turns, and those that waited find nothing to do.
    """
    strategy_for(connection.dialect).begin_migration(connection)


def check_migration(connection: Connection) -> None:
    """Raise MigrationFailedError if the migration left the database inconsistent.

    On SQLite, ``PRAGMA foreign_key_check`` must report nothing.
    """
    strategy_for(connection.dialect).check_after_migration(connection)


def render_as_batch(connection: Connection) -> bool:
    """Whether Alembic must rebuild tables to alter them on this connection's dialect."""
    return strategy_for(connection.dialect).render_as_batch


def _run(connection: Connection, action: str, revision: str) -> None:
    config = alembic_config(connection)
    if action == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def _migrate(
    engine: AsyncEngine, action: str, revision: str, lock: asyncio.Lock | None
) -> None:
    if lock is not None:
        await lock.acquire()
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run, action, revision)
    except DbError:
        raise
    except Exception as error:
        raise MigrationFailedError(
            f"{action} to {revision} failed: {type(error).__name__}: {_first_line(error)}"
        ) from error
    finally:
        if lock is not None:
            lock.release()


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else ""


async def upgrade(
    engine: AsyncEngine, revision: str = "head", *, lock: asyncio.Lock | None = None
) -> None:
    """Upgrade the database behind ``engine`` to ``revision``."""
    await _migrate(engine, "upgrade", revision, lock)


async def downgrade(
    engine: AsyncEngine, revision: str, *, lock: asyncio.Lock | None = None
) -> None:
    """Downgrade the database behind ``engine`` to ``revision`` (``"base"`` empties it)."""
    await _migrate(engine, "downgrade", revision, lock)


async def explain_missing_schema(engine: AsyncEngine, error: SchemaNotReadyError) -> DbError:
    """The error to raise for a statement that found a table or column missing.

    Reads the database's revision (once, on the failure path only): behind
    the head revision, a :class:`SchemaNotReadyError` saying which revision
    the database is at, which one the code needs, and to call ``await
    db.migrate()``; at the head, the missing name is no migration's business
    (an application's own SQL) and a :class:`QueryFailedError` says only
    what is missing. If the revision cannot be read, ``error`` as it is.
    """
    head = head_revision()
    try:
        current = await current_revision(engine)
    except DbError:
        return error
    if current == head:
        return QueryFailedError(f"{error}, although its schema is at the head revision {head}")
    at = f"revision {current}" if current is not None else "no revision (it was never migrated)"
    return SchemaNotReadyError(
        f"{error}: the database is at {at} and this version of ecl-persistence needs "
        f"revision {head}; call `await db.migrate()` (or run `ecl-db migrate`)",
        current_revision=current,
        head_revision=head,
        missing=error.missing,
    )


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or ``None`` when it was never migrated."""
    from ecl_persistence._translate import translating

    with translating("read the schema revision"):
        async with engine.connect() as connection:
            return await connection.run_sync(_current)
