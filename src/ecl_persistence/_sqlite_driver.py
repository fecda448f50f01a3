"""aiosqlite, answering each statement SQLAlchemy sends in one trip to its thread.

aiosqlite runs sqlite3 on a worker thread and every call (make a cursor,
execute, fetch, close, commit, roll back) is a trip there and back: a queue
put, a thread switch and an event-loop wake-up, which cost more than the
statement itself for the small reads of a workflow engine. SQLAlchemy makes
four such calls per statement, plus a ``BEGIN`` statement of its own and a
commit and a roll back per transaction: nine trips for a one-row read.

The connection here does the same work in fewer trips: a statement is
executed, fetched and its cursor closed in one trip; the ``BEGIN`` chosen
for a transaction travels with its first statement; and a commit or roll
back when no transaction is open (a read in autocommit, the pool's reset)
costs nothing. A read then takes one trip and a write transaction two.

Streaming (``stream_results``, ``yield_per``, ``AsyncConnection.stream`` and
``AsyncSession.stream``) works, as an API only: there is no server-side
cursor on SQLite here. Every row of the statement is fetched in its one trip,
and the stream hands them out from memory, partition by partition; memory
grows with the size of the result as for any other read.

A connection to a file also keeps to that file (see :class:`FileGuard`): a
commit is acknowledged only while the file at the database's path is still
the one the connection writes to.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from ecl_persistence.errors import ConnectionFailedError

__all__ = ["FileGuard", "OneTripConnection", "connect"]

_Row = tuple[Any, ...]
_T = TypeVar("_T")


class FileGuard:
    """The identity of the file behind one engine's connections: its device and inode.

    SQLite's connections keep the file they opened: once the file at the
    path is deleted or replaced, they go on reading and writing the old
    one, and every commit "succeeds" into a file no path leads to. The
    identity is taken when the engine's first connection opens the file;
    :meth:`check` raises :class:`ConnectionFailedError` (not retryable) as
    soon as the file at the path is another one or none, for good: the
    engine's connections all hold the old file.
    """

    __slots__ = ("_identity", "_path")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._identity: tuple[int, int] | None = None

    def _current(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self._path)
        except FileNotFoundError:
            return None
        return status.st_dev, status.st_ino

    def before_open(self) -> None:
        """Before a connection opens the path: refuse once the file is gone or another.

        Checked before opening, so that a deleted file is not created anew
        (empty) by the refused connection.
        """
        if self._identity is not None:
            self.check("open a connection")

    def opened(self) -> None:
        """After a connection opened the path: the first sets the identity, the others match it."""
        if self._identity is None:
            self._identity = self._current()
        self.check("open a connection")

    def check(self, action: str) -> None:
        """Raise ConnectionFailedError unless the file at the path is still the one first opened."""
        current = self._current()
        if current == self._identity and current is not None:
            return
        how = "deleted" if current is None else "replaced by another file"
        raise ConnectionFailedError(
            f"{action}: the SQLite database file {self._path} was {how} while the "
            "database was open; nothing written since is in the file at that path. "
            "Dispose of this Database and open the file again",
            retryable=False,
        )


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors execute and fetch in a single trip."""

    _pending_begin: str | None = None
    autocommit = False
    """Whether statements run on their own, with no transaction begun for them (reads)."""
    file_guard: FileGuard | None = None
    """The guard of the file this connection writes to; checked after every commit."""

    def cursor(self) -> _Cursor:  # type: ignore[override]
        """A cursor that makes no trip until it executes."""
        return _Cursor(self)

    def defer_begin(self, statement: str) -> None:
        """Run ``statement`` (a ``BEGIN``) on this thread just before the next statement."""
        self._pending_begin = statement

    def _take_begin(self) -> str | None:
        statement, self._pending_begin = self._pending_begin, None
        return statement

    @property
    def _in_transaction(self) -> bool:
        # sqlite3 reads this from the library; no statement of this connection
        # runs meanwhile, since SQLAlchemy awaits each call before the next.
        # The exception, a statement whose task was cancelled, may still be on
        # the thread: SQLAlchemy then closes the connection instead, and the
        # close, queued behind the statement, rolls its transaction back.
        connection = self._connection
        return connection is not None and connection.in_transaction

    async def commit(self) -> None:
        """Commit the open transaction; without one (autocommit reads), do nothing.

        With a :attr:`file_guard`, the commit is not acknowledged (it raises
        ConnectionFailedError) when the file at the path is no longer the
        one it went to.
        """
        if self._take_begin() is None and self._in_transaction:
            await super().commit()
            if self.file_guard is not None:
                self.file_guard.check("commit")

    async def rollback(self) -> None:
        """Roll back the open transaction; without one, do nothing."""
        if self._take_begin() is None and self._in_transaction:
            await super().rollback()

    async def trip(self, function: Callable[[sqlite3.Connection], _T]) -> _T:
        """Call ``function`` with the sqlite3 connection on the driver's thread.

        This goes through ``Connection._execute``, the one door every aiosqlite
        call takes to its thread (unchanged from aiosqlite 0.16 to 0.22); the
        trip-count tests in ``tests/integration/test_connections.py`` would
        notice if it moved. Not named ``run``: up to aiosqlite 0.21 the
        connection is itself the ``Thread``, and ``run`` its worker loop.
        """
        begin = self._take_begin()

        def call() -> _T:
            connection = self._conn
            if begin is not None:
                connection.execute(begin)
            return function(connection)

        # A closure without call arguments: aiosqlite logs every call it runs,
        # arguments included, at DEBUG, and a statement's values are payloads
        # (tests/reliability/test_secrets.py).
        result: _T = await self._execute(call)  # type: ignore[no-untyped-call]
        return result


