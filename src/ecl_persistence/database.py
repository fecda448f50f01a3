"""The database: an engine set up for its dialect, migrations, and units of work."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, StaticPool

from ecl_persistence._sqlite_driver import OneTripConnection
from ecl_persistence._sqlite_driver import connect as sqlite_connect
from ecl_persistence.config import DatabaseConfig
from ecl_persistence.domain import WorkflowState, encode_json
from ecl_persistence.errors import ConnectionFailedError
from ecl_persistence.retention import DEFAULT_PURGE_BATCH, FINISHED_STATES, purge
from ecl_persistence.unit_of_work import UnitOfWork

__all__ = ["APPLICATION_NAME", "Database", "build_engine"]

APPLICATION_NAME = "ecl-persistence"
"""The ``application_name`` our PostgreSQL sessions carry, to find them in ``pg_stat_activity``."""

_READ_ONLY = "ecl_read_only"


def _raw_json(text: str) -> str:
    """Hand JSON text to the repositories undecoded; they decode it with row context."""
    return text


def _private_memory_url(url: URL) -> URL:
    """A uniquely named in-memory database that more than one connection can open.

    With a plain ``sqlite://`` the database lives in its one connection, and
    SQLAlchemy closes that connection when a task is cancelled mid-statement:
    the whole database would be gone. A named ``memdb`` database lives while
    any connection to it is open, so a keeper connection holds it instead.
    """
    name = f"/ecl-{uuid.uuid4().hex}"
    return url.set(database=f"file:{name}", query={"vfs": "memdb", "uri": "true"})


def _keep_memory_database(engine: AsyncEngine, url: URL) -> None:
    """Hold a connection to the named in-memory database until the engine is disposed."""
    keeper: list[sqlite3.Connection] = []
    uri = f"{url.database}?vfs=memdb"

    @event.listens_for(engine.sync_engine, "connect")
    def _open_keeper(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if not keeper:
            keeper.append(sqlite3.connect(uri, uri=True, check_same_thread=False))

    @event.listens_for(engine.sync_engine, "engine_disposed")
    def _close_keeper(disposed: Any) -> None:
        while keeper:
            keeper.pop().close()


class _SqliteConnector:
    """Opens the engine's connections as :class:`OneTripConnection` (see ``_sqlite_driver``)."""

    def __init__(self, config: DatabaseConfig) -> None:
        self._timeout = config.timeout_secs
        self._arguments: tuple[Any, Any] = ((), {})

    def bind(self, engine: AsyncEngine) -> None:
        """Take the file name and options from the engine's URL, as its dialect reads them."""
        self._arguments = engine.dialect.create_connect_args(engine.url)

    async def __call__(self) -> OneTripConnection:
        args, kwargs = self._arguments
        # isolation_level=None: the "begin" hook below decides how every
        # transaction starts, not sqlite3.
        connection = sqlite_connect(*args, **kwargs, timeout=self._timeout, isolation_level=None)
        await connection
        return connection


def _install_sqlite_setup(engine: AsyncEngine, config: DatabaseConfig) -> None:
    """Pragmas on every connection, and a BEGIN we choose for every transaction."""
    busy_ms = int(config.timeout_secs * 1000)
    is_file = not config.is_memory

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            if is_file:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A read-only unit reads in autocommit, as on PostgreSQL: each
        # statement is atomic on its own, and no BEGIN or COMMIT is sent.
        if connection.get_execution_options().get(_READ_ONLY):
            return
        # A writer takes the lock up front: two read-then-write transactions
        # then queue on busy_timeout instead of failing with "database is locked".
        # The BEGIN travels with the transaction's first statement.
        driver: Any = connection.connection.driver_connection
        driver.defer_begin("BEGIN IMMEDIATE")


def _install_postgres_setup(engine: AsyncEngine, config: DatabaseConfig) -> None:
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


