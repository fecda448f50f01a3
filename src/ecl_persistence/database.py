"""The database: an engine set up by its dialect's strategy, migrations, and units of work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import attrs
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ecl_persistence.config import DatabaseConfig
from ecl_persistence.dialects import strategy_for
from ecl_persistence.domain import PriceBook, WorkflowState
from ecl_persistence.errors import ValidationError
from ecl_persistence.retention import DEFAULT_PURGE_BATCH, FINISHED_STATES, purge
from ecl_persistence.telemetry import unit_of_work_class
from ecl_persistence.unit_of_work import UnitOfWork

__all__ = ["Database", "build_engine"]


def build_engine(config: DatabaseConfig) -> AsyncEngine:
    """Create the async engine for ``config``, set up by its dialect's strategy.

    SQLite: ``foreign_keys``, ``busy_timeout``, WAL and ``synchronous=NORMAL``
    on every connection and ``BEGIN IMMEDIATE`` for writes; an in-memory
    database keeps a single connection to a private named database that
    lives until the engine is disposed. PostgreSQL: a pool of
    ``max_connections``, connect and checkout timeouts, our
    ``application_name``, and connect errors that name the server.
    """
    return config.strategy.create_engine(config)


def _read_sessions(engine: AsyncEngine, config: DatabaseConfig) -> async_sessionmaker[AsyncSession]:
    """The sessions of the read-only units of work on ``engine``."""
    options = config.strategy.read_only_options(engine, config)
    read_engine = engine.execution_options(**options)
    return async_sessionmaker(read_engine, expire_on_commit=False, autoflush=False)


class Database:
    """A configured database: hands out units of work and runs migrations.

    Create one per process and share it; it owns the connection pool (unless
    it was built on the application's engine with :meth:`from_engine`).
    ``async with Database.from_url(...) as db:`` disposes of it on exit.
    """

    def __init__(self, config: DatabaseConfig, *, price_book: PriceBook | None = None) -> None:
        self._set_up(
            config, config.strategy.create_engine(config), owns_engine=True, price_book=price_book
        )

    def _set_up(
        self,
        config: DatabaseConfig,
        engine: AsyncEngine,
        *,
        owns_engine: bool,
        price_book: PriceBook | None = None,
    ) -> None:
        strategy = config.strategy
        self.config = config
        """The configuration this database was built from."""
        if price_book is not None and not isinstance(price_book, PriceBook):
            raise ValidationError("price_book must be a PriceBook")
        self.price_book = price_book
        """The prices that fill in the cost of an attempt recorded without one (or None)."""
        self._engine = engine
        self._owns_engine = owns_engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self._read_sessions = _read_sessions(engine, config)
        # A read replica: an engine of its own, with the primary's settings.
        self._replica_engine: AsyncEngine | None = None
        self._replica_sessions = self._read_sessions
        if config.replica_url is not None:
            replica = attrs.evolve(config, url=config.replica_url, replica_url=None)
            self._replica_engine = strategy.create_engine(replica)
            self._replica_sessions = _read_sessions(self._replica_engine, replica)
        # An in-memory database has one connection: units of work take turns on it.
        self._memory_lock = asyncio.Lock() if strategy.is_memory(engine.url) else None

    def __repr__(self) -> str:
        return f"Database({self.config!r})"

    @classmethod
    def from_url(
        cls, url: str, *, price_book: PriceBook | None = None, **config_fields: Any
    ) -> Database:
        """Build a database from a URL and any other :class:`DatabaseConfig` fields."""
        return cls(DatabaseConfig(url=url, **config_fields), price_book=price_book)

    @classmethod
    def from_env(cls) -> Database:
        """Build a database from the environment (see :meth:`DatabaseConfig.from_env`)."""
        return cls(DatabaseConfig.from_env())

    @classmethod
    def from_engine(
        cls, engine: AsyncEngine, *, price_book: PriceBook | None = None, **config_fields: Any
    ) -> Database:
        """Build a database on an ``AsyncEngine`` the application owns.

        The engine must use the package's async driver (``sqlite+aiosqlite``
        or ``postgresql+asyncpg``). On SQLite the package installs what it
        needs on that engine: ``foreign_keys=ON``, a ``busy_timeout``, WAL on
        a file, and ``BEGIN IMMEDIATE`` for every transaction that is not
        read-only, for all the engine's users (connections already pooled
        get them at their next checkout). On PostgreSQL it installs nothing.
        The pool is the application's: ``max_connections`` is not used, and
        :meth:`dispose` leaves the engine alone. Raises ValidationError for
        another driver or a synchronous engine.
        """
        if not isinstance(engine, AsyncEngine):
            raise ValidationError(
                "from_engine needs an AsyncEngine (sqlalchemy.ext.asyncio.create_async_engine)"
            )
        strategy = strategy_for(engine.dialect)
        url = engine.url.render_as_string(hide_password=False)
        config = DatabaseConfig(url=url, **config_fields)
        strategy.adopt_engine(engine, config)
        database = cls.__new__(cls)
        database._set_up(config, engine, owns_engine=False, price_book=price_book)
        return database

    @classmethod
    async def in_memory(
        cls, *, price_book: PriceBook | None = None, **config_fields: Any
    ) -> Database:
        """A private, migrated in-memory SQLite database that lives until :meth:`dispose`."""
        database = cls(DatabaseConfig(url="sqlite://", **config_fields), price_book=price_book)
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

    @property
    def replica_engine(self) -> AsyncEngine | None:
        """The engine of the read replica (``replica_url``), or None without one."""
        return self._replica_engine

    def session(self, *, read_only: bool = False, primary: bool = False) -> UnitOfWork:
        """Return a new unit of work; use it with ``async with``.

        A read-only unit reads from the read replica when the configuration
        names one (``replica_url``), unless ``primary``: a replica lags
        behind the primary (by milliseconds, more under load), so a read that
        must see the caller's own latest writes asks for ``primary=True``. A
        unit that is not read-only always works on the primary.
        """
        if not read_only:
            factory = self._sessions
        elif primary:
            factory = self._read_sessions
        else:
            factory = self._replica_sessions
        return unit_of_work_class()(
            factory,
            self.config,
            read_only=read_only,
            lock=self._memory_lock,
            price_book=self.price_book,
        )

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
            self.session,
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
        """Close every pooled connection of an engine this database created.

        An in-memory database is gone afterwards. An engine given to
        :meth:`from_engine` stays as it is: its owner disposes of it.
        """
        if self._owns_engine:
            await self._engine.dispose()
            self.config.strategy.release(self._engine)
        if self._replica_engine is not None:
            await self._replica_engine.dispose()
            self.config.strategy.release(self._replica_engine)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()
