"""``run.step``: memoized by the stored history, retried by its policy, on both backends."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from tests.factories import (
    StepExecutionFactory,
    WorkflowFactory,
    at,
    create_step_executions,
    create_workflows,
    leased_workflow,
    stored_workflow,
)

from ecl_persistence import (
    Artifact,
    AttemptsExhaustedError,
    ConnectionFailedError,
    Database,
    JsonValue,
    LeaseLostError,
    Retry,
    StepExecution,
    StepExecutionRepository,
    StepExecutionState,
    StepRecording,
    ValidationError,
    Worker,
    Workflow,
    WorkflowRun,
    WorkflowState,
)
from ecl_persistence.domain import utc_now

S = StepExecutionState
QUICK = Retry(max_attempts=3, delay_seconds=0.01)


class Calls:
    """A step function that records its calls and fails its first ``failures`` of them."""

    def __init__(self, failures: int = 0, output: JsonValue = None) -> None:
        self.failures = failures
        self.output: JsonValue = {"hits": 3} if output is None else output
        self.seen: list[tuple[JsonValue, int]] = []

    async def __call__(self, recording: StepRecording) -> JsonValue:
        self.seen.append((recording.input, recording.attempt))
        if len(self.seen) <= self.failures:
            raise TimeoutError(f"attempt {recording.attempt} timed out")
        recording.tokens_used = 7
        return self.output


async def attempts(db: Database, workflow: Workflow, step: str = "search") -> list[StepExecution]:
    async with db.session(read_only=True) as uow:
        return await uow.step_executions.get_for_step(workflow.id, step)


async def one_run(db: Database, **options: Any) -> WorkflowRun:
    worker = Worker(db, "w1", poll_seconds=0.05, **options)
    async for run in worker.runs(until_idle=True):
        return run
    pytest.fail("nothing to claim")


def expired(**fields: Any) -> Workflow:
    """A workflow whose worker died: running, its lease over."""
    return leased_workflow("dead", utc_now() - timedelta(seconds=1), **fields)


def attempt(workflow: Workflow, number: int, state: S, **fields: Any) -> StepExecution:
    fields.setdefault("error", "TimeoutError: slow" if state is S.FAILED else None)
    return StepExecutionFactory.build(
        workflow_id=workflow.id,
        step_id="search",
        attempt=number,
        state=state,
        started_at=at(number),
        completed_at=None if state is S.RUNNING else at(number, minutes=1),
        **fields,
    )


async def test_a_step_runs_once_records_its_attempt_and_returns_its_output(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    step = Calls(output={"hits": 3})
    async with await one_run(db) as run:
        first = await run.step("search", {"q": "tides"}, step)
        again = await run.step("search", {"q": "ignored"}, step)
    assert first == again == {"hits": 3}
    assert step.seen == [({"q": "tides"}, 1)]
    (recorded,) = await attempts(db, workflow)
    assert (recorded.state, recorded.output, recorded.tokens_used) == (S.SUCCEEDED, {"hits": 3}, 7)
    assert recorded.duration_ms is not None
    assert (await stored_workflow(db, workflow.id)).state is WorkflowState.COMPLETED


async def test_a_step_that_already_succeeded_returns_its_stored_output_without_running(
    db: Database,
) -> None:
    workflow = expired()
    await create_workflows(db, workflow)
    await create_step_executions(
        db,
        attempt(workflow, 1, S.FAILED),
        attempt(workflow, 2, S.SUCCEEDED, output={"stored": True}),
    )
    step = Calls()
    async with await one_run(db) as run:
        assert run.resume_point.is_done("search")
        assert await run.step("search", {}, step) == {"stored": True}
    assert step.seen == []
    assert len(await attempts(db, workflow)) == 2


async def test_a_failing_step_is_retried_and_its_attempts_recorded(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    step = Calls(failures=2)
    async with await one_run(db) as run:
        assert await run.step("search", {}, step, retry=QUICK) == {"hits": 3}
    assert [n for _, n in step.seen] == [1, 2, 3]
    assert [(e.attempt, e.state, e.error) for e in await attempts(db, workflow)] == [
        (1, S.FAILED, "TimeoutError: attempt 1 timed out"),
        (2, S.FAILED, "TimeoutError: attempt 2 timed out"),
        (3, S.SUCCEEDED, None),
    ]


async def test_attempts_continue_from_the_stored_history_and_count_its_failures(
    db: Database,
) -> None:
    """A resumed workflow whose step failed twice before starts at attempt 3, its last."""
    workflow = expired()
    await create_workflows(db, workflow)
    await create_step_executions(db, attempt(workflow, 1, S.FAILED), attempt(workflow, 2, S.FAILED))
    step = Calls(failures=1)
    reached = []
    async with await one_run(db) as run:
        await run.step("search", {}, step, retry=QUICK)
        reached.append("after the step")
    assert reached == []
    assert [n for _, n in step.seen] == [3]
    failed = await stored_workflow(db, workflow.id)
    assert (failed.state, failed.error) == (
        WorkflowState.FAILED,
        "TimeoutError: attempt 3 timed out",
    )


async def test_interrupted_and_cancelled_attempts_do_not_use_up_the_retries(db: Database) -> None:
    workflow = expired()
    await create_workflows(db, workflow)
    await create_step_executions(
        db,
        attempt(workflow, 1, S.RUNNING),  # its worker died
        attempt(workflow, 2, S.FAILED, error="cancelled"),  # its worker shut down
        attempt(workflow, 3, S.FAILED),
    )
    step = Calls(failures=1)
    async with await one_run(db) as run:
        assert await run.step("search", {}, step, retry=QUICK) == {"hits": 3}
    assert [n for _, n in step.seen] == [4, 5]


async def test_a_step_whose_stored_history_used_every_attempt_is_not_run_again(
    db: Database,
) -> None:
    workflow = expired()
    await create_workflows(db, workflow)
    await create_step_executions(db, *(attempt(workflow, n, S.FAILED) for n in (1, 2, 3)))
    step = Calls()
    async with await one_run(db) as run:
        with pytest.raises(AttemptsExhaustedError, match="already failed 3 times") as spent:
            await run.step("search", {}, step, retry=QUICK)
        await run.fail(spent.value)
    assert (spent.value.step_id, spent.value.workflow_id) == ("search", workflow.id)
    assert step.seen == []
    failed = await stored_workflow(db, workflow.id)
    assert failed.state is WorkflowState.FAILED
    assert failed.error is not None
    assert failed.error.startswith("AttemptsExhaustedError: step 'search'")


async def test_retry_none_means_one_attempt(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    step = Calls(failures=1)
    async with await one_run(db) as run:
        await run.step("search", {}, step, retry=None)
    assert len(step.seen) == 1
    assert (await stored_workflow(db, workflow.id)).state is WorkflowState.FAILED


async def test_a_short_retry_delay_is_waited_under_the_lease(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    step = Calls(failures=1)
    async with await one_run(db, lease_seconds=5) as run:
        await run.step("search", {}, step, retry=Retry(delay_seconds=0.3))
    first, second = await attempts(db, workflow)
    assert first.completed_at is not None
    assert second.started_at - first.completed_at >= timedelta(seconds=0.3)
    done = await stored_workflow(db, workflow.id)
    assert (done.state, done.claim_count) == (WorkflowState.COMPLETED, 1)


async def test_a_retry_delay_past_the_lease_releases_the_workflow_until_the_retry_is_due(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    step = Calls(failures=1)
    after_the_step: list[str] = []
    later = Retry(delay_seconds=600, max_delay_seconds=600)
    run = await one_run(db, lease_seconds=30)
    before = utc_now()
    async with run:
        await run.step("search", {}, step, retry=later)
        after_the_step.append("never")
    assert after_the_step == []
    assert run.ended
    assert not run.lost
    released = await stored_workflow(db, workflow.id)
    assert (released.state, released.lease_owner) == (WorkflowState.PENDING, None)
    assert released.run_after is not None
    assert (
        before + timedelta(seconds=600) <= released.run_after <= utc_now() + timedelta(seconds=600)
    )
    async with db.session() as uow:
        assert await uow.workflows.claim("w2", now=released.run_after - timedelta(seconds=1)) == []
        history = await uow.workflows.history(workflow.id)
    assert history[-1].reason == "step search retries after 600 s"

    # Once due, the next claim resumes it: the step runs as its attempt 2.
    async with db.session() as uow:
        (again,) = await uow.workflows.claim("w2", now=released.run_after)
    assert again.id == workflow.id
    assert [(e.attempt, e.state) for e in await attempts(db, workflow)] == [(1, S.FAILED)]


async def test_a_step_output_that_cannot_be_stored_fails_that_attempt(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)

    async def unstorable(recording: StepRecording) -> Any:
        return {"x": float("nan")}

    async with await one_run(db) as run:
        await run.step("search", {}, unstorable, retry=None)
    ((number, state, error),) = [
        (e.attempt, e.state, e.error) for e in await attempts(db, workflow)
    ]
    assert (number, state) == (1, S.FAILED)
    assert error is not None
    assert error.startswith("SerializationError: output")
    failed = await stored_workflow(db, workflow.id)
    assert (failed.state, failed.error) == (WorkflowState.FAILED, error)


async def test_step_metadata_set_by_the_step_is_stored_with_its_attempt(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)

    async def tagged(recording: StepRecording) -> JsonValue:
        recording.metadata = {"model": "tiny", "temperature": 0.2}
        with pytest.raises(TypeError):
            recording.metadata["model"] = "other"  # type: ignore[index,unused-ignore]
        return "ok"

    async with await one_run(db) as run:
        await run.step("search", {}, tagged)
    (recorded,) = await attempts(db, workflow)
    assert recorded.metadata == {"model": "tiny", "temperature": 0.2}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"step_id": ""}, "step_id"),
        ({"step_id": 3}, "step_id"),
        ({"fn": "not callable"}, "fn"),
        ({"retry": 3}, "retry"),
    ],
)
async def test_step_refuses_bad_arguments_before_recording_anything(
    db: Database, arguments: dict[str, Any], message: str
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    call: dict[str, Any] = {"step_id": "search", "input": {}, "fn": Calls(), **arguments}
    async with await one_run(db) as run:
        with pytest.raises(ValidationError, match=message):
            await run.step(call.pop("step_id"), call.pop("input"), call.pop("fn"), **call)
        await run.release()
    assert await attempts(db, workflow) == []


async def test_a_step_of_a_run_that_lost_its_lease_never_runs(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    step = Calls()
    run = await one_run(db, lease_seconds=60)
    async with run:
        async with db.session() as uow:
            # Another worker's claim, as if the lease had run out.
            (theirs,) = await uow.workflows.claim("w2", now=utc_now() + timedelta(seconds=61))
        with pytest.raises(LeaseLostError):
            await run.step("search", {}, step)
        assert run.lost
        with pytest.raises(LeaseLostError, match="lost its lease"):
            await run.step("search", {}, step)
    assert step.seen == []
    assert await attempts(db, workflow) == []
    assert await stored_workflow(db, workflow.id) == theirs


async def test_steps_of_one_run_may_run_side_by_side(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    async with await one_run(db) as run:
        outputs = await asyncio.gather(
            *(run.step(f"part-{n}", {"n": n}, Calls(output={"n": n})) for n in range(4))
        )
    assert outputs == [{"n": n} for n in range(4)]
    async with db.session(read_only=True) as uow:
        recorded = await uow.step_executions.get_for_workflow(workflow.id)
    assert sorted((e.step_id, e.attempt, e.state) for e in recorded) == [
        (f"part-{n}", 1, S.SUCCEEDED) for n in range(4)
    ]


async def test_a_step_whose_attempt_cannot_be_recorded_never_runs_nor_counts_as_failed(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)

    async def unreachable(self: StepExecutionRepository, *args: Any, **options: Any) -> Any:
        raise ConnectionFailedError("the server went away")

    monkeypatch.setattr(StepExecutionRepository, "start", unreachable)
    step = Calls()
    async with await one_run(db) as run:
        await run.step("search", {}, step, retry=QUICK)
    assert step.seen == []
    # A database error that may pass: the workflow is given back, not failed.
    released = await stored_workflow(db, workflow.id)
    assert (released.state, released.error) == (WorkflowState.PENDING, None)


async def test_a_step_that_finds_the_lease_lost_is_not_retried(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    calls = 0
    run = await one_run(db, lease_seconds=60)

    async def writes_late(recording: StepRecording) -> JsonValue:
        nonlocal calls
        calls += 1
        async with db.session() as uow:
            await uow.workflows.claim("w2", now=utc_now() + timedelta(seconds=61))
        await run.add_artifact(Artifact.new(workflow.id, "search", "a", path="a", size_bytes=1))
        return None

    async with run:
        await run.step("search", {}, writes_late, retry=QUICK)
    assert calls == 1
    assert run.lost


async def test_a_step_that_used_its_attempts_in_this_run_is_not_run_again(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    step = Calls(failures=10)
    async with await one_run(db) as run:
        with pytest.raises(TimeoutError):
            await run.step("search", {}, step, retry=QUICK)
        with pytest.raises(AttemptsExhaustedError):
            await run.step("search", {}, step, retry=QUICK)
        await run.release()
    assert len(step.seen) == 3
