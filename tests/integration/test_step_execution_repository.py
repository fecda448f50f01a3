"""StepExecutionRepository against a real database: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any, cast

import pytest
from tests.factories import (
    StepExecutionFactory,
    WorkflowFactory,
    at,
    create_step_executions,
    get_step_execution,
    new_workflow,
    raw_scalar,
    statements_run,
    stored_step_execution,
)

from ecl_persistence import (
    MISSING,
    ConstraintViolationError,
    Database,
    ExecutionStats,
    InvalidStateTransitionError,
    NotFoundError,
    SerializationError,
    StepExecution,
    StepExecutionId,
    StepExecutionState,
    StepId,
    TransactionFailedError,
    ValidationError,
    Workflow,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.domain import new_uuid7
from ecl_persistence.unit_of_work import UnitOfWork

FINISHED = [StepExecutionState.SUCCEEDED, StepExecutionState.FAILED]


def writes(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


def execution(workflow: Workflow, **fields: Any) -> StepExecution:
    return StepExecutionFactory.build(workflow_id=workflow.id, **fields)


async def history(db: Database, workflow_id: WorkflowId) -> list[StepExecution]:
    async with db.session(read_only=True) as uow:
        return await uow.step_executions.get_for_workflow(workflow_id)


# --- The stage plan's own tests -------------------------------------------------------


async def test_create_then_get_returns_an_equal_execution(db: Database) -> None:
    workflow = await new_workflow(db)
    started = StepExecution.start(
        workflow.id, StepId("search"), {"q": "tides", "n": [1, 2]}, metadata={"model": "m"}
    )
    async with db.session() as uow:
        assert await uow.step_executions.create(started) is started
    got = await stored_step_execution(db, started.id)
    assert got == started
    assert got.output is MISSING
    assert got.state is StepExecutionState.RUNNING
    assert await get_step_execution(db, StepExecutionId(new_uuid7())) is None


@pytest.mark.parametrize("state", list(StepExecutionState), ids=str)
async def test_every_step_execution_state_round_trips(
    db: Database, state: StepExecutionState
) -> None:
    workflow = await new_workflow(db)
    item = execution(workflow, state=state, completed_at=at(1) if state.is_finished else None)
    await create_step_executions(db, item)
    got = await stored_step_execution(db, item.id)
    assert got == item
    assert got.state is state
    raw = await raw_scalar(db, "SELECT state FROM step_executions WHERE id = :id", id=item.id)
    assert raw == state.value


async def test_workflow_lifecycle_with_a_failed_then_succeeded_retry(db: Database) -> None:
    workflow = Workflow.new("research", {"topic": "tides"}, now=at(0))
    async with db.session() as uow:
        await uow.workflows.create(workflow)
        await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING)
        first = StepExecution.start(workflow.id, "search", {"q": "tides"}, now=at(1))
        await uow.step_executions.create(first)

    async with db.session() as uow:
        await uow.step_executions.update_completion(
            first.id, StepExecutionState.FAILED, error="rate limited", duration_ms=30
        )
        retry = StepExecution.start(workflow.id, "search", {"q": "tides"}, attempt=2, now=at(2))
        await uow.step_executions.create(retry)

    async with db.session() as uow:
        await uow.step_executions.update_completion(
            retry.id,
            StepExecutionState.SUCCEEDED,
            output={"hits": 3},
            duration_ms=70,
            tokens_used=12,
        )
        summary = StepExecution.start(workflow.id, "summarise", {"hits": 3}, now=at(3))
        await uow.step_executions.create(summary)
        await uow.step_executions.update_completion(
            summary.id,
            StepExecutionState.SUCCEEDED,
            output="three hits",
            duration_ms=100,
            tokens_used=30,
        )
        await uow.workflows.update_output(workflow.id, {"summary": "three hits"})
        await uow.workflows.update_state(workflow.id, WorkflowState.COMPLETED)

    async with db.session(read_only=True) as uow:
        final = await uow.workflows.get(workflow.id)
        steps = await uow.step_executions.get_for_workflow(workflow.id)
        search = await uow.step_executions.get_for_step(workflow.id, "search")
        stats = await uow.step_executions.get_stats(workflow.id)

    assert final is not None
    assert final.state is WorkflowState.COMPLETED
    assert final.output == {"summary": "three hits"}
    assert final.completed_at is not None
    assert [(s.step_id, s.attempt, s.state) for s in steps] == [
        ("search", 1, StepExecutionState.FAILED),
        ("search", 2, StepExecutionState.SUCCEEDED),
        ("summarise", 1, StepExecutionState.SUCCEEDED),
    ]
    assert steps[0].error == "rate limited"
    assert steps[0].output is MISSING
    assert steps[1].output == {"hits": 3}
    assert steps[2].output == "three hits"
    assert all(s.completed_at is not None for s in steps)
    assert search == steps[:2]
    assert stats == ExecutionStats(
        total_executions=3,
        succeeded_count=2,
        failed_count=1,
        total_duration_ms=200,
        total_tokens=42,
    )


# --- create ---------------------------------------------------------------------------


async def test_create_for_an_unknown_workflow_raises_and_rolls_the_whole_unit_back(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build()
    orphan = StepExecutionFactory.build(workflow_id=new_uuid7())
    with pytest.raises(TransactionFailedError, match="nothing was committed"):
        async with db.session() as uow:
            await uow.workflows.create(workflow)
            with pytest.raises(ConstraintViolationError, match="foreign key") as info:
                await uow.step_executions.create(orphan)
            # The unit refuses further work until rolled back.
            with pytest.raises(TransactionFailedError):
                await uow.workflows.get(workflow.id)
    if db.dialect == "postgresql":
        assert info.value.constraint == "fk_step_executions_workflow_id_workflows"
    async with db.session(read_only=True) as uow:
        assert await uow.workflows.get(workflow.id) is None
        assert await uow.step_executions.get(orphan.id) is None
    assert await raw_scalar(db, "SELECT count(*) FROM workflows") == 0


async def test_rollback_after_a_failed_create_makes_the_unit_usable_again(db: Database) -> None:
    workflow = WorkflowFactory.build()
    async with db.session() as uow:
        with pytest.raises(ConstraintViolationError):
            await uow.step_executions.create(StepExecutionFactory.build(workflow_id=new_uuid7()))
        await uow.rollback()
        await uow.workflows.create(workflow)
    async with db.session(read_only=True) as uow:
        assert await uow.workflows.get(workflow.id) == workflow


async def test_duplicate_attempt_of_a_step_raises_with_the_unique_constraint_name(
    db: Database,
) -> None:
    workflow = await new_workflow(db)
    first = execution(workflow, step_id="search", attempt=1)
    await create_step_executions(db, first)
    twin = execution(workflow, step_id="search", attempt=1)
    with pytest.raises(TransactionFailedError):
        async with db.session() as uow:
            with pytest.raises(ConstraintViolationError) as info:
                await uow.step_executions.create(twin)
    assert info.value.constraint == "uq_step_executions_workflow_id_step_id_attempt"
    assert await history(db, workflow.id) == [first]


async def test_same_step_and_attempt_in_another_workflow_is_allowed(db: Database) -> None:
    one, two = await new_workflow(db), await new_workflow(db)
    a = execution(one, step_id="search", attempt=1)
    b = execution(two, step_id="search", attempt=1)
    await create_step_executions(db, a, b)
    assert await history(db, one.id) == [a]
    assert await history(db, two.id) == [b]


# --- create_many ----------------------------------------------------------------------


async def test_create_many_inserts_500_and_history_comes_back_in_started_at_order(
    db: Database,
) -> None:
    workflow = await new_workflow(db)
    batch = [
        execution(workflow, step_id=f"step-{i}", started_at=at(i / 1000), input={"i": i})
        for i in range(500)
    ]
    random.Random(7).shuffle(batch)
    async with db.session() as uow:
        with statements_run(db) as sent:
            created = await uow.step_executions.create_many(batch)
    assert created == batch
    assert len(writes(sent)) == 1, "one batch, not one statement per row"
    got = await history(db, workflow.id)
    assert got == sorted(batch, key=lambda e: e.started_at)


async def test_create_many_accepts_any_iterable(db: Database) -> None:
    workflow = await new_workflow(db)
    batch = [execution(workflow, started_at=at(i)) for i in range(3)]
    async with db.session() as uow:
        created = await uow.step_executions.create_many(item for item in batch)
    assert created == batch
    assert await history(db, workflow.id) == batch


@pytest.mark.parametrize("clash", ["with-a-stored-row", "within-the-batch"])
async def test_create_many_is_all_or_nothing(db: Database, clash: str) -> None:
    workflow = await new_workflow(db)
    existing = execution(workflow, step_id="search", attempt=1, started_at=at(0))
    await create_step_executions(db, existing)
    batch = [execution(workflow, step_id="fetch", attempt=i, started_at=at(i)) for i in (1, 2, 3)]
    if clash == "with-a-stored-row":
        duplicate = execution(workflow, step_id="search", attempt=1)
    else:
        duplicate = execution(workflow, step_id="fetch", attempt=2)
    batch.insert(2, duplicate)
    async with db.session() as uow:
        with pytest.raises(ConstraintViolationError) as info:
            await uow.step_executions.create_many(batch)
        await uow.rollback()
        assert await uow.step_executions.get_for_workflow(workflow.id) == [existing]
    assert info.value.constraint == "uq_step_executions_workflow_id_step_id_attempt"
    assert await history(db, workflow.id) == [existing]


async def test_create_many_of_nothing_returns_an_empty_list_without_sql(db: Database) -> None:
    async with db.session() as uow:
        with statements_run(db) as sent:
            assert await uow.step_executions.create_many([]) == []
    assert writes(sent) == []
    assert await raw_scalar(db, "SELECT count(*) FROM step_executions") == 0


async def test_create_many_rejects_a_non_execution_before_any_sql(db: Database) -> None:
    workflow = await new_workflow(db)
    async with db.session() as uow:
        with statements_run(db) as sent, pytest.raises(ValidationError):
            await uow.step_executions.create_many([execution(workflow), cast(Any, "oops")])
    assert writes(sent) == []
    assert await history(db, workflow.id) == []


# --- get_for_step ---------------------------------------------------------------------


async def test_get_for_step_returns_that_steps_attempts_in_attempt_order(db: Database) -> None:
    workflow, other = await new_workflow(db), await new_workflow(db)
    # Later attempts started earlier on purpose: the order is by attempt.
    attempts = [
        execution(workflow, step_id="search", attempt=n, started_at=at(10 - n)) for n in (3, 1, 2)
    ]
    noise = [
        execution(workflow, step_id="summarise", attempt=1, started_at=at(0)),
        execution(other, step_id="search", attempt=4, started_at=at(0)),
    ]
    await create_step_executions(db, *attempts, *noise)
    async with db.session(read_only=True) as uow:
        got = await uow.step_executions.get_for_step(workflow.id, StepId("search"))
        unknown = await uow.step_executions.get_for_step(workflow.id, "nothing")
    assert got == sorted(attempts, key=lambda e: e.attempt)
    assert [e.attempt for e in got] == [1, 2, 3]
    assert unknown == []


# --- update_completion ----------------------------------------------------------------


async def test_update_completion_records_the_outcome(db: Database) -> None:
    workflow = await new_workflow(db)
    running = execution(workflow, started_at=at(0))
    await create_step_executions(db, running)
    async with db.session() as uow:
        done = await uow.step_executions.update_completion(
            running.id,
            StepExecutionState.SUCCEEDED,
            output={"hits": 3},
            error="partial results",
            duration_ms=120,
            tokens_used=42,
        )
    assert done.state is StepExecutionState.SUCCEEDED
    assert done.output == {"hits": 3}
    assert done.error == "partial results"
    assert done.duration_ms == 120
    assert done.tokens_used == 42
    assert done.completed_at is not None
    assert done.completed_at.tzinfo is UTC
    assert done.completed_at > running.started_at
    assert (done.id, done.step_id, done.attempt, done.input, done.started_at) == (
        running.id,
        running.step_id,
        running.attempt,
        running.input,
        running.started_at,
    )
    assert await stored_step_execution(db, running.id) == done


async def test_update_completion_as_failed_without_output_keeps_output_missing(
    db: Database,
) -> None:
    workflow = await new_workflow(db)
    running = execution(workflow)
    await create_step_executions(db, running)
    async with db.session() as uow:
        failed = await uow.step_executions.update_completion(
            running.id, StepExecutionState.FAILED, error="boom"
        )
    assert (failed.state, failed.output, failed.error) == (
        StepExecutionState.FAILED,
        MISSING,
        "boom",
    )
    assert failed.duration_ms is None
    assert await stored_step_execution(db, running.id) == failed


async def test_update_completion_stores_json_null_output_distinct_from_missing(
    db: Database,
) -> None:
    workflow = await new_workflow(db)
    running = execution(workflow)
    await create_step_executions(db, running)
    async with db.session() as uow:
        done = await uow.step_executions.update_completion(
            running.id, StepExecutionState.SUCCEEDED, output=None
        )
    got = await stored_step_execution(db, running.id)
    assert done.output is None
    assert got.output is None


async def test_update_completion_keeps_recorded_tokens_unless_given(db: Database) -> None:
    workflow = await new_workflow(db)
    kept, replaced = execution(workflow, tokens_used=5), execution(workflow, tokens_used=5)
    await create_step_executions(db, kept, replaced)
    async with db.session() as uow:
        a = await uow.step_executions.update_completion(kept.id, StepExecutionState.SUCCEEDED)
        b = await uow.step_executions.update_completion(
            replaced.id, StepExecutionState.SUCCEEDED, tokens_used=0
        )
    assert a.tokens_used == 5
    assert b.tokens_used == 0
    assert (
        await stored_step_execution(db, kept.id),
        await stored_step_execution(db, replaced.id),
    ) == (a, b)


async def test_a_pending_execution_can_complete(db: Database) -> None:
    workflow = await new_workflow(db)
    pending = execution(workflow, state=StepExecutionState.PENDING)
    await create_step_executions(db, pending)
    async with db.session() as uow:
        done = await uow.step_executions.update_completion(pending.id, StepExecutionState.FAILED)
    assert done.state is StepExecutionState.FAILED


@pytest.mark.parametrize("finished", FINISHED, ids=str)
async def test_completing_a_finished_execution_raises_and_changes_nothing(
    db: Database, finished: StepExecutionState
) -> None:
    workflow = await new_workflow(db)
    running = execution(workflow)
    await create_step_executions(db, running)
    async with db.session() as uow:
        first = await uow.step_executions.update_completion(
            running.id, finished, output={"v": 1}, duration_ms=10, tokens_used=3
        )
    for target in FINISHED:
        async with db.session() as uow:
            with pytest.raises(InvalidStateTransitionError) as info:
                await uow.step_executions.update_completion(
                    running.id,
                    target,
                    output={"v": 2},
                    error="again",
                    duration_ms=99,
                    tokens_used=9,
                )
        error = info.value
        assert (error.entity_type, error.id, error.from_state, error.to_state) == (
            "step execution",
            running.id,
            finished.value,
            target.value,
        )
        assert await stored_step_execution(db, running.id) == first


@pytest.mark.parametrize("state", ["running", "pending", "bogus", 3], ids=repr)
async def test_update_completion_refuses_a_state_that_does_not_finish(
    db: Database, state: object
) -> None:
    workflow = await new_workflow(db)
    running = execution(workflow)
    await create_step_executions(db, running)
    async with db.session() as uow:
        with pytest.raises(ValidationError):
            await uow.step_executions.update_completion(running.id, cast(Any, state))
    assert await stored_step_execution(db, running.id) == running


async def test_update_completion_of_a_missing_execution_raises_not_found(db: Database) -> None:
    absent = StepExecutionId(new_uuid7())
    async with db.session() as uow:
        with pytest.raises(NotFoundError) as info:
            await uow.step_executions.update_completion(absent, StepExecutionState.SUCCEEDED)
    assert (info.value.entity_type, info.value.id) == ("step execution", absent)
    assert str(absent) in str(info.value)


BAD_COMPLETIONS: dict[str, dict[str, Any]] = {
    "negative-duration": {"duration_ms": -1},
    "negative-tokens": {"tokens_used": -5},
    "float-duration": {"duration_ms": 1.5},
    "duration-beyond-64-bits": {"duration_ms": 2**63},
    "nan-output": {"output": {"x": float("nan")}},
    "nul-in-error": {"error": "a\x00b"},
}


@pytest.mark.parametrize("arguments", list(BAD_COMPLETIONS.values()), ids=list(BAD_COMPLETIONS))
async def test_bad_completion_arguments_are_refused_before_any_sql(
    db: Database, arguments: dict[str, Any]
) -> None:
    workflow = await new_workflow(db)
    running = execution(workflow)
    await create_step_executions(db, running)
    async with db.session() as uow:
        with statements_run(db) as sent, pytest.raises((ValidationError, SerializationError)):
            await uow.step_executions.update_completion(
                running.id, StepExecutionState.SUCCEEDED, **arguments
            )
        # No statement failed, so the unit is still usable and commits on exit.
        assert await uow.step_executions.get(running.id) == running
    assert writes(sent) == []
    assert await stored_step_execution(db, running.id) == running


# --- get_stats ------------------------------------------------------------------------


async def test_get_stats_counts_and_sums_in_sql(db: Database) -> None:
    workflow, other = await new_workflow(db), await new_workflow(db)
    succeeded = StepExecutionState.SUCCEEDED
    failed = StepExecutionState.FAILED
    await create_step_executions(
        db,
        execution(workflow, state=succeeded, duration_ms=100, tokens_used=10),
        execution(workflow, state=succeeded, duration_ms=None, tokens_used=5),
        execution(workflow, state=failed, duration_ms=50, tokens_used=None),
        execution(workflow, state=failed, duration_ms=7, tokens_used=2**40),
        execution(workflow, state=StepExecutionState.RUNNING, tokens_used=7),
        execution(workflow, state=StepExecutionState.PENDING),
        execution(other, state=succeeded, duration_ms=1000, tokens_used=1000),
    )
    async with db.session(read_only=True) as uow:
        stats = await uow.step_executions.get_stats(workflow.id)
        other_stats = await uow.step_executions.get_stats(other.id)
    assert stats == ExecutionStats(
        total_executions=6,
        succeeded_count=2,
        failed_count=2,
        total_duration_ms=157,
        total_tokens=22 + 2**40,
    )
    assert other_stats == ExecutionStats(1, 1, 0, 1000, 1000)


async def test_get_stats_of_a_workflow_without_executions_is_all_zero(db: Database) -> None:
    workflow = await new_workflow(db)
    async with db.session(read_only=True) as uow:
        assert await uow.step_executions.get_stats(workflow.id) == ExecutionStats.empty()
        unknown = await uow.step_executions.get_stats(WorkflowId(new_uuid7()))
    assert unknown == ExecutionStats(0, 0, 0, 0, 0)


# --- read-only and finished units of work ---------------------------------------------

ReadOnlyWrite = Callable[[UnitOfWork, Workflow, StepExecution], Awaitable[object]]
READ_ONLY_WRITES: dict[str, ReadOnlyWrite] = {
    "create": lambda uow, wf, ex: uow.step_executions.create(execution(wf)),
    "create_many": lambda uow, wf, ex: uow.step_executions.create_many([execution(wf)]),
    "create_many-empty": lambda uow, wf, ex: uow.step_executions.create_many([]),
    "update_completion": lambda uow, wf, ex: uow.step_executions.update_completion(
        ex.id, StepExecutionState.SUCCEEDED
    ),
}


@pytest.mark.parametrize("operation", list(READ_ONLY_WRITES))
async def test_read_only_unit_refuses_every_step_execution_write(
    db: Database, operation: str
) -> None:
    workflow = await new_workflow(db)
    running = execution(workflow)
    await create_step_executions(db, running)
    async with db.session(read_only=True) as uow:
        with pytest.raises(TransactionFailedError, match="read-only"):
            await READ_ONLY_WRITES[operation](uow, workflow, running)
        assert await uow.step_executions.get_for_workflow(workflow.id) == [running]
        assert await uow.step_executions.get_for_step(workflow.id, running.step_id) == [running]
        assert (await uow.step_executions.get_stats(workflow.id)).total_executions == 1
    assert await history(db, workflow.id) == [running]


async def test_step_execution_repository_used_after_its_unit_ended_raises(db: Database) -> None:
    workflow = await new_workflow(db)
    running = execution(workflow)
    async with db.session() as uow:
        await uow.step_executions.create(running)
    repository = uow.step_executions
    with pytest.raises(TransactionFailedError):
        await repository.get(running.id)
    with pytest.raises(TransactionFailedError):
        await repository.get_stats(workflow.id)
    with pytest.raises(TransactionFailedError):
        await repository.create(execution(workflow))
    with pytest.raises(TransactionFailedError):
        await repository.update_completion(running.id, StepExecutionState.SUCCEEDED)
    assert await history(db, workflow.id) == [running]
