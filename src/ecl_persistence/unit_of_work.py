"""The unit of work: one session, one transaction, committed or rolled back as a whole."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from sqlalchemy import Executable, Result
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from ecl_persistence._translate import raise_translated, translating
from ecl_persistence.errors import (
    DbError,
    SchemaNotReadyError,
    StoredValueError,
    TransactionFailedError,
)
from ecl_persistence.repositories import (
    ArtifactRepository,
    StepExecutionRepository,
    WorkflowRepository,
)

if TYPE_CHECKING:
    from ecl_persistence.config import DatabaseConfig
    from ecl_persistence.dialects import DialectStrategy
    from ecl_persistence.domain import PriceBook

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

    A commit that has begun is never interrupted: a cancellation (or a
    timeout) that arrives while it runs waits for it to finish and only then
    propagates, and :attr:`committed` tells whether it completed. So a
    caller that sees ``CancelledError`` can know whether the work was stored.

    Obtain one from :meth:`Database.session`; its repositories work only inside the block.
    """

    __slots__ = (
        "_active",
        "_committed",
        "_factory",
        "_failed",
        "_lock",
        "_max_payload_bytes",
        "_payload_inline_bytes",
        "_price_book",
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
        price_book: PriceBook | None = None,
    ) -> None:
        self._factory = factory
        self._price_book = price_book
        self._strategy = config.strategy
        self._max_payload_bytes = config.max_payload_bytes
        self._payload_inline_bytes = config.payload_inline_bytes
        self._lock = lock
        self._active = False
        # Made at the first statement: a unit that runs none costs no session.
        self._session: AsyncSession | None = None
        self._failed = False
        self._committed = False
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
        self._committed = False
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
                await _end_rolled_back(session, after_failed_statement=exc_type is None)
            elif self.read_only:
                await _end_read_only(session)
            else:
                # One trip into SQLAlchemy for the commit and the close.
                await self._commit_to_the_end(session, _commit_and_close, discard=True)
        finally:
            if self._lock is not None:
                self._lock.release()

    async def _commit_to_the_end(
        self, session: AsyncSession, commit: Callable[[Session], None], *, discard: bool
    ) -> None:
        """Run ``commit`` on ``session`` to its end, even when the task is cancelled meanwhile.

        The commit runs in a task of its own: a cancellation of the caller's
        task cannot stop it half way (the driver could still complete it, and
        the caller would see only the cancellation). Once it finished,
        :attr:`committed` says how, and a cancellation that arrived meanwhile
        propagates. A commit that failed leaves the session discarded (the
        connection rolled back or dropped) when ``discard`` is true.
        """
        self._committed = False
        running = asyncio.ensure_future(session.run_sync(commit))
        interrupted: asyncio.CancelledError | None = None
        while not running.done():
            try:
                await asyncio.shield(running)
            except asyncio.CancelledError as cancellation:
                if running.cancelled():
                    raise  # the commit's own task was cancelled (the loop is closing)
                interrupted = cancellation
            except BaseException:  # noqa: S110 - the commit failed: read below
                pass
        try:
            with translating("commit"):
                running.result()
        except BaseException:
            if discard:
                await asyncio.shield(_discard(session))
            if interrupted is not None:
                raise interrupted from None
            raise
        self._committed = True
        if interrupted is not None:
            raise interrupted

    @property
    def max_payload_bytes(self) -> int:
        """The size limit of one JSON payload, from the database's configuration."""
        return self._max_payload_bytes

    @property
    def payload_inline_bytes(self) -> int | None:
        """Inputs and outputs longer than this go to the payload store (None: never)."""
        return self._payload_inline_bytes

    @property
    def price_book(self) -> PriceBook | None:
        """The database's prices, which fill in the cost of an attempt recorded without one."""
        return self._price_book

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

    @property
    def committed(self) -> bool:
        """Whether the last commit this unit began completed: its work up to it is stored.

        The commit at the clean exit of the ``async with`` block, or one made
        by :meth:`commit`. A commit is never cut short: when the task is
        cancelled (or times out) during it, the commit finishes first and the
        ``CancelledError`` propagates after, so in a handler for it this says
        whether the work was stored. False until a commit completes, and
        after one that failed; a unit that ends by rolling back (an exception
        in the block, a read-only unit) keeps the value of its last
        :meth:`commit`.
        """
        return self._committed

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
        except DbError as translated:
            # Both backends then behave alike: PostgreSQL aborts the whole
            # transaction on an error, so SQLite's is rolled back as well and
            # nothing done earlier in this unit of work can be committed.
            self._failed = True
            await asyncio.shield(_rollback(session))
            if not isinstance(translated, SchemaNotReadyError):
                raise
            missing_schema = translated
        # A table or column is missing: only now is the revision read, once,
        # to say which one the database is at (never on a healthy unit).
        from ecl_persistence.migrations import explain_missing_schema

        explained = await explain_missing_schema(cast("AsyncEngine", session.bind), missing_schema)
        raise explained from missing_schema.__cause__

    async def commit(self) -> None:
        """Commit the work so far; the next statement begins a new transaction.

        Like the commit at the end of the block, it runs to its end even if
        the task is cancelled meanwhile (see :attr:`committed`).
        """
        session = self._require_session()
        await self._commit_to_the_end(session, Session.commit, discard=False)

    async def rollback(self) -> None:
        """Discard the work so far; the next statement begins a new transaction."""
        session = self._require_session(allow_failed=True)
        with translating("rollback"):
            await session.rollback()
        self._failed = False


async def _end_rolled_back(session: AsyncSession, *, after_failed_statement: bool) -> None:
    """End a unit whose block raised, or whose statement failed: nothing is committed."""
    # Shielded so that a second cancellation cannot leave the connection
    # checked out with its transaction open.
    await asyncio.shield(_discard(session))
    if after_failed_statement:
        raise TransactionFailedError(
            "the unit of work was rolled back after a failed statement; nothing was committed"
        )


async def _end_read_only(session: AsyncSession) -> None:
    """End a read-only unit: it read in autocommit, so there is nothing to commit."""
    if session.new or session.dirty or session.deleted:
        await asyncio.shield(_discard(session))
        raise TransactionFailedError(
            "a read-only unit of work ended with changes in its session; nothing was written"
        )
    try:
        with translating("close"):
            await session.run_sync(_close)
    except BaseException:
        # A cancellation while it waited: the connection goes back, or is dropped.
        await asyncio.shield(_discard(session))
        raise


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
