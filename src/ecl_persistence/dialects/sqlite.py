"""SQLite: the embedded default, one writer at a time.

Every connection gets ``foreign_keys=ON`` and a ``busy_timeout``, files get
WAL and ``synchronous=NORMAL``, and every writing transaction starts with
``BEGIN IMMEDIATE``, so two read-then-write transactions queue on the busy
timeout instead of failing with "database is locked". SQLite has no row
locks and needs none: the writer holds the whole database. A private
in-memory database is a named ``memdb`` database that lives while the engine
holds a keeper connection to it.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import BigInteger, Dialect, Insert, Select, Text, event, func
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, StaticPool
from sqlalchemy.schema import Column
from sqlalchemy.types import TypeEngine

from ecl_persistence._sqlite_driver import FileGuard, OneTripConnection
from ecl_persistence._sqlite_driver import connect as sqlite_connect
from ecl_persistence.dialects import _sqlite_errors as sqlite_errors
from ecl_persistence.dialects._sqlite_dialect import DRIVER_NAME, OneTripDialect
from ecl_persistence.dialects._sqlite_money import money_from_micros, money_to_micros
from ecl_persistence.dialects.base import ENGINE_LOGGING_NAME, DialectStrategy
from ecl_persistence.errors import (
    DbError,
    MigrationFailedError,
    ValidationError,
)

if TYPE_CHECKING:
    from ecl_persistence.config import DatabaseConfig

__all__ = ["SqliteStrategy"]

_S = TypeVar("_S", bound="Select[*tuple[Any, ...]]")

READ_ONLY_OPTION = "ecl_read_only"
"""On an application's engine, the execution option of a read-only unit: no BEGIN is sent."""

_SETUP_DONE = "ecl_sqlite_setup"


def _private_memory_url(url: URL) -> URL:
    """A uniquely named in-memory database that more than one connection can open.

    With a plain ``sqlite://`` the database lives in its one connection, and
    SQLAlchemy closes that connection when a task is cancelled mid-statement:
    the whole database would be gone. A named ``memdb`` database lives while
    any connection to it is open, so a keeper connection holds it instead.
    """
    name = f"/ecl-{uuid.uuid4().hex}"
    return url.set(database=f"file:{name}", query={"vfs": "memdb", "uri": "true"})


# The keeper connection of each in-memory engine (see _private_memory_url).
_KEEPERS: weakref.WeakKeyDictionary[Any, sqlite3.Connection] = weakref.WeakKeyDictionary()


def _keep_memory_database(engine: AsyncEngine, url: URL) -> None:
    """Hold a connection to the named in-memory database until the engine is released."""
    uri = f"{url.database}?vfs=memdb"
    keeper = sqlite3.connect(uri, uri=True, check_same_thread=False)
    _KEEPERS[engine.sync_engine] = keeper
    # Closed by release(); and with the engine, if nobody released it.
    weakref.finalize(engine.sync_engine, keeper.close)


class _Connector:
    """Opens the engine's connections as :class:`OneTripConnection` (see ``_sqlite_driver``)."""

    def __init__(self, config: DatabaseConfig, guard: FileGuard | None) -> None:
        self._timeout = config.timeout_secs
        self._guard = guard
        self._arguments: tuple[Any, Any] = ((), {})

    def bind(self, engine: AsyncEngine) -> None:
        """Take the file name and options from the engine's URL, as its dialect reads them."""
        self._arguments = engine.dialect.create_connect_args(engine.url)

    async def __call__(self) -> OneTripConnection:
        args, kwargs = self._arguments
        if self._guard is not None:
            self._guard.before_open()
        # isolation_level=None: the "begin" hook below decides how every
        # transaction starts, not sqlite3.
        connection = sqlite_connect(*args, **kwargs, timeout=self._timeout, isolation_level=None)
        await connection
        if self._guard is not None:
            try:
                self._guard.opened()
            except BaseException:
                await connection.close()
                raise
            connection.file_guard = self._guard
        return connection


def _file_guard(url: URL) -> FileGuard | None:
    """The guard of a database file named by its path; none for a URI file name."""
    database = url.database or ""
    if url.query.get("uri") or database.startswith("file:"):
        return None
    return FileGuard(Path(os.path.abspath(Path(database).expanduser())))


