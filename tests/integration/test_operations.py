"""Cancel, retry and fork workflows, in one process, on both backends (``docs/operations.md``)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from tests.factories import (
    WorkflowFactory,
    claim_one,
    create_workflows,
    leased_workflow,
    snapshot,
    stored_workflow,
)

from ecl_persistence import (
    ConflictError,
    Database,
    InvalidStateTransitionError,
    JsonValue,
    LeaseLostError,
    NotFoundError,
    Retry,
    StepExecutionState,
    StepRecording,
    ValidationError,
    Worker,
    Workflow,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.domain import new_uuid7, utc_now

W = WorkflowState
S = StepExecutionState
STEPS = ("search", "summarise", "publish")


async def trail(db: Database, workflow: Workflow) -> list[tuple[object, ...]]:
    async with db.session(read_only=True) as uow:
        return [
            (t.from_state, t.to_state, t.actor, t.reason)
            for t in await uow.workflows.history(workflow.id)
        ]


async def test_cancel_a_pending_workflow_cancels_it_at_once_in_the_audit_trail(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    async with db.session() as uow:
        cancelled = await uow.workflows.cancel(workflow.id, reason="wrong topic", actor="ana")
    assert cancelled.state is W.CANCELLED
    assert cancelled.completed_at is not None
    assert cancelled.version == 2
    assert await stored_workflow(db, workflow.id) == cancelled
    assert (await trail(db, workflow))[-1] == (W.PENDING, W.CANCELLED, "ana", "wrong topic")
    async with db.session(read_only=True) as uow:
        assert [w.id for w in await uow.workflows.list_by_state(W.CANCELLED)] == [workflow.id]
    # Finished: no claim takes it.
    async with db.session() as uow:
        assert await uow.workflows.claim("w1") == []


async def test_cancel_a_failed_workflow_keeps_its_error(db: Database) -> None:
    workflow = WorkflowFactory.build(state=W.FAILED, error="boom", completed_at=utc_now())
    await create_workflows(db, workflow)
    async with db.session() as uow:
        cancelled = await uow.workflows.cancel(str(workflow.id))
    assert (cancelled.state, cancelled.error) == (W.CANCELLED, "boom")
    assert (await trail(db, workflow))[-1] == (W.FAILED, W.CANCELLED, None, "cancelled")


@pytest.mark.parametrize("state", [W.COMPLETED, W.CANCELLED])
async def test_cancel_a_finished_workflow_raises_and_changes_nothing(
    db: Database, state: WorkflowState
) -> None:
    workflow = WorkflowFactory.build(state=state, completed_at=utc_now())
    await create_workflows(db, workflow)
    before = await snapshot(db)
    with pytest.raises(InvalidStateTransitionError, match=state.value):
        async with db.session() as uow:
            await uow.workflows.cancel(workflow.id, actor="ana")
    assert await snapshot(db) == before


async def test_cancel_an_unknown_workflow_raises_not_found(db: Database) -> None:
    with pytest.raises(NotFoundError):
        async with db.session() as uow:
            await uow.workflows.cancel(WorkflowId(new_uuid7()))
    with pytest.raises(ValidationError):
        async with db.session() as uow:
            await uow.workflows.cancel("not-a-uuid")


async def test_cancel_a_running_workflow_asks_its_worker_and_no_claim_takes_it(
    db: Database,
) -> None:
    await create_workflows(db, WorkflowFactory.build())
    claimed = await claim_one(db, "w1", lease_seconds=60)
    async with db.session() as uow:
        asked = await uow.workflows.cancel(claimed.id, reason="runaway", actor="ana")
    assert asked.state is W.RUNNING
    assert asked.cancel_requested_at is not None
    assert asked.lease_owner == "w1"
    assert asked.version == claimed.version + 1
    # Asking again changes nothing.
    async with db.session() as uow:
        again = await uow.workflows.cancel(claimed.id, reason="again", actor="bo")
    assert again == asked
    assert (await trail(db, claimed))[-1] == (W.RUNNING, W.RUNNING, "ana", "runaway")
    assert len(await trail(db, claimed)) == 3
    # The worker's heartbeat shows the request; its lease still fences its writes.
    async with db.session() as uow:
        beaten = await uow.workflows.heartbeat(claimed.id, "w1", lease=claimed.lease)
    assert beaten.cancel_requested_at == asked.cancel_requested_at
    # Even once its lease expired, no claim takes it (neither by id).
    later = utc_now() + timedelta(minutes=5)
    async with db.session() as uow:
        assert await uow.workflows.claim("w2", now=later) == []
    with pytest.raises(ConflictError, match="cancel"):
        async with db.session() as uow:
            await uow.workflows.claim_by_id(claimed.id, "w2", now=later)


async def test_cancel_a_running_workflow_whose_lease_expired_cancels_it_and_fences_the_worker(
    db: Database,
) -> None:
    workflow = leased_workflow("w1", utc_now() - timedelta(seconds=1))
    await create_workflows(db, workflow)
    async with db.session() as uow:
        cancelled = await uow.workflows.cancel(workflow.id, actor="ana")
    assert (cancelled.state, cancelled.lease_owner) == (W.CANCELLED, None)
    assert workflow.lease is not None
    with pytest.raises(LeaseLostError):
        async with db.session() as uow:
            await uow.workflows.update_state(workflow.id, W.COMPLETED, lease=workflow.lease)


async def test_retry_makes_a_failed_or_cancelled_workflow_pending_and_keeps_history(
    db: Database,
) -> None:
    failed = WorkflowFactory.build(state=W.FAILED, error="boom", completed_at=utc_now())
    pending = WorkflowFactory.build()
    await create_workflows(db, failed, pending)
    async with db.session() as uow:
        retried = await uow.workflows.retry(failed.id, actor="ana")
    assert (retried.state, retried.error, retried.completed_at) == (W.PENDING, None, None)
    assert (await trail(db, failed))[-1] == (W.FAILED, W.PENDING, "ana", "retry")
    with pytest.raises(InvalidStateTransitionError):
        async with db.session() as uow:
            await uow.workflows.retry(pending.id)
    with pytest.raises(NotFoundError):
        async with db.session() as uow:
            await uow.workflows.retry(WorkflowId(new_uuid7()))
    # Cancelled (here: after a request its worker answered) and retried: claimable again.
    claimed = await claim_one(db, "w1")
    async with db.session() as uow:
        await uow.workflows.cancel(claimed.id, actor="ana")
        await uow.workflows.update_state(claimed.id, W.CANCELLED, lease=claimed.lease)
    async with db.session() as uow:
        again = await uow.workflows.retry(claimed.id, reason="try once more")
    assert (again.state, again.cancel_requested_at) == (W.PENDING, None)
    assert (await trail(db, claimed))[-1] == (W.CANCELLED, W.PENDING, None, "try once more")
    assert (await claim_one(db, "w2")).id == claimed.id


def counting_steps(calls: Counter[str], *, failing: str | None = None) -> dict[str, object]:
    async def step(recording: StepRecording) -> JsonValue:
        name = str(recording.execution.step_id)
        calls[name] += 1
        if name == failing:
            raise RuntimeError("the model timed out")
        return {"from": name, "attempt": recording.attempt}

    return {name: step for name in STEPS}


async def run_all(db: Database, calls: Counter[str], *, failing: str | None = None) -> None:
    """One worker runs every claimable workflow through STEPS, counting the calls."""
    steps = counting_steps(calls, failing=failing)
    async for run in Worker(db, "w1").runs(until_idle=True):
        async with run:
            for name in STEPS:
                await run.step(name, {"step": name}, steps[name], retry=Retry(max_attempts=1))  # type: ignore[arg-type]


async def test_retry_after_a_failure_runs_only_the_steps_that_did_not_succeed(
    db: Database,
) -> None:
    workflow = Workflow.new("research", {"topic": "tides"})
    await create_workflows(db, workflow)
    calls: Counter[str] = Counter()
    await run_all(db, calls, failing="summarise")
    assert (await stored_workflow(db, workflow.id)).state is W.FAILED
    assert calls == {"search": 1, "summarise": 1}

    async with db.session() as uow:
        await uow.workflows.retry(workflow.id, actor="ana")
    await run_all(db, calls)

    assert (await stored_workflow(db, workflow.id)).state is W.COMPLETED
    # search succeeded the first time and is never called again.
    assert calls == {"search": 1, "summarise": 2, "publish": 1}
    async with db.session(read_only=True) as uow:
        attempts = await uow.step_executions.get_for_workflow(workflow.id)
    assert [(a.step_id, a.attempt, a.state) for a in attempts] == [
        ("search", 1, S.SUCCEEDED),
        ("summarise", 1, S.FAILED),
        ("summarise", 2, S.SUCCEEDED),
        ("publish", 1, S.SUCCEEDED),
    ]


async def test_fork_from_the_middle_step_reruns_only_it_and_what_follows(db: Database) -> None:
    original = Workflow.new("research", {"topic": "tides"}, priority=3, concurrency_key="t1")
    await create_workflows(db, original)
    calls: Counter[str] = Counter()
    await run_all(db, calls)
    assert calls == dict.fromkeys(STEPS, 1)
    before = await snapshot(db)

    async with db.session() as uow:
        fork = await uow.workflows.fork(original.id, from_step="summarise", actor="ana")
    assert (fork.state, fork.forked_from, fork.definition_id) == (
        W.PENDING,
        original.id,
        "research",
    )
    assert (fork.input, fork.priority, fork.concurrency_key) == (original.input, 3, "t1")
    async with db.session(read_only=True) as uow:
        original_attempts = await uow.step_executions.get_for_workflow(original.id)
        aggregate = await uow.workflows.load(fork.id)
    assert aggregate is not None
    assert aggregate.forked_from == original.id
    (copy,) = aggregate.step_executions
    (search,) = [a for a in original_attempts if a.step_id == "search"]
    assert copy.copied_from == search.id
    assert copy.id != search.id
    assert (copy.step_id, copy.output, copy.state, copy.started_at) == (
        "search",
        search.output,
        S.SUCCEEDED,
        search.started_at,
    )
    created = aggregate.transitions[0]
    assert (created.actor, created.reason) == (
        "ana",
        f"forked from workflow {original.id} at step summarise",
    )
    # The original is unchanged: the fork only added rows of its own.
    after = await snapshot(db)
    for table, rows in before.items():
        assert all(row in after[table] for row in rows)

    await run_all(db, calls)
    assert calls == {"search": 1, "summarise": 2, "publish": 2}
    done = await stored_workflow(db, fork.id)
    assert done.state is W.COMPLETED
    assert done.output is not None


async def test_fork_with_a_new_input_and_of_a_running_workflow_is_a_snapshot(
    db: Database,
) -> None:
    await create_workflows(db, Workflow.new("research", {"topic": "tides"}))
    claimed = await claim_one(db, "w1")
    async with db.session() as uow:
        done = await uow.step_executions.start(claimed.id, "search", {}, lease=claimed.lease)
        await uow.step_executions.update_completion(done.id, S.SUCCEEDED, output={"hits": 1})
        await uow.step_executions.start(claimed.id, "summarise", {}, lease=claimed.lease)
    async with db.session() as uow:
        fork = await uow.workflows.fork(claimed.id, from_step="summarise", input={"topic": "x"})
    async with db.session(read_only=True) as uow:
        copies = await uow.step_executions.get_for_workflow(fork.id)
    assert fork.input == {"topic": "x"}
    assert [(c.step_id, c.copied_from, c.output) for c in copies] == [
        ("search", done.id, {"hits": 1})
    ]
    assert (await stored_workflow(db, claimed.id)).state is W.RUNNING


async def test_fork_from_an_unknown_step_or_workflow_raises_and_writes_nothing(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build(state=W.FAILED, completed_at=utc_now())
    await create_workflows(db, workflow)
    before = await snapshot(db)
    with pytest.raises(ValidationError, match="no step"):
        async with db.session() as uow:
            await uow.workflows.fork(workflow.id, from_step="nowhere")
    with pytest.raises(NotFoundError):
        async with db.session() as uow:
            await uow.workflows.fork(WorkflowId(new_uuid7()), from_step="search")
    with pytest.raises(ValidationError):
        async with db.session() as uow:
            await uow.workflows.fork(workflow.id, from_step="")
    assert await snapshot(db) == before
