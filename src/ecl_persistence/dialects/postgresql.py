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

import re
import ssl
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Dialect, Executable, Insert, Numeric, Select, event, func
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import Column
from sqlalchemy.types import TypeEngine

from ecl_persistence._messages import first_line, raw_first_line
from ecl_persistence.dialects import _libpq as libpq
from ecl_persistence.dialects import _pg_listen
from ecl_persistence.dialects.base import ENGINE_LOGGING_NAME, DialectStrategy, Listening, LockMode
from ecl_persistence.errors import (
    ConflictError,
    ConnectionFailedError,
    DbError,
    SchemaNotReadyError,
    TransactionFailedError,
    ValidationError,
)

if TYPE_CHECKING:
    from ecl_persistence.config import DatabaseConfig

__all__ = ["APPLICATION_NAME", "MIGRATION_LOCK", "PostgresqlStrategy"]


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
_READ_ONLY = "25006"  # read_only_sql_transaction: a replica, or a read-only transaction
MIGRATION_LOCK = 0x45434C5F4D494752  # "ECL_MIGR"
"""The key of the advisory lock migrations take turns on, in each database."""
_UNDEFINED = {"42P01": "table", "42703": "column"}  # undefined table, undefined column
# 'relation "workflows" does not exist', 'column "x" of relation "y" does not exist',
# 'column workflows.x does not exist': names of the schema, never values.
_UNDEFINED_NAME = re.compile(
    r'^(?:relation|column) "?(?P<name>[\w.]{1,200})"?'
    r'(?: of relation "(?P<table>\w{1,100})")? does not exist'
)


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
    row_locks = True

    def create_engine(self, config: DatabaseConfig) -> AsyncEngine:
        """A pool of ``max_connections``, timeouts from the config, our ``application_name``.

        The URL's libpq parameters (``sslmode``, ``connect_timeout``, ...; see
        ``dialects/_libpq.py``) become asyncpg's arguments; TLS files are read
        here, and one that cannot be raises ValidationError.
        """
        given = libpq.connect_arguments(config.async_url)
        connect_args: dict[str, Any] = {
            "timeout": config.timeout_secs if given.timeout is None else given.timeout,
            "server_settings": {"application_name": APPLICATION_NAME, **given.server_settings},
        }
        if given.ssl is not None:
            connect_args["ssl"] = given.ssl
        if given.target_session_attrs is not None:
            connect_args["target_session_attrs"] = given.target_session_attrs
        url = given.url
        if config.pgbouncer:
            connect_args |= _pgbouncer_arguments()
            # SQLAlchemy's own cache of prepared statements, per connection:
            # under transaction pooling a statement lives on one server only.
            url = url.update_query_dict({"prepared_statement_cache_size": "0"})
        engine = create_async_engine(
            url,
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
            connect_args=connect_args,
        )
        waited = "timeout_secs" if given.timeout is None else "connect_timeout in the URL"
        _name_the_server_in_connect_errors(engine, config, connect_args["timeout"], waited)
        return engine

    def check_url(self, url: URL) -> None:
        """Refuse a query parameter that is neither libpq's (``sslmode``, ...) nor the dialect's."""
        libpq.check_query(url)

    def check_scale_out(self, config: DatabaseConfig) -> None:
        """``listen_url``, ``replica_url``: PostgreSQL URLs; behind PgBouncer, no ``options``.

        Behind PgBouncer the session settings of ``options`` (startup
        parameters) would not follow the transactions to the server
        connections they run on: refused rather than lost.
        """
        urls = (("listen_url", config.listen_async_url), ("replica_url", config.replica_async_url))
        for name, url in urls:
            if url is not None and url.get_backend_name() != self.name:
                raise ValidationError(f"{name} must be a PostgreSQL URL like url")
        if config.pgbouncer:
            for url in (config.async_url, config.replica_async_url):
                if url is not None and "options" in url.query:
                    raise ValidationError(
                        "pgbouncer=True: the URL's options parameter sets session state that "
                        "transaction pooling loses; set those settings on the server or role"
                    )

    def pgbouncer_in_url(self, url: URL) -> bool:
        """Whether the URL says ``?pgbouncer=true``."""
        return libpq.pgbouncer_flag(url)

    def claimable_notice(self) -> Executable:
        """``SELECT pg_notify('ecl_claimable', :definition_id)``, delivered at commit."""
        return _pg_listen.NOTICE

    async def listen(
        self, config: DatabaseConfig, on_notice: Callable[[str], None]
    ) -> Listening | None:
        """``LISTEN`` on a connection of its own to ``listen_url`` (default: ``url``).

        None behind PgBouncer without a ``listen_url``: a ``LISTEN`` through
        transaction pooling would receive nothing.
        """
        url = config.listen_async_url
        if url is None:
            if config.pgbouncer:
                return None
            url = config.async_url
        return await _pg_listen.open_listening(
            url, config, on_notice, f"{APPLICATION_NAME} listener"
        )

    def adopt_engine(self, engine: AsyncEngine, config: DatabaseConfig) -> None:
        """Nothing to install: refuse a driver other than asyncpg."""
        if engine.dialect.driver != self.driver:
            raise ValidationError(
                "from_engine needs the postgresql+asyncpg driver, "
                f"not postgresql+{engine.dialect.driver}"
            )

    def read_only_options(self, engine: AsyncEngine, config: DatabaseConfig) -> dict[str, Any]:
        """Reads in autocommit: no BEGIN/COMMIT round trips around them.

        Behind PgBouncer, in a ``BEGIN READ ONLY`` transaction instead:
        SQLAlchemy prepares a statement and then runs it, two exchanges that
        transaction pooling may hand to two server connections unless one
        transaction holds them together.
        """
        if config.pgbouncer:
            return {"postgresql_readonly": True}
        return {"isolation_level": "AUTOCOMMIT"}

    def insert_ignoring_conflicts(
        self, target: Any, index_elements: Sequence[Column[Any]]
    ) -> Insert:
        """``INSERT ... ON CONFLICT (...) DO NOTHING``; waits for a conflicting uncommitted row."""
        statement = postgresql_dialect.insert(target)
        return statement.on_conflict_do_nothing(index_elements=index_elements)

    def insert_or_lock(self, target: Any, index_elements: Sequence[Column[Any]]) -> Insert:
        """``ON CONFLICT (...) DO UPDATE`` of the key to itself: the stored row, locked."""
        statement = postgresql_dialect.insert(target)
        key = index_elements[0]
        return statement.on_conflict_do_update(
            index_elements=index_elements, set_={key.name: statement.excluded[key.name]}
        )

    def lock(self, select: _S, mode: str) -> _S:
        """``FOR NO KEY UPDATE`` (``SKIP LOCKED``), or ``FOR UPDATE SKIP LOCKED`` for deletes."""
        if mode == LockMode.UPDATE:
            return select.with_for_update(key_share=True)
        if mode == LockMode.UPDATE_SKIP_LOCKED:
            return select.with_for_update(key_share=True, skip_locked=True)
        if mode == LockMode.DELETE_SKIP_LOCKED:
            return select.with_for_update(skip_locked=True)
        if mode == LockMode.KEY_SHARE:
            return select.with_for_update(read=True, key_share=True)
        raise ValueError(f"unknown lock mode {mode!r}")

    def json_type(self, dialect: Dialect) -> TypeEngine[Any]:
        """``jsonb``."""
        return dialect.type_descriptor(postgresql_dialect.JSONB(none_as_null=True))

    def money_type(self, dialect: Dialect) -> TypeEngine[Any]:
        """``numeric(20, 6)``: exact, and summed exactly."""
        return dialect.type_descriptor(Numeric(20, 6, asdecimal=True))

    def money_processors(self) -> tuple[Any, Any]:
        """The driver binds and reads ``Decimal`` itself; a sum read back at six places."""
        return None, _money_result

    def payload_lookup(self, ref_sql: str) -> str:
        """A lookup in ``payloads`` by primary key; ``encode(..., 'hex')`` of the stored bytes."""
        found = "payloads.hash || ':' || payloads.codec || ':' || encode(payloads.data, 'hex')"
        lookup = f"SELECT {found} FROM payloads WHERE payloads.hash = {ref_sql}"  # noqa: S608
        return f"coalesce(({lookup}), {ref_sql})"

    def utc_day(self, column: Any) -> Any:
        """``to_char`` of the timestamp at UTC."""
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")

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
        if state == _READ_ONLY:
            return TransactionFailedError(
                f"{action}: the server refuses writes here (a read replica, or a read-only "
                "transaction); write in a unit of work that is not read-only"
            )
        if state in _UNDEFINED:
            return _missing(
                action, _UNDEFINED[state], _UNDEFINED_NAME.match(raw_first_line(driver_error))
            )
        return None

    @contextmanager
    def migration_guard(self, connection: Connection) -> Iterator[None]:
        """Nothing around it: PostgreSQL runs DDL in the migration's transaction."""
        yield

    def begin_migration(self, connection: Connection) -> None:
        """Wait for the database's migration lock: migrations take turns.

        Workers that all call ``migrate()`` at start-up would otherwise run
        the same DDL at once, and all but one fail (two ``CREATE TABLE`` of
        one name collide in the catalog). The advisory lock is the
        transaction's (``pg_advisory_xact_lock``): taken first in the
        migration's transaction, before Alembic reads the revision, and let
        go when it commits or rolls back, also when the session dies, and
        also through a pooler that hands transactions to other sessions. A
        migration that waited finds the schema at its target and does nothing.
        """
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")


