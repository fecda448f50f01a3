"""Aggregates across workflows: counts by state and execution totals, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from tests.factories import StepExecutionFactory, persist_workflow

from ecl_persistence import (
    Database,
    ExecutionStats,
    QueryFailedError,
    StepExecutionState,
    ValidationError,
    Workflow,
    WorkflowState,
)

SUCCEEDED = StepExecutionState.SUCCEEDED
FAILED = StepExecutionState.FAILED


async def _workflow(db: Database, definition_id: str, state: WorkflowState) -> Workflow:
    async with db.session() as uow:
        return await persist_workflow(uow, definition_id=definition_id, state=state)


async def _executions(db: Database, workflow: Workflow, *specs: tuple[str, int, int]) -> None:
    """Create one finished execution per ``(state, duration_ms, tokens)``."""
    async with db.session() as uow:
        await uow.step_executions.create_many(
            StepExecutionFactory.build(
                workflow_id=workflow.id,
                state=state,
                duration_ms=duration,
                tokens_used=tokens,
                completed_at=workflow.created_at,
            )
            for state, duration, tokens in specs
        )


async def test_count_by_state_lists_every_state_with_zero_for_none(db: Database) -> None:
    await _workflow(db, "research", WorkflowState.RUNNING)
    await _workflow(db, "research", WorkflowState.RUNNING)
    await _workflow(db, "research", WorkflowState.COMPLETED)
    await _workflow(db, "translate", WorkflowState.FAILED)
    async with db.session(read_only=True) as uow:
        everything = await uow.workflows.count_by_state()
        research = await uow.workflows.count_by_state("research")
        unknown = await uow.workflows.count_by_state("nothing-like-it")
    assert everything == {
        WorkflowState.PENDING: 0,
        WorkflowState.RUNNING: 2,
        WorkflowState.COMPLETED: 1,
        WorkflowState.FAILED: 1,
        WorkflowState.CANCELLED: 0,
    }
    assert research == {**everything, WorkflowState.FAILED: 0}
    assert unknown == dict.fromkeys(WorkflowState, 0)


async def test_count_by_state_of_an_empty_database_is_all_zero(db: Database) -> None:
    async with db.session(read_only=True) as uow:
        assert await uow.workflows.count_by_state() == dict.fromkeys(WorkflowState, 0)


async def test_count_by_state_refuses_an_unknown_state_read_back() -> None:
    """SQLite only: its CHECK constraint is switched off for this one write."""
    db = await Database.in_memory()
    try:
        await _workflow(db, "research", WorkflowState.PENDING)
        async with db.engine.begin() as connection:
            await connection.execute(text("PRAGMA ignore_check_constraints=ON"))
            await connection.execute(text("UPDATE workflows SET state = 'paused'"))
            await connection.execute(text("PRAGMA ignore_check_constraints=OFF"))
        async with db.session(read_only=True) as uow:
            with pytest.raises(QueryFailedError, match=r"workflows\.state .* unknown state"):
                await uow.workflows.count_by_state()
    finally:
        await db.dispose()


async def test_get_totals_sums_over_all_workflows_or_one_definition(db: Database) -> None:
    first = await _workflow(db, "research", WorkflowState.COMPLETED)
    second = await _workflow(db, "research", WorkflowState.FAILED)
    other = await _workflow(db, "translate", WorkflowState.COMPLETED)
    await _executions(db, first, (FAILED, 40, 10), (SUCCEEDED, 60, 2**40))
    await _executions(db, second, (FAILED, 5, 1))
    await _executions(db, other, (SUCCEEDED, 1000, 100))
    async with db.session(read_only=True) as uow:
        everything = await uow.step_executions.get_totals()
        research = await uow.step_executions.get_totals("research")
        translate = await uow.step_executions.get_totals(definition_id="translate")
    assert everything == ExecutionStats(4, 2, 2, 1105, 2**40 + 111)
    assert research == ExecutionStats(3, 1, 2, 105, 2**40 + 11)
    assert translate == ExecutionStats(1, 1, 0, 1000, 100)


async def test_get_totals_counts_unfinished_executions_without_nulls(db: Database) -> None:
    workflow = await _workflow(db, "research", WorkflowState.RUNNING)
    async with db.session() as uow:
        await uow.step_executions.create(StepExecutionFactory.build(workflow_id=workflow.id))
    async with db.session(read_only=True) as uow:
        assert await uow.step_executions.get_totals() == ExecutionStats(1, 0, 0, 0, 0)
        assert await uow.step_executions.get_totals("absent") == ExecutionStats.empty()


@pytest.mark.parametrize("definition_id", ["", "x" * 256, "nul\x00"])
async def test_aggregates_refuse_a_bad_definition_id(db: Database, definition_id: str) -> None:
    async with db.session(read_only=True) as uow:
        with pytest.raises(ValidationError, match="definition_id"):
            await uow.workflows.count_by_state(definition_id)
        with pytest.raises(ValidationError, match="definition_id"):
            await uow.step_executions.get_totals(definition_id)
