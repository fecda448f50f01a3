"""Purge beside writers: no deadlock reaches either, and a purge that fails says what it did.

On PostgreSQL a purge skips every workflow of which another transaction
holds a row (the attempt a late worker is finishing), so it never waits on
a writer and no cycle of waits can form. A purge that fails part way raises
``PurgeFailedError`` with the count the committed batches deleted.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from tests.factories import WorkflowFactory, get_workflow, persist_step
from tests.reliability._support import (
    HANG_GUARD_SECS,
    POSTGRES_ONLY,
    our_sessions_waiting,
    poison_deletes,
    sized,
)

from ecl_persistence import (
    ConflictError,
    ConstraintViolationError,
    Database,
    DbError,
    NotFoundError,
    PurgeFailedError,
    StepExecution,
    StepExecutionState,
    Workflow,
    WorkflowState,
)

NOW = datetime.now(UTC)
CUTOFF = NOW - timedelta(days=30)


def _finished(days_ago: float, **fields: object) -> Workflow:
    at = NOW - timedelta(days=days_ago)
    return WorkflowFactory.build(
        state=WorkflowState.COMPLETED,
        created_at=at - timedelta(hours=1),
        updated_at=at,
        completed_at=at,
        **fields,
    )


async def _finished_with_a_running_attempt(db: Database, days_ago: float) -> StepExecution:
    """A workflow that finished long ago, and an attempt of one of its steps still running."""
    async with db.session() as uow:
        workflow = await uow.workflows.create(_finished(days_ago))
        return await persist_step(uow, workflow, step_id="late")


async def _next_attempt(db: Database, attempt: StepExecution) -> None:
    """What a late worker does: fail the attempt and start the next, in one unit of work."""
    async with db.session() as uow:
        await uow.step_executions.update_completion(
            attempt.id, StepExecutionState.FAILED, error="late"
        )
        await uow.step_executions.create(
            StepExecution.start(
                attempt.workflow_id, attempt.step_id, {}, attempt=attempt.attempt + 1
            )
        )


@POSTGRES_ONLY
async def test_a_purge_beside_a_worker_finishing_and_starting_attempts_never_deadlocks(
    database_url: str,
) -> None:
    async with Database.from_url(database_url) as db:
        attempt = await _finished_with_a_running_attempt(db, days_ago=40)
        finished = asyncio.Event()
        go_on = asyncio.Event()

        async def worker() -> None:
            async with db.session() as uow:
                await uow.step_executions.update_completion(
                    attempt.id, StepExecutionState.FAILED, error="late"
                )
                finished.set()
                await go_on.wait()
                # Its workflow's row is what the purge would hold: the insert
                # checks the foreign key against it.
                await uow.step_executions.create(
                    StepExecution.start(attempt.workflow_id, "late", {}, attempt=2)
                )

        working = asyncio.create_task(worker())
        await finished.wait()
        purging = asyncio.create_task(db.purge(finished_before=CUTOFF))
        # The purge either ends or comes to wait for the worker's row; then
        # the worker goes on to the row the purge holds.
        async with asyncio.timeout(HANG_GUARD_SECS):
            while not purging.done():
                if await our_sessions_waiting(database_url):
                    break
                await asyncio.sleep(0.01)

        go_on.set()
        async with asyncio.timeout(HANG_GUARD_SECS):
            outcomes = await asyncio.gather(working, purging, return_exceptions=True)
        assert [o for o in outcomes if isinstance(o, BaseException)] == []
        # The purge left the workflow in use; the worker's work is stored.
        assert outcomes[1] == 0
        async with db.session(read_only=True) as uow:
            attempts = await uow.step_executions.get_for_step(attempt.workflow_id, "late")
        assert [a.attempt for a in attempts] == [1, 2]
        # Once nobody holds it, the next purge takes it.
        assert await db.purge(finished_before=CUTOFF) == 1


@POSTGRES_ONLY
async def test_purges_racing_late_workers_see_no_deadlock(database_url: str) -> None:
    async with Database.from_url(database_url, max_connections=8) as db:
        attempts = [
            await _finished_with_a_running_attempt(db, days_ago=31 + n)
            for n in range(sized(40, 200))
        ]
        rng = random.Random(len(attempts))
        conflicts: list[DbError] = []

        async def late_worker(mine: list[StepExecution]) -> None:
            for attempt in mine:
                await asyncio.sleep(rng.uniform(0, 0.003))
                try:
                    await _next_attempt(db, attempt)
                except (NotFoundError, ConstraintViolationError):
                    pass  # the purge took the workflow first: no deadlock, the worker is told
                except ConflictError as error:
                    conflicts.append(error)

        async def purger() -> int:
            total = 0
            for _ in range(sized(30, 60)):
                total += await db.purge(finished_before=CUTOFF, batch_size=3)
                await asyncio.sleep(rng.uniform(0, 0.003))
            return total

        workers = [late_worker(attempts[n::4]) for n in range(4)]
        async with asyncio.timeout(HANG_GUARD_SECS):
            results = await asyncio.gather(purger(), purger(), *workers, return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert conflicts == []
        # What is left is what was in use when the purges passed: one more takes it all.
        await db.purge(finished_before=CUTOFF)
        async with db.session(read_only=True) as uow:
            assert (await uow.workflows.count_by_state())[WorkflowState.COMPLETED] == 0


async def test_a_purge_that_fails_part_way_says_how_many_it_had_deleted(
    empty_database_url: str,
) -> None:
    async with Database.from_url(empty_database_url) as db:
        await db.migrate()
        oldest, older = _finished(50), _finished(40)
        poisoned, newer = _finished(35, definition_id="poison"), _finished(32)
        async with db.session() as uow:
            for workflow in (oldest, older, poisoned, newer):
                await uow.workflows.create(workflow)
                await persist_step(uow, workflow)
        await poison_deletes(db)
        batches: list[int] = []
        with pytest.raises(PurgeFailedError) as caught:
            await db.purge(finished_before=CUTOFF, batch_size=1, on_batch=batches.append)
        error = caught.value
        assert error.deleted == 2
        assert batches == [1, 1]
        assert "purge stopped after deleting 2 workflows" in str(error)
        assert isinstance(error.__cause__, DbError)
        assert error.retryable == error.__cause__.retryable
        for gone in (oldest, older):
            assert await get_workflow(db, gone.id) is None
        for kept in (poisoned, newer):
            assert await get_workflow(db, kept.id) == kept
        # Its batch rolled back alone: its workflow and its steps are all there.
        async with db.engine.connect() as connection:
            steps = await connection.execute(text("SELECT count(*) FROM step_executions"))
            assert steps.scalar_one() == 2