def _pragmas(dbapi_connection: Any, busy_ms: int, is_file: bool) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        if is_file:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _begin_immediately(connection: Connection) -> None:
    """The ``begin`` hook of an application's engine: a writer takes the write lock first.

    Engines built here do the same in their dialect (see ``_sqlite_dialect``),
    without an event.
    """
    # A read-only unit reads in autocommit, as on PostgreSQL: each statement
    # is atomic on its own, and no BEGIN or COMMIT is sent.
    if connection.get_execution_options().get(READ_ONLY_OPTION):
        return
    driver: Any = connection.connection.driver_connection
    if isinstance(driver, OneTripConnection):
        driver.defer_begin("BEGIN IMMEDIATE")
    else:
        # On aiosqlite's own connection, set to leave transactions to us
        # (SQLAlchemy's documented recipe).
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _as_sqlite_text(value: datetime | None) -> str | None:
    # What SQLAlchemy's SQLite DateTime writes: naive UTC, always with
    # microseconds, so that text order is time order.
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: ecl-persistence stores aware UTC timestamps only")
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _from_sqlite_text(value: Any) -> Any:
    # Text that is not a timestamp (SQLite stores whatever a hand-made UPDATE
    # wrote) comes back as it is: the mappers then refuse it, naming the row.
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (ValueError, TypeError):
        return value
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


