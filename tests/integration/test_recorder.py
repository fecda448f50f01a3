"""The step recorder: one attempt per run of a step, finished whatever the step does."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest
from tests.factories import new_workflow

from ecl_persistence import (
    MISSING,
    Database,
    NotFoundError,
    SerializationError,
    StepExecution,
    StepExecutionState,
    StepRecorder,
    ValidationError,
    Workflow,
)

S = StepExecutionState
SECRET = "s3cret-in-the-message"


class QuotaExceeded(Exception):
    pass


async def attempts(db: Database, workflow: Workflow, step: str = "search") -> list[StepExecution]:
    async with db.session(read_only=True) as uow:
        return await uow.step_executions.get_for_step(workflow.id, step)


async def test_a_clean_block_records_a_succeeded_attempt(db: Database) -> None:
    workflow = await new_workflow(db)
    async with StepRecorder(db).step(workflow.id, "search", {"q": "tides"}) as rec:
        assert rec.execution.state is S.RUNNING
        assert rec.output is MISSING
        rec.output = {"hits": 3}
        rec.tokens_used = 812

    (stored,) = await attempts(db, workflow)
    assert stored == rec.execution
    assert (stored.state, stored.attempt, stored.input) == (S.SUCCEEDED, 1, {"q": "tides"})
    assert (stored.output, stored.tokens_used, stored.error) == ({"hits": 3}, 812, None)
    assert stored.duration_ms is not None
    assert stored.duration_ms >= 0
    assert stored.completed_at is not None


async def test_the_running_attempt_is_committed_before_the_step_runs(db: Database) -> None:
    workflow = await new_workflow(db)
    async with StepRecorder(db).step(workflow.id, "search", {}) as rec:
        # Seen from another unit of work: a crash here would leave it visible.
        assert await attempts(db, workflow) == [rec.execution]
        assert rec.execution.state is S.RUNNING


async def test_a_raising_block_records_a_failed_attempt_and_the_exception_propagates(
    db: Database,
) -> None:
    workflow = await new_workflow(db)
    with pytest.raises(QuotaExceeded):
        async with StepRecorder(db).step(workflow.id, "search", {}) as rec:
            rec.tokens_used = 40
            raise QuotaExceeded("quota exceeded\x00 for today")

    (stored,) = await attempts(db, workflow)
    assert stored == rec.execution
    assert stored.state is S.FAILED
    assert stored.error == "QuotaExceeded: quota exceeded\ufffd for today"
    assert (stored.output, stored.tokens_used) == (MISSING, 40)
    assert stored.duration_ms is not None


async def test_a_cancelled_block_records_a_failed_attempt(db: Database) -> None:
    workflow = await new_workflow(db)
    started = asyncio.Event()

    async def step() -> None:
        async with StepRecorder(db).step(workflow.id, "search", {}):
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(step())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (stored,) = await attempts(db, workflow)
    assert (stored.state, stored.error) == (S.FAILED, "cancelled")


async def test_each_run_of_a_step_is_its_next_attempt(db: Database) -> None:
    workflow = await new_workflow(db)
    recorder = StepRecorder(db)
    with pytest.raises(QuotaExceeded):
        async with recorder.step(workflow.id, "search", {}):
            raise QuotaExceeded
    async with recorder.step(workflow.id, "search", {}):
        pass
    async with recorder.step(workflow.id, "search", {}, attempt=7, metadata={"model": "m"}):
        pass
    history = await attempts(db, workflow)
    assert [(e.attempt, e.state) for e in history] == [
        (1, S.FAILED),
        (2, S.SUCCEEDED),
        (7, S.SUCCEEDED),
    ]
    assert history[0].error == "QuotaExceeded"
    assert history[2].metadata == {"model": "m"}


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("output", {"x": math.inf}, SerializationError),
        ("output", "x" * 200, SerializationError),
        ("tokens_used", -1, ValidationError),
        ("tokens_used", 1.5, ValidationError),
    ],
    ids=["infinite-output", "output-over-the-limit", "negative-tokens", "float-tokens"],
)
async def test_an_unstorable_result_fails_the_step_where_it_is_set(
    database_url: str, field: str, value: object, error: type[Exception]
) -> None:
    async with Database.from_url(database_url, max_payload_bytes=100) as db:
        workflow = await new_workflow(db)
        with pytest.raises(error):
            async with StepRecorder(db).step(workflow.id, "search", {}) as rec:
                setattr(rec, field, value)
        (stored,) = await attempts(db, workflow)
    assert stored.state is S.FAILED
    assert stored.error is not None
    assert stored.error.startswith(error.__name__)


async def test_a_failure_that_cannot_be_recorded_still_raises_the_step_error(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    workflow = await new_workflow(db)
    with pytest.raises(QuotaExceeded), caplog.at_level(logging.WARNING):
        async with StepRecorder(db).step(workflow.id, "search", {}) as rec:
            async with db.session() as uow:
                await uow.workflows.delete(workflow.id)  # the attempt goes with it
            raise QuotaExceeded(SECRET)
    assert "NotFoundError" in caplog.text
    assert str(rec.execution.id) in caplog.text
    assert SECRET not in caplog.text


async def test_a_success_that_cannot_be_recorded_raises(db: Database) -> None:
    workflow = await new_workflow(db)
    with pytest.raises(NotFoundError):
        async with StepRecorder(db).step(workflow.id, "search", {}), db.session() as uow:
            await uow.workflows.delete(workflow.id)


async def test_a_step_of_a_missing_workflow_never_runs(db: Database) -> None:
    ran = False
    with pytest.raises(NotFoundError):
        async with StepRecorder(db).step(Workflow.new("research", {}).id, "search", {}):
            ran = True
    assert not ran


async def test_an_output_set_back_to_missing_stores_none(db: Database) -> None:
    workflow = await new_workflow(db)
    async with StepRecorder(db).step(workflow.id, "search", {}) as rec:
        rec.output = {"draft": True}
        rec.output = MISSING
    (stored,) = await attempts(db, workflow)
    assert (stored.state, stored.output) == (S.SUCCEEDED, MISSING)
