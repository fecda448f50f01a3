"""PostgreSQL: production, many workers on many machines sharing one server.

A pool of ``max_connections`` per process, connect and checkout timeouts,
the package's ``application_name`` on every session, and connect errors
that name the server. No pre-ping: a unit of work retries the first
statement of a transaction once on a connection found dead (see
:meth:`UnitOfWork.execute <ecl_persistence.UnitOfWork.execute>`). Row locks
are real here: claims skip the rows other claims hold, and the audit trail's
INSERT locks the workflow it records.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Dialect, Insert, Select, event
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import Column
from sqlalchemy.types import TypeEngine

from ecl_persistence._messages import first_line
from ecl_persistence.dialects.base import ENGINE_LOGGING_NAME, DialectStrategy, LockMode
from ecl_persistence.errors import (
    ConflictError,
    ConnectionFailedError,
    DbError,
    ValidationError,
)

if TYPE_CHECKING:
    from ecl_persistence.config import DatabaseConfig

__all__ = ["APPLICATION_NAME", "PostgresqlStrategy"]

_S = TypeVar("_S", bound="Select[*tuple[Any, ...]]")

APPLICATION_NAME = "ecl-persistence"
"""The ``application_name`` our PostgreSQL sessions carry, to find them in ``pg_stat_activity``."""

# SQLSTATE classes and codes that decide the translation.
_CONNECTION_CLASSES = ("08", "57")
_NOT_RETRYABLE = {
    "28P01": "wrong password",
    "28000": "authorization refused",
    "3D000": "database does not exist",
}
_CONFLICT = {"40001", "40P01"}  # serialization failure, deadlock


def _aware_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: ecl-persistence stores aware UTC timestamps only")
    return value.astimezone(UTC)


def _as_utc(value: datetime | None) -> datetime | None:
    # asyncpg hands back aware datetimes in UTC already.
    if value is None or value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _sqlstate(error: BaseException) -> str | None:
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else None


class PostgresqlStrategy(DialectStrategy):
    """PostgreSQL through asyncpg."""

    name = "postgresql"
    driver = "asyncpg"

    def create_engine(self, config: DatabaseConfig) -> AsyncEngine:
        """A pool of ``max_connections``, timeouts from the config, our ``application_name``."""
        engine = create_async_engine(
            config.async_url,
            echo=config.echo,
            hide_parameters=True,
            logging_name=ENGINE_LOGGING_NAME,
            pool_size=config.max_connections,
            max_overflow=0,
            pool_timeout=config.timeout_secs,
            # No pre-ping: it costs a round trip on every checkout (three with
            # asyncpg, which wraps it in a transaction).
            pool_pre_ping=False,
            # A unit of work always ends its transaction before the connection
            # goes back (its session rolls back or commits, a failure drops the
            # connection): a second rollback by the pool would only cost time.
            pool_reset_on_return=None,
            connect_args={
                "timeout": config.timeout_secs,
                "server_settings": {"application_name": APPLICATION_NAME},
            },
        )
        _name_the_server_in_connect_errors(engine, config)
        return engine

    def adopt_engine(self, engine: AsyncEngine, config: DatabaseConfig) -> None:
        """Nothing to install: refuse a driver other than asyncpg."""
        if engine.dialect.driver != self.driver:
            raise ValidationError(
                "from_engine needs the postgresql+asyncpg driver, "
                f"not postgresql+{engine.dialect.driver}"
            )

    def read_only_options(self, engine: AsyncEngine) -> dict[str, Any]:
        """Reads in autocommit: no BEGIN/COMMIT round trips around them."""
        return {"isolation_level": "AUTOCOMMIT"}

    def insert_ignoring_conflicts(
        self, target: Any, index_elements: Sequence[Column[Any]]
    ) -> Insert:
        """``INSERT ... ON CONFLICT (...) DO NOTHING``; waits for a conflicting uncommitted row."""
        statement = postgresql_dialect.insert(target)
        return statement.on_conflict_do_nothing(index_elements=index_elements)

    def lock(self, select: _S, mode: str) -> _S:
        """``FOR NO KEY UPDATE`` (``SKIP LOCKED``), or ``FOR UPDATE SKIP LOCKED`` for deletes."""
        if mode == LockMode.UPDATE:
            return select.with_for_update(key_share=True)
        if mode == LockMode.UPDATE_SKIP_LOCKED:
            return select.with_for_update(key_share=True, skip_locked=True)
        if mode == LockMode.DELETE_SKIP_LOCKED:
            return select.with_for_update(skip_locked=True)
        raise ValueError(f"unknown lock mode {mode!r}")

    def json_type(self, dialect: Dialect) -> TypeEngine[Any]:
        """``jsonb``."""
        return dialect.type_descriptor(postgresql_dialect.JSONB(none_as_null=True))

    def json_as_text(self, column_sql: str) -> str:
        """``CAST(... AS TEXT)``: the document's text, whatever the engine's deserializer."""
        return f"CAST({column_sql} AS TEXT)"

    def datetime_processors(self) -> tuple[Any, Any]:
        """``timestamptz``: bound as aware UTC, read back as aware UTC."""
        return _aware_utc, _as_utc

    def classify(self, driver_error: BaseException, action: str) -> DbError | None:
        """By SQLSTATE: credentials, a lost connection, a serialization failure or deadlock."""
        state = _sqlstate(driver_error)
        if state is None:
            return None
        if state in _NOT_RETRYABLE:
            return ConnectionFailedError(
                f"{action}: cannot connect to PostgreSQL: {_NOT_RETRYABLE[state]} "
                f"({first_line(driver_error)})",
                retryable=False,
            )
        if state[:2] in _CONNECTION_CLASSES:
            return ConnectionFailedError(f"{action}: the database connection was lost")
        if state in _CONFLICT:
            return ConflictError(f"{action}: {first_line(driver_error)}; retry the unit of work")
        return None

    @contextmanager
    def migration_guard(self, connection: Connection) -> Iterator[None]:
        """Nothing yet: PostgreSQL runs DDL in the migration's transaction."""
        yield


def _name_the_server_in_connect_errors(engine: AsyncEngine, config: DatabaseConfig) -> None:
    """Name the server in the error when it cannot be reached at all."""
    url = config.async_url
    host = url.host or url.query.get("host") or "the default host"
    server = f"{host}:{url.port or 5432}"

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        # The driver's own errors for these (refused, unknown host, a server
        # that never answers) do not say which server, or that the wait ran out.
        try:
            return dialect.connect(*cargs, **cparams)
        except OSError as error:
            if isinstance(error, TimeoutError):
                reason = (
                    f"no answer within {config.timeout_secs:g} s "
                    "(raise timeout_secs if the server is slow to accept connections)"
                )
            else:
                reason = f"{type(error).__name__}: {error}"
            raise ConnectionFailedError(
                f"cannot reach the PostgreSQL server at {server}: {reason}; "
                "check the host and port of the database URL and that the server is running"
            ) from error
