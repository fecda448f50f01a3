"""What a dialect strategy decides: the one contract both backends fulfil.

The rest of the package never tests a dialect's name: it asks the strategy
of its database. A strategy is stateless and shared; everything it needs
comes as arguments (the configuration, the engine, the statement).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, TypeVar

from sqlalchemy import Dialect, Executable, Insert, Select
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import Column
from sqlalchemy.types import TypeEngine

from ecl_persistence.errors import ValidationError

if TYPE_CHECKING:
    from ecl_persistence.config import DatabaseConfig
    from ecl_persistence.errors import DbError

__all__ = ["ENGINE_LOGGING_NAME", "AnySelect", "DialectStrategy", "Listening", "LockMode"]

ENGINE_LOGGING_NAME = "ecl_persistence"
"""The ``logging_name`` of the engines the strategies build: their logger is
``sqlalchemy.engine.Engine.ecl_persistence``, whose row records are redacted."""


class _WithoutRows(logging.Filter):
    """Hide the values of the rows SQLAlchemy logs at DEBUG: they are payloads.

    ``hide_parameters`` keeps bound values out of the engine's log; the rows
    a statement returns are logged (``Row (...)``) whenever the engine's
    logger is at DEBUG, with every stored value in them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Row %r":
            record.args = ("(values hidden)",)
        return True


logging.getLogger(f"sqlalchemy.engine.Engine.{ENGINE_LOGGING_NAME}").addFilter(_WithoutRows())

AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"
"""A ``SELECT`` of any columns."""
_S = TypeVar("_S", bound=AnySelect)


class LockMode:
    """How a ``SELECT`` locks the rows it reads, on a backend that has row locks."""

    UPDATE = "update"
    """``FOR NO KEY UPDATE``: the lock an UPDATE of non-key columns takes anyway; rows
    that reference the locked ones (foreign keys) can still be inserted."""
    UPDATE_SKIP_LOCKED = "update-skip-locked"
    """The same, skipping rows another transaction holds locked instead of waiting."""
    DELETE_SKIP_LOCKED = "delete-skip-locked"
    """``FOR UPDATE SKIP LOCKED``: for rows about to be deleted."""
    KEY_SHARE = "key-share"
    """``FOR KEY SHARE``: the rows must stay (not be deleted) until the transaction ends."""


class Listening(abc.ABC):
    """One open connection that receives the database's "claimable" notifications."""

    @abc.abstractmethod
    async def wait_lost(self, check_seconds: float) -> None:
        """Return once the connection is lost; check that it answers every ``check_seconds``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection (nothing happens if it is closed already)."""


