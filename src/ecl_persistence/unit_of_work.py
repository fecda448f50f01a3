"""The unit of work: one session, one transaction, committed or rolled back as a whole."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import Executable, Result
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from ecl_persistence._translate import raise_translated, translating
from ecl_persistence.errors import DbError, StoredValueError, TransactionFailedError
from ecl_persistence.repositories import (
    ArtifactRepository,
    StepExecutionRepository,
    WorkflowRepository,
)

if TYPE_CHECKING:
    from ecl_persistence.config import DatabaseConfig
    from ecl_persistence.dialects import DialectStrategy

__all__ = ["UnitOfWork"]

_log = logging.getLogger(__name__)


class UnitOfWork:
    """One transaction against the database, used with ``async with``.

    The transaction commits when the block exits cleanly and rolls back when it
    raises or is cancelled; either way the connection goes back to the pool
    with no transaction open. ``commit()`` and ``rollback()`` end the current
    transaction early; the unit of work stays usable and the next statement
    starts a new one. A read-only unit of work refuses writes with
    :class:`TransactionFailedError` and takes no writer lock.

    Obtain one from :meth:`Database.session`; the repositories it exposes
    (``workflows``, ``step_executions``, ``artifacts``) work only inside the block.
    """

    __slots__ = (
        "_active",
        "_factory",
        "_failed",
        "_lock",
        "_max_payload_bytes",
        "_session",
        "_strategy",
        "artifacts",
        "read_only",
        "step_executions",
        "workflows",
    )

    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        config: DatabaseConfig,
        *,
        read_only: bool = False,
        lock: asyncio.Lock | None = None,
    ) -> None:
        self._factory = factory
        self._strategy = config.strategy
        self._max_payload_bytes = config.max_payload_bytes
        self._lock = lock
        self._active = False
        # Made at the first statement: a unit that runs none costs no session.
        self._session: AsyncSession | None = None
        self._failed = False
        self.read_only = read_only
        """Whether this unit of work refuses writes."""
        self.workflows = WorkflowRepository(self)
        """Workflows: create, read, change state, list, delete."""
        self.step_executions = StepExecutionRepository(self)
        """Step executions: every attempt of every step of a workflow."""
        self.artifacts = ArtifactRepository(self)
        """Artifacts: files and objects that steps produced."""

    async def __aenter__(self) -> Self:
        if self._active:
            raise TransactionFailedError("this unit of work is already in use")
        if self._lock is not None:
            await self._lock.acquire()
        self._active = True
        self._failed = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, failed = self._session, self._failed
        self._session = None
        self._active = False
        try:
            if session is None:
                return
            if exc_type is not None or failed:
                # Shielded so that a second cancellation cannot leave the
                # connection checked out with its transaction open.
                await asyncio.shield(_discard(session))
                if exc_type is None:
                    raise TransactionFailedError(
                        "the unit of work was rolled back after a failed statement; "
                        "nothing was committed"
                    )
                return
            if self.read_only and (session.new or session.dirty or session.deleted):
                await asyncio.shield(_discard(session))
                raise TransactionFailedError(
                    "a read-only unit of work ended with changes in its session; "
                    "nothing was written"
                )
            try:
                with translating("commit"):
                    # One trip into SQLAlchemy for both. A read-only unit has
                    # nothing to commit: it read in autocommit.
                    await session.run_sync(_close if self.read_only else _commit_and_close)
            except BaseException:
                # A failed commit, or a cancellation while it waited: make sure
                # the connection goes back rolled back, or is dropped.
                await asyncio.shield(_discard(session))
                raise
        finally:
            if self._lock is not None:
                self._lock.release()

    @property
    def max_payload_bytes(self) -> int:
        """The size limit of one JSON payload, from the database's configuration."""
        return self._max_payload_bytes

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._strategy.name

    @property
    def strategy(self) -> DialectStrategy:
        """The dialect strategy: the few statements that differ between backends ask it."""
        return self._strategy

    @property
    def session(self) -> AsyncSession:
        """The unit's SQLAlchemy ``AsyncSession``, for an application's own ORM work.

        What you add, change or delete through it commits or rolls back with
        the unit of work, in the same transaction as the repositories' writes
        (the session is made at first use, like the transaction). You may
        ``add`` and query your own models, ``flush`` (it does not autoflush),
        and read this package's entities (``WorkflowRecord`` and its
        relationships, which never load lazily: use ``selectinload``). You must
        not ``commit``, ``rollback`` or ``close`` it (use the unit's own
        methods), keep it past the ``async with`` block, or write this
        package's tables through it: the repositories enforce the lifecycle,
        the audit trail and the payload rules, and the session does not.
        """
        return self._require_session()

    @property
    def active(self) -> bool:
        """Whether this unit of work is inside its ``async with`` block."""
        return self._active

    def _require_session(self, *, allow_failed: bool = False) -> AsyncSession:
        if not self._active:
            raise TransactionFailedError(
                "the unit of work is not active: use it inside `async with db.session() as uow:`"
            )
        if self._failed and not allow_failed:
            raise TransactionFailedError(
                "an earlier statement of this unit of work failed and its transaction was "
                "rolled back; call rollback() before using it again"
            )
        session = self._session
        if session is None:
            session = self._session = self._factory()
        return session

    def keep_fresh(self, record_class: type[Any], row: Sequence[Any]) -> None:
        """After a write through rows: the entity the session holds for ``row``, if any, gets it.

        The repositories change some records with plain statements (the hot
        paths of ``docs/concepts.md``); an entity of the same row that the
        application loaded through :attr:`session` must not stay stale.
        ``row`` holds every column of the table, in table order.
        """
        session = self._session
        if session is None:
            return
        held = session.sync_session.identity_map.get(identity_key(record_class, (row[0],)))
        if held is not None:
            keys = record_class.__mapper__.column_attrs.keys()
            for key, value in zip(keys, row, strict=True):
                set_committed_value(held, key, value)

    def require_writable(self, action: str) -> None:
        """Raise :class:`TransactionFailedError` if ``action`` would write in a read-only unit."""
        self._require_session()
        if self.read_only:
            raise TransactionFailedError(f"{action}: this unit of work is read-only")

    async def execute(
        self,
        statement: Executable,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        action: str,
    ) -> Result[Any]:
        """Execute ``statement`` in this unit's transaction, translating any failure.

        This is the repositories' single door to the database; ``action`` names
        what is being done for error messages (entity and id, never a payload).

        The first statement of a transaction that finds its pooled connection
        dead (a restarted server, a dropped socket) runs again, once, on a new
        connection: nothing of the transaction can have happened yet. This is
        the guarantee ``pool_pre_ping`` gives, without its round trips on
        every checkout.
        """
        session = self._require_session()
        fresh = not session.in_transaction()
        try:
            try:
                return await session.execute(statement, params)
            except DBAPIError as error:
                if not (fresh and error.connection_invalidated):
                    raise
                _log.info("reconnecting: a pooled database connection was closed")
            await session.rollback()
            return await session.execute(statement, params)
        except Exception as error:
            # Translated outside this handler: the driver's error, which may
            # hold values, must not become the context of ours.
            failure = error
        try:
            raise_translated(failure, action)
        except StoredValueError:
            # The statement ran; a row it returned is damaged. The transaction
            # is intact and the unit of work stays usable.
            raise
        except DbError:
            # Both backends then behave alike: PostgreSQL aborts the whole
            # transaction on an error, so SQLite's is rolled back as well and
            # nothing done earlier in this unit of work can be committed.
            self._failed = True
            await asyncio.shield(_rollback(session))
            raise

    async def commit(self) -> None:
        """Commit the work so far; the next statement begins a new transaction."""
        session = self._require_session()
        with translating("commit"):
            await session.commit()

    async def rollback(self) -> None:
        """Discard the work so far; the next statement begins a new transaction."""
        session = self._require_session(allow_failed=True)
        with translating("rollback"):
            await session.rollback()
        self._failed = False


def _close(session: Session) -> None:
    session.close()


def _commit_and_close(session: Session) -> None:
    session.commit()
    session.close()


async def _rollback(session: AsyncSession) -> None:
    """Roll the session back after a failed statement; drop a connection that cannot."""
    try:
        await session.rollback()
    except Exception as error:
        _log.warning("discarding a broken database connection: %s", type(error).__name__)
        await session.invalidate()


async def _discard(session: AsyncSession) -> None:
    """Close the session, returning its connection to the pool rolled back."""
    try:
        await session.close()
    except Exception as error:
        # The connection is unusable (lost mid-transaction): drop it rather than
        # hand it to the next unit of work; the original exception still propagates.
        _log.warning("discarding a broken database connection: %s", type(error).__name__)
        await session.invalidate()
