"""The worked example of docs/workers.md (examples/worker.py) does what the page says."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from examples import worker
from tests.factories import (
    REPOSITORY,
    StepExecutionFactory,
    create_workflows,
    leased_workflow,
    stored_workflow,
    terminate_when_completed,
)

from ecl_persistence import (
    Database,
    JsonValue,
    Retry,
    StepExecution,
    StepExecutionState,
    Worker,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import utc_now

S = StepExecutionState
QUICK = Retry(max_attempts=3, delay_seconds=0.01)


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


def example_worker(db: Database, name: str, **options: object) -> Worker:
    return Worker(db, name, lease_seconds=worker.LEASE_SECONDS, poll_seconds=0.05, **options)  # type: ignore[arg-type]


async def test_two_example_workers_complete_every_workflow_once(db: Database) -> None:
    workflows = [Workflow.new("research", {"topic": f"t{n}"}) for n in range(6)]
    await create_workflows(db, *workflows)
    handled = await asyncio.gather(
        worker.run_worker(example_worker(db, "a", concurrency=2), until_idle=True),
        worker.run_worker(example_worker(db, "b"), until_idle=True),
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

    assert await worker.run_worker(example_worker(db, "b"), until_idle=True) == 1

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
    stopping = example_worker(db, "a")
    real_step = worker.run_step
    stops: list[asyncio.Task[None]] = []

    async def step_then_stop(step: str, wf: Workflow, outputs: dict[str, JsonValue]) -> JsonValue:
        # As SIGTERM would, in the middle of the first step, with no time to finish it.
        stops.append(asyncio.create_task(stopping.stop(grace_seconds=0)))
        await asyncio.sleep(5)
        return await real_step(step, wf, outputs)

    monkeypatch.setattr(worker, "run_step", step_then_stop)
    async with asyncio.timeout(30):
        assert await worker.run_worker(stopping) == 1
    await stops[0]

    released = await stored_workflow(db, workflow.id)
    assert (released.state, released.lease_owner) == (WorkflowState.PENDING, None)
    assert await history(db, workflow) == [("search", 1, S.FAILED)]  # its error: cancelled


async def test_a_failing_step_is_retried_then_fails_the_example_workflow(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = Workflow.new("research", {})
    await create_workflows(db, workflow)

    async def broken(step: str, wf: Workflow, outputs: dict[str, JsonValue]) -> JsonValue:
        raise TimeoutError("model did not answer")

    monkeypatch.setattr(worker, "run_step", broken)
    monkeypatch.setattr(worker, "RETRY", QUICK)
    await worker.run_worker(example_worker(db, "a"), until_idle=True)

    failed = await stored_workflow(db, workflow.id)
    assert (failed.state, failed.error) == (
        WorkflowState.FAILED,
        "TimeoutError: model did not answer",
    )
    assert await history(db, workflow) == [("search", n, S.FAILED) for n in (1, 2, 3)]
    assert (await moves(db, workflow))[-1] == (WorkflowState.RUNNING, WorkflowState.FAILED, "a")


async def test_the_example_worker_gives_up_a_workflow_that_stopped_too_many_workers(
    db: Database,
) -> None:
    # Every claim so far ended with a dead worker.
    workflow = expired(claim_count=worker.MAX_CLAIMS)
    await create_workflows(db, workflow)
    await worker.run_worker(example_worker(db, "a"), until_idle=True)
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
    await worker.run_worker(example_worker(db, "a"), until_idle=True)

    taken = await stored_workflow(db, workflow.id)
    assert (taken.state, taken.lease_owner) == (WorkflowState.RUNNING, "thief")
    # The step that ran under the lost lease could not record its success.
    assert await history(db, workflow) == [("search", 1, S.RUNNING)]


async def test_the_example_script_works_until_sigterm_then_exits_0(
    database_url: str, tmp_path: Path
) -> None:
    environment = {**os.environ, "ECL_DATABASE_URL": database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(REPOSITORY / "examples" / "worker.py"), "w1", "--seed", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path, env=environment,
    )  # fmt: skip
    async with Database.from_url(database_url) as db:
        [(out, err)] = await terminate_when_completed(db, [process], 3)
    assert process.returncode == 0, err
    assert out.strip() == "w1: handled 3 workflows"
