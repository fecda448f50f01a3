"""Exceptions, cancellation and timeouts inside units of work: full rollback, nothing leaks.

The interruptions land in the middle of a statement, the hardest place: the
driver is busy and SQLAlchemy gives the connection up. Interruptions between
statements are covered by tests/integration/test_unit_of_work.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest
from tests.factories import checked_out, persist_artifact, persist_step, persist_workflow
from tests.reliability._support import (
    HANG_GUARD_SECS,
    SQLITE_ONLY,
    row_counts,
    settle_sessions,
    sized,
    slow_statement,
    slow_statement_starts,
    sqlite_write_lock_is_free,
)

from ecl_persistence import Database
from ecl_persistence.unit_of_work import UnitOfWork

EMPTY = {"workflows": 0, "step_executions": 0, "artifacts": 0}
POOL_SIZE = 3


class Boom(Exception):
    pass


def _idle(sessions: list[tuple[int, str | None]]) -> bool:
    return all(state == "idle" for _, state in sessions) and len(sessions) <= POOL_SIZE


async def _assert_nothing_left_behind(db: Database, url: str) -> None:
    assert checked_out(db) == 0
    assert await row_counts(db) == EMPTY
    if db.dialect == "postgresql":
        sessions = await settle_sessions(url, _idle)
        assert [state for _, state in sessions if state != "idle"] == []
        assert len(sessions) <= POOL_SIZE
    else:
        assert sqlite_write_lock_is_free(url)
    # The next unit of work writes and commits normally.
    async with db.session() as uow:
        await persist_workflow(uow)
    assert (await row_counts(db))["workflows"] == 1


async def _write_then(db: Database, then: Callable[[UnitOfWork], Awaitable[object]]) -> None:
    """Write a workflow, a step and an artifact, then run ``then`` in the same unit of work."""
    async with db.session() as uow:
        workflow = await persist_workflow(uow)
        await persist_step(uow, workflow)
        await persist_artifact(uow, workflow)
        await then(uow)


@pytest.mark.parametrize("kind", ["exception", "cancellation", "timeout"])
async def test_interrupted_unit_of_work_rolls_back_and_leaves_no_session_or_lock(
    database_url: str, kind: str
) -> None:
    async with Database.from_url(database_url, max_connections=POOL_SIZE) as db:
        slow = slow_statement(db.dialect)

        async def statement(uow: UnitOfWork) -> None:
            await uow.execute(slow, action="slow read")

        with slow_statement_starts(db) as started:
            if kind == "exception":

                async def fail(uow: UnitOfWork) -> None:
                    raise Boom

                with pytest.raises(Boom):
                    await _write_then(db, fail)
            elif kind == "cancellation":
                task = asyncio.create_task(_write_then(db, statement))
                async with asyncio.timeout(HANG_GUARD_SECS):
                    await started.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(None) as deadline:
                        loop = asyncio.get_running_loop()
                        # The deadline is set to "now" once the statement is under way.
                        started.clear()
                        waiter = asyncio.create_task(started.wait())
                        waiter.add_done_callback(lambda _: deadline.reschedule(loop.time()))
                        await _write_then(db, statement)
        await _assert_nothing_left_behind(db, database_url)


async def test_cancelling_mid_statement_again_and_again_leaks_no_connection(
    database_url: str,
) -> None:
    rounds = sized(200, 1000)
    threads_before = threading.active_count()
    async with Database.from_url(database_url, max_connections=POOL_SIZE) as db:
        pool = db.engine.pool
        slow = slow_statement(db.dialect, rows=30_000)

        async def read() -> None:
            async with db.session() as uow:
                await uow.execute(slow, action="slow read")

        with slow_statement_starts(db) as started:
            for _ in range(rounds):
                started.clear()
                task = asyncio.create_task(read())
                async with asyncio.timeout(HANG_GUARD_SECS):
                    await started.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert checked_out(db) == 0
                assert pool.checkedin() <= POOL_SIZE  # type: ignore[attr-defined]
        assert pool.size() == POOL_SIZE  # type: ignore[attr-defined]
        if db.dialect == "sqlite":
            # Each given-up connection's driver thread has ended.
            assert threading.active_count() <= threads_before + POOL_SIZE
        await _assert_nothing_left_behind(db, database_url)


@SQLITE_ONLY
async def test_sqlite_write_lock_is_released_as_soon_as_a_cancelled_unit_ends(
    database_url: str,
) -> None:
    # Regression: the driver's cursor of the interrupted statement outlived the
    # connection's close, which kept its transaction, and so the write lock,
    # until the garbage collector ran.
    async with Database.from_url(database_url) as db:
        slow = slow_statement(db.dialect)
        for _ in range(3):
            with slow_statement_starts(db) as started:

                async def statement(uow: UnitOfWork) -> None:
                    await uow.execute(slow, action="slow read")

                task = asyncio.create_task(_write_then(db, statement))
                async with asyncio.timeout(HANG_GUARD_SECS):
                    await started.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert sqlite_write_lock_is_free(database_url)


async def test_in_memory_database_survives_a_cancelled_statement() -> None:
    # Regression: the one connection of an in-memory database was closed when
    # a statement was cancelled, and the whole database went with it.
    db = await Database.in_memory()
    try:
        async with db.session() as uow:
            kept = await persist_workflow(uow)
        with slow_statement_starts(db) as started:

            async def read() -> None:
                async with db.session() as uow:
                    await persist_workflow(uow)
                    await uow.execute(slow_statement("sqlite"), action="slow read")

            task = asyncio.create_task(read())
            async with asyncio.timeout(HANG_GUARD_SECS):
                await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        async with db.session(read_only=True) as uow:
            assert await uow.workflows.list_by_definition("research") == [kept]
    finally:
        await db.dispose()


async def test_in_memory_database_is_gone_after_dispose() -> None:
    db = await Database.in_memory()
    async with db.session() as uow:
        await persist_workflow(uow)
    await db.dispose()
    await db.migrate()  # a new, empty database
    try:
        async with db.session(read_only=True) as uow:
            assert await uow.workflows.list_by_definition("research") == []
    finally:
        await db.dispose()
