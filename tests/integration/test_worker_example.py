"""The worked example of docs/workers.md (examples/worker.py) does what the page says."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from examples import worker
from tests.factories import (
    StepExecutionFactory,
    create_workflows,
    leased_workflow,
    stored_workflow,
)

from ecl_persistence import (
    Database,
    JsonValue,
    StepExecution,
    StepExecutionState,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import utc_now

S = StepExecutionState


async def history(db: Database, workflow: Workflow) -> list[tuple[str, int, S]]:
    async with db.session(read_only=True) as uow:
        executions = await uow.step_executions.get_for_workflow(workflow.id)
    return sorted((e.step_id, e.attempt, e.state) for e in executions)


async def moves(db: Database, workflow: Workflow) -> list[tuple[object, ...]]:
    """The audit trail: each state change and who made it."""
    async with db.session(read_only=True) as uow:
        transitions = await uow.workflows.history(workflow.id)
    return [(t.from_state, t.to_state, t.actor) for t in transitions]


def expired(**fields: object) -> Workflow:
    """A workflow whose worker died: running, its lease over."""
    return leased_workflow("dead", utc_now() - timedelta(seconds=1), **fields)


async def test_two_example_workers_complete_every_workflow_once(db: Database) -> None:
    workflows = [Workflow.new("research", {"topic": f"t{n}"}) for n in range(6)]
    await create_workflows(db, *workflows)
    stop = asyncio.Event()
    handled = await asyncio.gather(
        worker.run_worker(db, "a", stop, exit_when_idle=True),
        worker.run_worker(db, "b", stop, exit_when_idle=True),
    )
    assert sum(handled) == len(workflows)
    for workflow in workflows:
        done = await stored_workflow(db, workflow.id)
        assert done.state is WorkflowState.COMPLETED
        assert isinstance(done.output, dict)
        assert sorted(done.output) == sorted(worker.STEPS)
        assert await history(db, workflow) == [(s, 1, S.SUCCEEDED) for s in sorted(worker.STEPS)]
        # Claimed and completed by the same worker, which the audit trail names.
        (_created, claimed, completed) = await moves(db, workflow)
        assert claimed[2] == completed[2] in {"a", "b"}
        assert completed[:2] == (WorkflowState.RUNNING, WorkflowState.COMPLETED)


async def test_the_example_worker_resumes_after_the_last_succeeded_step(db: Database) -> None:
    workflow = expired()
    done_before: JsonValue = {"hits": 3}
    steps: list[StepExecution] = [
        StepExecutionFactory.build(
            workflow_id=workflow.id,
            step_id="search",
            state=S.SUCCEEDED,
            output=done_before,
            completed_at=utc_now(),
        ),
        StepExecutionFactory.build(workflow_id=workflow.id, step_id="summarise"),  # crashed
    ]
    await create_workflows(db, workflow)
    async with db.session() as uow:
        await uow.step_executions.create_many(steps)

    assert await worker.run_worker(db, "b", asyncio.Event(), exit_when_idle=True) == 1

    done = await stored_workflow(db, workflow.id)
    assert done.state is WorkflowState.COMPLETED
    assert isinstance(done.output, dict)
    assert done.output["search"] == done_before
    assert await history(db, workflow) == [
        ("search", 1, S.SUCCEEDED),
        ("summarise", 1, S.RUNNING),
        ("summarise", 2, S.SUCCEEDED),
    ]


async def test_a_stopped_example_worker_gives_its_workflow_back(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = Workflow.new("research", {})
    await create_workflows(db, workflow)
    stop = asyncio.Event()
    real_step = worker.run_step

    async def step_then_stop(step: str, wf: Workflow, outputs: dict[str, JsonValue]) -> JsonValue:
        stop.set()  # as SIGTERM would, in the middle of the first step
        return await real_step(step, wf, outputs)

    monkeypatch.setattr(worker, "run_step", step_then_stop)
    assert await worker.run_worker(db, "a", stop) == 1

    released = await stored_workflow(db, workflow.id)
    assert released.state is WorkflowState.PENDING
    assert released.lease_owner is None
    assert await history(db, workflow) == [("search", 1, S.SUCCEEDED)]


async def test_a_failing_step_fails_the_example_workflow(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = Workflow.new("research", {})
    await create_workflows(db, workflow)

    async def broken(step: str, wf: Workflow, outputs: dict[str, JsonValue]) -> JsonValue:
        raise TimeoutError("model did not answer")

    monkeypatch.setattr(worker, "run_step", broken)
    await worker.run_worker(db, "a", asyncio.Event(), exit_when_idle=True)

    failed = await stored_workflow(db, workflow.id)
    assert (failed.state, failed.error) == (
        WorkflowState.FAILED,
        "TimeoutError: model did not answer",
    )
    assert await history(db, workflow) == [("search", 1, S.FAILED)]
    assert (await moves(db, workflow))[-1] == (WorkflowState.RUNNING, WorkflowState.FAILED, "a")


async def test_the_example_worker_gives_up_a_workflow_that_stopped_too_many_workers(
    db: Database,
) -> None:
    # Every claim so far ended with a dead worker.
    workflow = expired(claim_count=worker.MAX_CLAIMS)
    await create_workflows(db, workflow)
    await worker.run_worker(db, "a", asyncio.Event(), exit_when_idle=True)
    given_up = await stored_workflow(db, workflow.id)
    assert given_up.state is WorkflowState.FAILED
    assert given_up.error is not None
    assert "given up" in given_up.error
    assert await history(db, workflow) == []


async def test_the_example_worker_drops_a_workflow_another_worker_took_over(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = Workflow.new("research", {})
    await create_workflows(db, workflow)
    real_step = worker.run_step

    async def slow_step(step: str, wf: Workflow, outputs: dict[str, JsonValue]) -> JsonValue:
        # Meanwhile the lease ran out and another worker claimed the workflow.
        async with db.session() as uow:
            later = utc_now() + timedelta(seconds=worker.LEASE_SECONDS + 1)
            assert await uow.workflows.claim("thief", now=later)
        return await real_step(step, wf, outputs)

    monkeypatch.setattr(worker, "run_step", slow_step)
    await worker.run_worker(db, "a", asyncio.Event(), exit_when_idle=True)

    taken = await stored_workflow(db, workflow.id)
    assert (taken.state, taken.lease_owner) == (WorkflowState.RUNNING, "thief")
