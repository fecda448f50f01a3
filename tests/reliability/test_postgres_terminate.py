"""PostgreSQL: backends killed with pg_terminate_backend, idle in the pool or mid-transaction."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from tests.factories import checked_out, persist_step, persist_workflow
from tests.reliability._support import (
    HANG_GUARD_SECS,
    POSTGRES_ONLY,
    row_counts,
    slow_statement,
    slow_statement_starts,
    terminate_our_sessions,
)

from ecl_persistence import ConnectionFailedError, Database
from ecl_persistence.unit_of_work import UnitOfWork

POOL_SIZE = 3
pytestmark = POSTGRES_ONLY


async def _backend_pid(uow: UnitOfWork) -> int:
    return int((await uow.execute(text("SELECT pg_backend_pid()"), action="pid")).scalar_one())


async def test_terminated_idle_pooled_connections_are_replaced_transparently(
    database_url: str,
) -> None:
    async with Database.from_url(database_url, max_connections=POOL_SIZE) as db:
        opened = asyncio.Barrier(POOL_SIZE)

        async def hold_a_connection() -> int:
            async with db.session() as uow:
                pid = await _backend_pid(uow)
                await opened.wait()  # all connections of the pool are open at once
                return pid

        pids = await asyncio.gather(*(hold_a_connection() for _ in range(POOL_SIZE)))
        assert len(set(pids)) == POOL_SIZE
        assert await terminate_our_sessions(database_url) == POOL_SIZE

        # Every pooled connection is dead: each unit of work gets a fresh one.
        async def write() -> int:
            async with db.session() as uow:
                await persist_workflow(uow)
                return await _backend_pid(uow)

        new_pids = await asyncio.gather(*(write() for _ in range(POOL_SIZE)))
        assert set(new_pids).isdisjoint(pids)
        assert (await row_counts(db))["workflows"] == POOL_SIZE
        assert checked_out(db) == 0


@pytest.mark.parametrize("when", ["between-statements", "during-a-statement", "before-commit"])
async def test_backend_terminated_mid_transaction_fails_that_unit_and_commits_none_of_it(
    database_url: str, when: str
) -> None:
    async with Database.from_url(database_url, max_connections=POOL_SIZE) as db:
        with pytest.raises(ConnectionFailedError) as caught, slow_statement_starts(db) as started:
            async with db.session() as uow:
                workflow = await persist_workflow(uow)
                await persist_step(uow, workflow)
                pid = await _backend_pid(uow)
                if when == "during-a-statement":
                    # The statement fails, so the block ends there.
                    statement = asyncio.create_task(
                        uow.execute(slow_statement("postgresql"), action="slow read")
                    )
                    async with asyncio.timeout(HANG_GUARD_SECS):
                        await started.wait()
                    assert await terminate_our_sessions(database_url, pid) == 1
                    await statement
                assert await terminate_our_sessions(database_url, pid) == 1
                if when == "between-statements":
                    await uow.workflows.get(workflow.id)
                # before-commit: leaving the block commits, on a dead connection
        assert caught.value.retryable
        assert "connection was lost" in str(caught.value)
        assert checked_out(db) == 0
        assert await row_counts(db) == {"workflows": 0, "step_executions": 0, "artifacts": 0}
        async with db.session() as uow:
            await persist_workflow(uow)
        assert (await row_counts(db))["workflows"] == 1