def _pgbouncer_arguments() -> dict[str, Any]:
    """Asyncpg's arguments for transaction pooling: no statement outlives its transaction.

    No statement cache, and a unique name for each statement SQLAlchemy
    prepares: the next transaction may run on another server connection,
    where a name reused would collide or be missing.
    """
    return {
        "statement_cache_size": 0,
        "prepared_statement_name_func": lambda: f"__ecl_{uuid.uuid4().hex}__",
    }


def _missing(action: str, kind: str, named: re.Match[str] | None) -> SchemaNotReadyError:
    """A table or column the schema lacks; the unit of work then reads the revision."""
    missing = None
    if named is not None:
        table = named.group("table")
        missing = f"{table}.{named.group('name')}" if table else named.group("name")
    what = f"{kind} {missing}" if missing else f"a {kind} the statement needs"
    return SchemaNotReadyError(f"{action}: the database has no {what}", missing=missing)


def _name_the_server_in_connect_errors(
    engine: AsyncEngine, config: DatabaseConfig, timeout: float, setting: str
) -> None:
    """Name the server in the error when it cannot be reached at all, or not over TLS."""
    url = config.async_url
    host = url.host or url.query.get("host") or "the default host"
    server = f"{host}:{url.port or 5432}"

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        # The driver's own errors for these (refused, unknown host, a server
        # that never answers) do not say which server, or that the wait ran out.
        try:
            return dialect.connect(*cargs, **cparams)
        except ssl.SSLError as error:
            # A certificate that does not verify (or a name that does not
            # match) fails the same way every time.
            raise ConnectionFailedError(
                f"cannot connect to the PostgreSQL server at {server} over TLS: "
                f"{type(error).__name__}: {getattr(error, 'verify_message', None) or error}; "
                "check sslmode and sslrootcert in the database URL",
                retryable=False,
            ) from error
        except OSError as error:
            if isinstance(error, TimeoutError):
                reason = (
                    f"no answer within {timeout:g} s "
                    f"(raise {setting} if the server is slow to accept connections)"
                )
            else:
                reason = f"{type(error).__name__}: {error}"
            raise ConnectionFailedError(
                f"cannot reach the PostgreSQL server at {server}: {reason}; "
                "check the host and port of the database URL and that the server is running"
            ) from error


_SIX_PLACES = Decimal("0.000001")


def _money_result(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(_SIX_PLACES)