class _Cursor:
    """The cursor SQLAlchemy's adapter drives: the results are fetched during ``execute``.

    SQLAlchemy's default adapter buffers the rows itself and only calls
    :meth:`fetchall`. Its server-side adapter (``stream_results``,
    ``yield_per``, ``AsyncConnection.stream``, ``AsyncSession.stream``)
    calls :meth:`fetchone`, :meth:`fetchmany` and iterates: those serve the
    rows buffered during ``execute``, with no further trip.
    """

    arraysize = 1
    """How many rows :meth:`fetchmany` returns when it is given no size."""

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self.description: Sequence[tuple[Any, ...]] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[_Row] = []
        self._next = 0  # the index in ``_rows`` of the next row to hand out

    def __await__(self) -> Generator[Any, None, _Cursor]:
        # SQLAlchemy 2.0 awaits ``connection.cursor()``; 2.1 enters it instead.
        return self._self().__await__()

    async def _self(self) -> _Cursor:
        return self

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> _Cursor:
        """Execute ``sql`` and fetch every row it returns, in one trip."""
        await self._connection.trip(lambda c: self._keep(c.execute(sql, parameters or ())))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> _Cursor:
        """Execute ``sql`` once per parameter set, in one trip."""
        await self._connection.trip(lambda c: self._keep(c.executemany(sql, parameters)))
        return self

    def _keep(self, cursor: sqlite3.Cursor) -> None:
        # Runs on the driver's thread; the event loop reads these after the trip.
        # The sqlite3 cursor is closed within the same trip, also when the task
        # that sent the statement was cancelled meanwhile: a live statement
        # would keep its connection's transaction, and so SQLite's write lock,
        # past the close that SQLAlchemy gives an interrupted connection
        # (tests/reliability/test_interruptions.py).
        try:
            self.description = cursor.description
            self._rows = cursor.fetchall() if cursor.description else []
            self._next = 0
            self.rowcount = cursor.rowcount
            self.lastrowid = cursor.lastrowid
        finally:
            cursor.close()

    async def fetchone(self) -> _Row | None:
        """The next row, or ``None`` when none is left."""
        if self._next >= len(self._rows):
            return None
        row = self._rows[self._next]
        self._next += 1
        return row

    async def fetchmany(self, size: int | None = None) -> list[_Row]:
        """The next ``size`` rows (:attr:`arraysize` by default); fewer at the end."""
        start = self._next
        self._next = min(start + (self.arraysize if size is None else size), len(self._rows))
        return self._rows[start : self._next]

    async def fetchall(self) -> list[_Row]:
        """Every remaining row."""
        rows, self._rows = self._rows, []
        start, self._next = self._next, 0
        return rows[start:] if start else rows

    def __aiter__(self) -> AsyncIterator[_Row]:
        return self._remaining()

    async def _remaining(self) -> AsyncIterator[_Row]:
        while (row := await self.fetchone()) is not None:
            yield row

    async def close(self) -> None:
        """Drop the rows not fetched; the sqlite3 cursor is already closed."""
        self._rows = []
        self._next = 0


def connect(database: str, **kwargs: Any) -> OneTripConnection:
    """Open ``database`` like ``aiosqlite.connect`` does, with a :class:`OneTripConnection`."""
    path = Path(database)
    if not kwargs.get("uri") and database and not path.expanduser().parent.is_dir():
        # Refused here rather than by the driver: aiosqlite leaves its worker
        # thread behind after a failed open, to fail later on a closed loop.
        raise ConnectionFailedError(
            "cannot open the SQLite database file: its directory does not exist",
            retryable=False,
        )
    connection = OneTripConnection(lambda: sqlite3.connect(database, **kwargs), 64)
    # As SQLAlchemy does for aiosqlite: a forgotten connection never keeps the process alive.
    # The worker thread is ``_thread`` since aiosqlite 0.22; before, the connection was the thread.
    worker = cast("threading.Thread", getattr(connection, "_thread", connection))
    worker.daemon = True
    return connection
