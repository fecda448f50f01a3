"""Resume: the latest attempt of each step, the resume point, next attempt numbers."""

from __future__ import annotations

import asyncio
import math

import pytest
from tests.factories import StepExecutionFactory, new_workflow

from ecl_persistence import (
    ConstraintViolationError,
    Database,
    NotFoundError,
    SerializationError,
    StepExecution,
    StepExecutionState,
    TransactionFailedError,
    ValidationError,
    Workflow,
    WorkflowId,
)
from ecl_persistence.domain import new_uuid7, utc_now

S = StepExecutionState
CONCURRENT = 10


async def record(db: Database, workflow: Workflow, history: dict[str, list[S]]) -> None:
    """Store each step's attempts, in order, in the states given."""
    executions = [
        StepExecutionFactory.build(
            workflow_id=workflow.id,
            step_id=step,
            attempt=number,
            state=state,
            completed_at=utc_now() if state.is_finished else None,
            output={"step": step, "attempt": number} if state is S.SUCCEEDED else None,
        )
        for step, states in history.items()
        for number, state in enumerate(states, start=1)
    ]
    async with db.session() as uow:
        await uow.step_executions.create_many(executions)


async def start(db: Database, workflow: Workflow, step: str, **options: object) -> StepExecution:
    async with db.session() as uow:
        return await uow.step_executions.start(workflow.id, step, {"q": step}, **options)  # type: ignore[arg-type]


HISTORY = {
    "fetch": [S.SUCCEEDED],
    "parse": [S.FAILED, S.SUCCEEDED],
    "summarise": [S.FAILED],
    "translate": [S.RUNNING],  # its worker died mid-step
    "publish": [S.FAILED, S.FAILED],
    "review": [S.PENDING],
}


async def test_latest_attempts_returns_the_highest_attempt_of_each_step(db: Database) -> None:
    workflow = await new_workflow(db)
    await record(db, workflow, HISTORY)
    async with db.session(read_only=True) as uow:
        latest = await uow.step_executions.latest_attempts(workflow.id)
    assert {step: (e.attempt, e.state) for step, e in latest.items()} == {
        step: (len(states), states[-1]) for step, states in HISTORY.items()
    }
    assert all(e.workflow_id == workflow.id for e in latest.values())


async def test_latest_attempts_is_empty_without_steps(db: Database) -> None:
    workflow = await new_workflow(db)
    async with db.session(read_only=True) as uow:
        assert await uow.step_executions.latest_attempts(workflow.id) == {}
        assert await uow.step_executions.latest_attempts(WorkflowId(new_uuid7())) == {}


async def test_resume_point_skips_succeeded_steps_and_retries_the_others(db: Database) -> None:
    workflow = await new_workflow(db)
    await record(db, workflow, HISTORY)
    async with db.session(read_only=True) as uow:
        point = await uow.workflows.resume_point(workflow.id)

    assert point.workflow == workflow
    assert {step: e.attempt for step, e in point.succeeded.items()} == {"fetch": 1, "parse": 2}
    assert point.output_of("parse") == {"step": "parse", "attempt": 2}
    assert dict(point.to_retry) == {"summarise": 2, "translate": 2, "publish": 3, "review": 2}
    assert point.is_done("fetch")
    assert not point.is_done("summarise")
    assert point.next_attempt("publish") == 3
    assert point.next_attempt("never-started") == 1


async def test_resume_point_of_a_missing_workflow_raises_not_found(db: Database) -> None:
    async with db.session(read_only=True) as uow:
        with pytest.raises(NotFoundError):
            await uow.workflows.resume_point(WorkflowId(new_uuid7()))


async def test_start_numbers_the_attempts_of_each_step_from_one(db: Database) -> None:
    workflow = await new_workflow(db)
    first = await start(db, workflow, "search")
    second = await start(db, workflow, "search")
    other = await start(db, workflow, "fetch")

    assert [first.attempt, second.attempt, other.attempt] == [1, 2, 1]
    for execution in (first, second, other):
        assert execution.state is S.RUNNING
        async with db.session(read_only=True) as uow:
            assert await uow.step_executions.get(execution.id) == execution


async def test_start_with_an_explicit_attempt_stores_that_number(db: Database) -> None:
    workflow = await new_workflow(db)
    fifth = await start(db, workflow, "search", attempt=5)
    sixth = await start(db, workflow, "search")
    assert (fifth.attempt, sixth.attempt) == (5, 6)
    with pytest.raises(ConstraintViolationError):
        await start(db, workflow, "search", attempt=5)


async def test_start_keeps_json_null_input_and_metadata(db: Database) -> None:
    workflow = await new_workflow(db)
    async with db.session() as uow:
        started = await uow.step_executions.start(workflow.id, "s", None, metadata={"k": [1]})
        assert await uow.step_executions.get(started.id) == started
    assert (started.input, started.metadata) == (None, {"k": [1]})


async def test_start_on_a_missing_workflow_raises_and_writes_nothing(db: Database) -> None:
    missing = Workflow.new("research", {})
    with pytest.raises(NotFoundError):
        await start(db, missing, "search")
    with pytest.raises(ConstraintViolationError):
        await start(db, missing, "search", attempt=1)


@pytest.mark.parametrize(
    ("step", "payload", "attempt", "error"),
    [
        ("", {}, None, ValidationError),
        ("s", {"x": math.nan}, None, SerializationError),
        ("s", {}, 0, ValidationError),
        ("s", {}, True, ValidationError),
    ],
    ids=["empty-step", "nan-input", "attempt-0", "attempt-bool"],
)
async def test_start_refuses_bad_arguments_before_any_sql(
    db: Database, step: str, payload: object, attempt: object, error: type[Exception]
) -> None:
    workflow = await new_workflow(db)
    async with db.session() as uow:
        with pytest.raises(error):
            await uow.step_executions.start(workflow.id, step, payload, attempt=attempt)  # type: ignore[arg-type]
        assert await uow.step_executions.get_for_workflow(workflow.id) == []


async def test_start_in_a_read_only_unit_of_work_is_refused(db: Database) -> None:
    workflow = await new_workflow(db)
    async with db.session(read_only=True) as uow:
        with pytest.raises(TransactionFailedError):
            await uow.step_executions.start(workflow.id, "s", {})


async def test_concurrent_starts_of_one_step_get_distinct_attempt_numbers(
    database_url: str,
) -> None:
    async with Database.from_url(database_url, max_connections=CONCURRENT, timeout_secs=30) as db:
        workflow = await new_workflow(db)
        await asyncio.gather(*(db.ping() for _ in range(CONCURRENT)))
        started = await asyncio.gather(*(start(db, workflow, "search") for _ in range(CONCURRENT)))
    assert sorted(e.attempt for e in started) == list(range(1, CONCURRENT + 1))