class SqliteStrategy(DialectStrategy):
    """SQLite through aiosqlite, answered in one trip to its thread per statement."""

    name = "sqlite"
    driver = "aiosqlite"
    render_as_batch = True

    def create_engine(self, config: DatabaseConfig) -> AsyncEngine:
        """A pool of ``max_connections`` on a file; one shared connection in memory."""
        url = config.async_url.set(drivername=f"sqlite+{DRIVER_NAME}")
        memory = self.is_memory(url)
        if memory:
            url = _private_memory_url(url)
            pool: dict[str, Any] = {"poolclass": StaticPool}
        else:
            pool = {
                "poolclass": AsyncAdaptedQueuePool,
                "pool_size": config.max_connections,
                "max_overflow": 0,
                "pool_timeout": config.timeout_secs,
            }
        # A file keeps its identity while the engine lives: see FileGuard.
        guard = None if memory else _file_guard(url)
        connector = _Connector(config, guard)
        engine = create_async_engine(
            url,
            async_creator=connector,
            echo=config.echo,
            hide_parameters=True,
            logging_name=ENGINE_LOGGING_NAME,
            # A unit of work always ends its transaction before the connection
            # goes back (its session rolls back or commits, a failure drops the
            # connection): a second rollback by the pool would only cost time.
            pool_reset_on_return=None,
            **pool,
        )
        connector.bind(engine)
        busy_ms, is_file = int(config.timeout_secs * 1000), not memory

        # A pool event, not a connection event: the engine keeps no connection
        # events, so SQLAlchemy skips their dispatch on every statement.
        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            _pragmas(dbapi_connection, busy_ms, is_file)

        if guard is not None:
            # A connection of a file deleted or replaced meanwhile is refused
            # (and dropped by the pool) before anyone reads from it.
            @event.listens_for(engine.sync_engine, "checkout")
            def _on_checkout(connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
                guard.check("check out a connection")

        if memory:
            _keep_memory_database(engine, url)
        return engine

    def release(self, engine: AsyncEngine) -> None:
        """Close the keeper of a disposed in-memory engine: its database is gone."""
        keeper = _KEEPERS.pop(engine.sync_engine, None)
        if keeper is not None:
            keeper.close()

    def adopt_engine(self, engine: AsyncEngine, config: DatabaseConfig) -> None:
        """Install the pragmas and ``BEGIN IMMEDIATE`` on the application's aiosqlite engine.

        Connections already in its pool get the pragmas when next checked
        out. Its other users then get them too: foreign keys enforced, WAL,
        and writes that take the lock at BEGIN.
        """
        if isinstance(engine.dialect, OneTripDialect):
            return  # built by this package: set up already
        if engine.dialect.driver != self.driver:
            raise ValidationError(
                f"from_engine needs the sqlite+aiosqlite driver, not sqlite+{engine.dialect.driver}"
            )
        busy_ms, is_file = int(config.timeout_secs * 1000), not self.is_memory(engine.url)

        @event.listens_for(engine.sync_engine, "checkout")
        def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
            if record.info.get(_SETUP_DONE):
                return
            if not isinstance(dbapi_connection.driver_connection, OneTripConnection):
                # Leave BEGIN to the hook below, as SQLAlchemy documents for aiosqlite.
                dbapi_connection.isolation_level = None
            _pragmas(dbapi_connection, busy_ms, is_file)
            record.info[_SETUP_DONE] = True

        event.listen(engine.sync_engine, "begin", _begin_immediately)

    def read_only_options(self, engine: AsyncEngine, config: DatabaseConfig) -> dict[str, Any]:
        """Read-only units send no BEGIN: each statement reads in autocommit."""
        if isinstance(engine.dialect, OneTripDialect):
            return {"isolation_level": "AUTOCOMMIT"}
        return {READ_ONLY_OPTION: True}

    def is_memory(self, url: URL) -> bool:
        """``sqlite://`` and ``sqlite:///:memory:`` (and SQLite's own memory URIs)."""
        database = url.database or ""
        return (
            database in ("", ":memory:")
            or "mode=memory" in database
            or (url.query.get("vfs") == "memdb")
        )

    def local_file(self, url: URL) -> Path | None:
        """The database file of a file URL."""
        if self.is_memory(url):
            return None
        return Path(str(url.database)).expanduser()

    def insert_ignoring_conflicts(
        self, target: Any, index_elements: Sequence[Column[Any]]
    ) -> Insert:
        """``INSERT ... ON CONFLICT (...) DO NOTHING``."""
        return sqlite_dialect.insert(target).on_conflict_do_nothing(index_elements=index_elements)

    def insert_or_lock(self, target: Any, index_elements: Sequence[Column[Any]]) -> Insert:
        """``ON CONFLICT DO NOTHING``: the writer holds the whole database already."""
        return sqlite_dialect.insert(target).on_conflict_do_nothing(index_elements=index_elements)

    def lock(self, select: _S, mode: str) -> _S:
        """Unchanged: a writing transaction already holds the database's only write lock."""
        return select

    def use_index(self, select: _S, table: Any, index: str) -> _S:
        """``INDEXED BY index``: without statistics, SQLite may prefer another index and sort.

        Rendered by the package's own dialect; an application's engine on the
        stock aiosqlite dialect leaves the planner to choose.
        """
        return select.with_hint(table, f"INDEXED BY {index}", dialect_name=self.name)

    def json_type(self, dialect: Dialect) -> TypeEngine[Any]:
        """TEXT, not SQLite's JSON type name, whose numeric affinity would store ``5`` as 5."""
        return dialect.type_descriptor(Text())

    def money_type(self, dialect: Dialect) -> TypeEngine[Any]:
        """A 64-bit count of millionths: SQLite's NUMERIC would keep a float, and sum floats."""
        return dialect.type_descriptor(BigInteger())

    def money_processors(self) -> tuple[Any, Any]:
        """A Decimal bound as its count of millionths; a count (or a sum of them) read back."""
        return money_to_micros, money_from_micros

    def payload_lookup(self, ref_sql: str) -> str:
        """A lookup in ``payloads`` by primary key; ``hex()`` of the stored bytes."""
        found = "payloads.hash || ':' || payloads.codec || ':' || hex(payloads.data)"
        return (
            f"coalesce((SELECT {found} FROM payloads WHERE payloads.hash = {ref_sql}), {ref_sql})"  # noqa: S608 - SQL of a column
        )

    def money_sum(self, column_sql: str) -> str:
        """Whole units and millionths summed apart, as ``units:millionths`` text.

        A sum of 64-bit counts of millionths would overflow past about nine
        million million; summed apart, each part stays far from it.
        """
        return f"(sum({column_sql} / 1000000) || ':' || sum({column_sql} % 1000000))"

    def utc_day(self, column: Any) -> Any:
        """The first ten characters of the stored UTC text: ``YYYY-MM-DD``."""
        return func.substr(column, 1, 10)

    def json_as_text(self, column_sql: str) -> str:
        """The column itself: it is TEXT already."""
        return column_sql

    def datetime_processors(self) -> tuple[Any, Any]:
        """Naive UTC text with microseconds, sortable as text; read back as aware UTC."""
        return _as_sqlite_text, _from_sqlite_text

    def classify(self, driver_error: BaseException, action: str) -> DbError | None:
        """Busy, not a database, cannot open, a missing table, text that is not UTF-8."""
        return sqlite_errors.classify(driver_error, action)

    def constraint_name(self, driver_error: BaseException) -> str | None:
        """SQLite names a CHECK constraint, and only the columns of a UNIQUE one."""
        return sqlite_errors.constraint_name(driver_error)

    @contextmanager
    def migration_guard(self, connection: Connection) -> Iterator[None]:
        """Foreign keys off around the migration, checked before it commits.

        A batch migration rebuilds a table by copying it and dropping the
        original; with foreign keys on, the drop would cascade and delete
        every child row. The pragma only works outside a transaction, so it
        is sent straight to the driver.
        """
        dbapi_connection: Any = connection.connection.dbapi_connection
        _pragma(dbapi_connection, "PRAGMA foreign_keys=OFF")
        try:
            yield
        finally:
            _pragma(dbapi_connection, "PRAGMA foreign_keys=ON")

    def check_after_migration(self, connection: Connection) -> None:
        """``PRAGMA foreign_key_check`` must report nothing."""
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            tables = sorted({str(row[0]) for row in broken})
            raise MigrationFailedError(
                f"migration left {len(broken)} rows breaking foreign keys in {', '.join(tables)}"
            )


def _pragma(dbapi_connection: Any, statement: str) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