class DialectStrategy(abc.ABC):
    """Everything that differs between SQLite and PostgreSQL, behind one interface."""

    name: ClassVar[str]
    """The SQLAlchemy dialect name: ``"sqlite"`` or ``"postgresql"``."""
    row_locks: ClassVar[bool] = False
    """Whether transactions lock single rows, so that one may hold rows another wants.

    Without (SQLite), a writer holds the whole database and :meth:`lock`
    leaves a statement as it is.
    """
    driver: ClassVar[str]
    """The async driver the package uses with this dialect."""

    def __repr__(self) -> str:
        return f"<{self.name} dialect strategy>"

    # --- engines and connections -----------------------------------------------------

    @abc.abstractmethod
    def create_engine(self, config: DatabaseConfig) -> AsyncEngine:
        """Create the engine for ``config``, with its pool and every connection set up."""

    @abc.abstractmethod
    def adopt_engine(self, engine: AsyncEngine, config: DatabaseConfig) -> None:
        """Set up an engine the application created, or raise ValidationError if it cannot be."""

    def check_url(self, url: URL) -> None:  # noqa: B027
        """Raise ValidationError for what ``url`` asks that this dialect cannot do."""

    @abc.abstractmethod
    def read_only_options(self, engine: AsyncEngine, config: DatabaseConfig) -> dict[str, Any]:
        """Execution options of ``engine`` (built for ``config``) for the read-only units."""

    def release(self, engine: AsyncEngine) -> None:  # noqa: B027
        """After an engine built here was disposed: free what the strategy kept for it."""

    def check_scale_out(self, config: DatabaseConfig) -> None:
        """Raise ValidationError for the scale-out settings this dialect does not have.

        None by default: ``pgbouncer``, ``listen_url`` and ``replica_url`` are
        PostgreSQL's.
        """
        for name in ("pgbouncer", "listen_url", "replica_url"):
            if getattr(config, name) not in (None, False):
                raise ValidationError(f"{name} needs PostgreSQL; the {self.name} database has none")

    def pgbouncer_in_url(self, url: URL) -> bool:
        """Whether ``url`` itself asks for the PgBouncer mode (``?pgbouncer=true``)."""
        return False

    def claimable_notice(self) -> Executable | None:
        """The statement that tells listening workers a workflow may be claimable, if any.

        It takes the definition id as ``:definition_id`` and is sent in the
        writing transaction (so only a commit delivers it). None by default:
        the workers of this dialect poll.
        """
        return None

    async def listen(
        self, config: DatabaseConfig, on_notice: Callable[[str], None]
    ) -> Listening | None:
        """Open a connection that calls ``on_notice(definition_id)`` for each notification.

        None where the dialect has no notifications (or the configuration
        cannot receive them): the worker polls. Raises ConnectionFailedError
        when the server cannot be reached.
        """
        return None

    def is_memory(self, url: URL) -> bool:
        """Whether ``url`` names a private in-memory database (one connection, taken in turns)."""
        return False

    def local_file(self, url: URL) -> Path | None:
        """The file that holds the database, for a dialect that keeps one."""
        return None

    # --- statements ------------------------------------------------------------------

    @abc.abstractmethod
    def insert_ignoring_conflicts(
        self, target: Any, index_elements: Sequence[Column[Any]]
    ) -> Insert:
        """An INSERT into ``target`` (an entity or a table) that skips rows already stored.

        A row conflicts when a stored one has the same ``index_elements``.
        """

    @abc.abstractmethod
    def insert_or_lock(self, target: Any, index_elements: Sequence[Column[Any]]) -> Insert:
        """An INSERT that leaves a row already stored as it is, but holds it to the end.

        Where rows are locked (PostgreSQL) the stored row is locked as by an
        update, so a concurrent delete waits; SQLite's one writer needs none.
        """

    @abc.abstractmethod
    def lock(self, select: _S, mode: str) -> _S:
        """``select`` locking the rows it reads in ``mode`` (a :class:`LockMode`), where needed."""

    def use_index(self, select: _S, table: Any, index: str) -> _S:
        """``select`` reading ``table`` through ``index``, where the planner must be told.

        For a queue whose order only that index gives: a planner without
        statistics may otherwise sort every open row. Unchanged by default.
        """
        return select

    # --- column types ----------------------------------------------------------------

    @abc.abstractmethod
    def json_type(self, dialect: Dialect) -> TypeEngine[Any]:
        """The column type JSON documents are stored in."""

    @abc.abstractmethod
    def money_type(self, dialect: Dialect) -> TypeEngine[Any]:
        """The column type an amount of money (six decimal places) is stored in, exactly."""

    @abc.abstractmethod
    def money_processors(self) -> tuple[Any, Any]:
        """(bind, result) processors of an amount: a ``Decimal`` in, a ``Decimal`` out."""

    @abc.abstractmethod
    def payload_lookup(self, ref_sql: str) -> str:
        """The SQL reading the payload ``ref_sql`` names as ``hash:codec:hex``."""

    def money_sum(self, column_sql: str) -> str:
        """The SQL of the exact sum of the amount column ``column_sql`` (NULL for none)."""
        return f"sum({column_sql})"

    @abc.abstractmethod
    def utc_day(self, column: Any) -> Any:
        """The UTC day of the timestamp ``column``, as ``YYYY-MM-DD`` text (SQL)."""

    @abc.abstractmethod
    def json_as_text(self, column_sql: str) -> str:
        """The SQL that reads the JSON column ``column_sql`` as text."""

    @abc.abstractmethod
    def datetime_processors(self) -> tuple[Any, Any]:
        """The bind and result processors of an aware UTC timestamp column."""

    # --- errors ----------------------------------------------------------------------

    @abc.abstractmethod
    def classify(self, driver_error: BaseException, action: str) -> DbError | None:
        """The ecl-persistence error for a driver error of this dialect, or None if not one."""

    def constraint_name(self, driver_error: BaseException) -> str | None:
        """The name of the constraint a driver error reports, when it says."""
        name = getattr(driver_error, "constraint_name", None)
        return name if isinstance(name, str) else None

    # --- migrations ------------------------------------------------------------------

    render_as_batch: ClassVar[bool] = False
    """Whether Alembic must rebuild tables to alter them (``render_as_batch``)."""

    @abc.abstractmethod
    def migration_guard(self, connection: Connection) -> AbstractContextManager[None]:
        """Around a migration on ``connection``: what keeps it safe on this backend."""

    def begin_migration(self, connection: Connection) -> None:  # noqa: B027
        """First thing in the migration's transaction: wait for other migrations to end.

        Nothing to do unless the dialect's strategy says otherwise (SQLite's
        ``BEGIN IMMEDIATE`` already makes migrations take turns).
        """

    def check_after_migration(self, connection: Connection) -> None:  # noqa: B027
        """Raise MigrationFailedError if the migration left the database inconsistent.

        Nothing to check unless the dialect's strategy says otherwise.
        """