def build_engine(config: DatabaseConfig) -> AsyncEngine:
    """Create the async engine for ``config``, set up for its dialect.

    SQLite: ``foreign_keys``, ``busy_timeout``, WAL and ``synchronous=NORMAL``
    on every connection, ``BEGIN IMMEDIATE`` for writes;
    an in-memory database keeps a single connection
    to a private named database that lives until the engine is disposed.
    PostgreSQL: a pool of ``max_connections``, a retry on a dead pooled
    connection, connect and checkout timeouts, our ``application_name``, and
    connect errors that name the server.
    """
    url = config.async_url
    common: dict[str, Any] = {
        "echo": config.echo,
        "hide_parameters": True,
        "json_serializer": encode_json,
        "json_deserializer": _raw_json,
    }
    if config.dialect == "sqlite":
        if config.is_memory:
            url = _private_memory_url(url)
            pool: dict[str, Any] = {"poolclass": StaticPool}
        else:
            pool = {
                "poolclass": AsyncAdaptedQueuePool,
                "pool_size": config.max_connections,
                "max_overflow": 0,
                "pool_timeout": config.timeout_secs,
            }
        connector = _SqliteConnector(config)
        engine = create_async_engine(url, async_creator=connector, **pool, **common)
        connector.bind(engine)
        _install_sqlite_setup(engine, config)
        if config.is_memory:
            _keep_memory_database(engine, url)
        return engine
    engine = create_async_engine(
        url,
        pool_size=config.max_connections,
        max_overflow=0,
        pool_timeout=config.timeout_secs,
        # No pre-ping: it costs a round trip on every checkout (three with
        # asyncpg, which wraps it in a transaction). A unit of work instead
        # retries the first statement of a transaction once on a connection
        # found dead, which keeps the same guarantee (see UnitOfWork.execute).
        pool_pre_ping=False,
        connect_args={
            "timeout": config.timeout_secs,
            "server_settings": {"application_name": APPLICATION_NAME},
        },
        **common,
    )
    _install_postgres_setup(engine, config)
    return engine


class Database:
    """A configured database: hands out units of work and runs migrations.

    Create one per process and share it; it owns the connection pool.
    ``async with Database.from_url(...) as db:`` disposes of it on exit.
    """

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        """The configuration this database was built from."""
        self._engine = build_engine(config)
        if config.dialect == "sqlite":
            read_engine = self._engine.execution_options(**{_READ_ONLY: True})
        else:
            # Reads in autocommit: no BEGIN/COMMIT round trips around them.
            read_engine = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False, autoflush=False)
        self._read_sessions = async_sessionmaker(
            read_engine, expire_on_commit=False, autoflush=False
        )
        # An in-memory database has one connection: units of work take turns on it.
        self._memory_lock = asyncio.Lock() if config.is_memory else None

    def __repr__(self) -> str:
        return f"Database({self.config!r})"

    @classmethod
    def from_url(cls, url: str, **config_fields: Any) -> Database:
        """Build a database from a URL and any other :class:`DatabaseConfig` fields."""
        return cls(DatabaseConfig(url=url, **config_fields))

    @classmethod
    def from_env(cls) -> Database:
        """Build a database from the environment (see :meth:`DatabaseConfig.from_env`)."""
        return cls(DatabaseConfig.from_env())

    @classmethod
    async def in_memory(cls, **config_fields: Any) -> Database:
        """A private, migrated in-memory SQLite database that lives until :meth:`dispose`."""
        database = cls(DatabaseConfig(url="sqlite://", **config_fields))
        await database.migrate()
        return database

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine, for advanced use (its pool, its events)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.config.dialect

    def session(self, *, read_only: bool = False) -> UnitOfWork:
        """Return a new unit of work; use it with ``async with``."""
        factory = self._read_sessions if read_only else self._sessions
        return UnitOfWork(factory, self.config, read_only=read_only, lock=self._memory_lock)

    async def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision`` (the newest by default); idempotent."""
        from ecl_persistence.migrations import upgrade

        await upgrade(self._engine, revision, lock=self._memory_lock)

    async def purge(
        self,
        *,
        finished_before: datetime,
        states: Iterable[WorkflowState] = FINISHED_STATES,
        batch_size: int = DEFAULT_PURGE_BATCH,
        dry_run: bool = False,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Delete finished workflows older than a cutoff, one transaction per batch.

        See :func:`ecl_persistence.retention.purge`; returns the number deleted
        (or, with ``dry_run``, the number that would be).
        """
        return await purge(
            self,
            finished_before=finished_before,
            states=states,
            batch_size=batch_size,
            dry_run=dry_run,
            on_batch=on_batch,
        )

    async def ping(self) -> None:
        """Check that the database answers; raise :class:`ConnectionFailedError` if not."""
        async with self.session(read_only=True) as uow:
            await uow.execute(text("SELECT 1"), action="ping")

    async def dispose(self) -> None:
        """Close every pooled connection. An in-memory database is gone afterwards."""
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()
