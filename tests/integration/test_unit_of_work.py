"""Unit of work: commit on clean exit, rollback on error or cancellation, no leaked connection."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from tests.factories import StepExecutionFactory, WorkflowFactory, checked_out, persist_workflow

from ecl_persistence import (
    APPLICATION_NAME,
    ConstraintViolationError,
    Database,
    TransactionFailedError,
)


class Boom(Exception):
    pass


async def _count(db: Database) -> int:
    async with db.session(read_only=True) as uow:
        return len(await uow.workflows.list_by_definition("research"))


async def test_clean_exit_commits(db: Database) -> None:
    async with db.session() as uow:
        workflow = await persist_workflow(uow)
    async with db.session(read_only=True) as uow:
        assert await uow.workflows.get(workflow.id) == workflow
    assert checked_out(db) == 0


async def test_exception_rolls_back_and_propagates_unchanged(db: Database) -> None:
    with pytest.raises(Boom):
        async with db.session() as uow:
            await persist_workflow(uow)
            raise Boom
    assert await _count(db) == 0
    assert checked_out(db) == 0


async def test_cancellation_rolls_back_and_returns_the_connection(db: Database) -> None:
    written = asyncio.Event()

    async def work() -> None:
        async with db.session() as uow:
            await persist_workflow(uow)
            written.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(work())
    await written.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _count(db) == 0
    assert checked_out(db) == 0


async def test_timeout_inside_a_unit_rolls_back(db: Database) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05), db.session() as uow:
            await persist_workflow(uow)
            await asyncio.sleep(5)
    assert await _count(db) == 0
    assert checked_out(db) == 0


async def test_explicit_commit_keeps_work_even_if_the_block_later_fails(db: Database) -> None:
    with pytest.raises(Boom):
        async with db.session() as uow:
            kept = await persist_workflow(uow)
            await uow.commit()
            await persist_workflow(uow)
            raise Boom
    async with db.session(read_only=True) as uow:
        assert [w.id for w in await uow.workflows.list_by_definition("research")] == [kept.id]


async def test_explicit_rollback_discards_and_the_unit_stays_usable(db: Database) -> None:
    async with db.session() as uow:
        await persist_workflow(uow)
        await uow.rollback()
        kept = await persist_workflow(uow)
    async with db.session(read_only=True) as uow:
        assert [w.id for w in await uow.workflows.list_by_definition("research")] == [kept.id]


async def test_failed_statement_rolls_back_the_whole_unit_on_both_backends(db: Database) -> None:
    orphan = StepExecutionFactory.build(workflow_id=WorkflowFactory.build().id)
    with pytest.raises(TransactionFailedError):
        async with db.session() as uow:
            await persist_workflow(uow)
            with pytest.raises(ConstraintViolationError):
                await uow.step_executions.create(orphan)
            # The unit refuses further work until rolled back...
            with pytest.raises(TransactionFailedError):
                await uow.workflows.list_by_definition("research")
            # ...and leaving it cleanly does not pretend to have committed.
    assert await _count(db) == 0


async def test_rollback_after_a_failed_statement_lets_the_unit_continue(db: Database) -> None:
    orphan = StepExecutionFactory.build(workflow_id=WorkflowFactory.build().id)
    async with db.session() as uow:
        await persist_workflow(uow)
        with pytest.raises(ConstraintViolationError):
            await uow.step_executions.create(orphan)
        await uow.rollback()
        kept = await persist_workflow(uow)
    async with db.session(read_only=True) as uow:
        assert [w.id for w in await uow.workflows.list_by_definition("research")] == [kept.id]


async def test_using_a_unit_outside_its_block_is_refused(db: Database) -> None:
    uow = db.session()
    with pytest.raises(TransactionFailedError, match="not active"):
        await uow.workflows.get(WorkflowFactory.build().id)
    async with uow:
        inside = uow.active
    assert inside
    assert not uow.active
    with pytest.raises(TransactionFailedError):
        await uow.commit()
    with pytest.raises(TransactionFailedError):
        await uow.rollback()


async def test_a_unit_cannot_be_entered_twice_at_once(db: Database) -> None:
    async with db.session() as uow:
        with pytest.raises(TransactionFailedError):
            await uow.__aenter__()


async def test_read_only_unit_refuses_writes(db: Database) -> None:
    async with db.session(read_only=True) as uow:
        assert uow.read_only
        with pytest.raises(TransactionFailedError, match="read-only"):
            await uow.workflows.create(WorkflowFactory.build())
    assert await _count(db) == 0


@pytest.mark.postgresql
async def test_cancelled_postgres_unit_leaves_no_idle_in_transaction(postgres_url: str) -> None:
    async with Database.from_url(postgres_url) as db:
        started = asyncio.Event()

        async def work() -> None:
            async with db.session() as uow:
                await persist_workflow(uow)
                started.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(work())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with db.session(read_only=True) as uow:
            result = await uow.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app "
                    "AND datname = current_database() AND state LIKE 'idle in transaction%'"
                ),
                {"app": APPLICATION_NAME},
                action="activity",
            )
            assert result.scalar() == 0
        assert checked_out(db) == 0
