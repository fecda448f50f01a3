"""Fenced writes: a write made under a lease that is no longer current changes nothing.

Every writing repository method takes ``lease=`` (a :class:`Lease`: the
workflow, its owner, the claim count) and checks it in the statement that
writes. Both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import attrs
import pytest
from tests.factories import (
    WorkflowFactory,
    at,
    claim_one,
    create_workflows,
    snapshot,
    statements_run,
    stored_workflow,
)

from ecl_persistence import (
    Artifact,
    ConflictError,
    Database,
    InvalidStateTransitionError,
    Lease,
    LeaseLostError,
    NotFoundError,
    StepExecution,
    StepExecutionState,
    ValidationError,
    Workflow,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.domain import new_uuid7
from ecl_persistence.unit_of_work import UnitOfWork

S = StepExecutionState


@attrs.frozen
class Claimed:
    """A workflow claimed by ``w1`` at ``at(0)`` (lease 10 s), with a running attempt."""

    workflow: Workflow
    lease: Lease
    running: StepExecution


async def claimed(db: Database) -> Claimed:
    workflow = WorkflowFactory.build(created_at=at(-1))
    await create_workflows(db, workflow)
    mine = await claim_one(db, "w1", lease_seconds=10, now=at(0))
    assert mine.lease is not None
    async with db.session() as uow:
        running = await uow.step_executions.start(workflow.id, "search", {}, lease=mine.lease)
    return Claimed(mine, mine.lease, running)


Write = Callable[[UnitOfWork, Claimed], Awaitable[object]]

WRITES: dict[str, Write] = {
    "step_executions.start": lambda uow, c: uow.step_executions.start(
        c.workflow.id, "summarise", {"n": 1}, lease=c.lease
    ),
    "step_executions.start-attempt": lambda uow, c: uow.step_executions.start(
        c.workflow.id, "summarise", {}, attempt=7, lease=c.lease
    ),
    "step_executions.create": lambda uow, c: uow.step_executions.create(
        StepExecution.start(c.workflow.id, "publish", {}), lease=c.lease
    ),
    "step_executions.update_completion": lambda uow, c: uow.step_executions.update_completion(
        c.running.id, S.SUCCEEDED, output={"hits": 3}, tokens_used=5, lease=c.lease
    ),
    "artifacts.create": lambda uow, c: uow.artifacts.create(
        Artifact.new(c.workflow.id, "search", "hits.json", path="a/hits.json", size_bytes=9),
        lease=c.lease,
    ),
    "workflows.update_output": lambda uow, c: uow.workflows.update_output(
        c.workflow.id, {"summary": "tides"}, lease=c.lease
    ),
    "workflows.update_state-completed": lambda uow, c: uow.workflows.update_state(
        c.workflow.id, WorkflowState.COMPLETED, actor="w1", lease=c.lease
    ),
    "workflows.update_state-failed": lambda uow, c: uow.workflows.update_state(
        c.workflow.id, WorkflowState.FAILED, "boom", lease=c.lease
    ),
    "workflows.heartbeat": lambda uow, c: uow.workflows.heartbeat(
        c.workflow.id, "w1", now=at(1), lease=c.lease
    ),
    "workflows.release": lambda uow, c: uow.workflows.release(
        c.workflow.id, "w1", lease=c.lease, run_after=at(60)
    ),
}


async def write(db: Database, name: str, c: Claimed) -> object:
    async with db.session() as uow:
        return await WRITES[name](uow, c)


@pytest.mark.parametrize("name", list(WRITES))
async def test_a_write_under_the_current_lease_is_made(db: Database, name: str) -> None:
    c = await claimed(db)
    before = await snapshot(db)
    await write(db, name, c)
    assert await snapshot(db) != before


async def _taken_over(db: Database, c: Claimed) -> Workflow:
    return await claim_one(db, "w2", now=at(11))


async def _released(db: Database, c: Claimed) -> Workflow:
    async with db.session() as uow:
        return await uow.workflows.release(c.workflow.id, "w1")


async def _reclaimed_by_the_same_worker(db: Database, c: Claimed) -> Workflow:
    # The same owner, a later claim: only the claim count tells the leases apart.
    return await claim_one(db, "w1", now=at(11))


async def _finished_by_the_next_owner(db: Database, c: Claimed) -> Workflow:
    theirs = await claim_one(db, "w2", now=at(11))
    async with db.session() as uow:
        return await uow.workflows.update_state(
            theirs.id, WorkflowState.COMPLETED, lease=theirs.lease
        )


LOSSES: dict[str, Callable[[Database, Claimed], Awaitable[Workflow]]] = {
    "taken-over": _taken_over,
    "released": _released,
    "reclaimed-by-the-same-worker": _reclaimed_by_the_same_worker,
    "finished-by-the-next-owner": _finished_by_the_next_owner,
}


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("name", list(WRITES))
async def test_a_write_under_a_lease_no_longer_current_changes_nothing(
    db: Database, name: str, loss: str
) -> None:
    c = await claimed(db)
    now_held = await LOSSES[loss](db, c)
    before = await snapshot(db)

    with pytest.raises(LeaseLostError) as lost:
        await write(db, name, c)

    assert await snapshot(db) == before
    assert isinstance(lost.value, ConflictError)
    assert lost.value.retryable is False
    assert lost.value.workflow_id == c.workflow.id
    assert "(claim 1)" in str(lost.value)
    if now_held.lease_owner is not None:
        assert f"{now_held.lease_owner!r} under claim {now_held.claim_count}" in str(lost.value)


@pytest.mark.parametrize(
    "name", ["step_executions.update_completion", "artifacts.create", "workflows.update_output"]
)
async def test_the_lease_is_checked_in_the_statement_that_writes(db: Database, name: str) -> None:
    c = await claimed(db)
    with statements_run(db) as sent:
        await write(db, name, c)
    (statement,) = [s for s in sent if not s.lstrip().upper().startswith(("BEGIN", "COMMIT"))]
    assert "claim_count" in statement


async def test_a_fenced_write_waiting_behind_a_takeover_sees_the_takeover(
    database_url: str,
) -> None:
    """The check is made on the row as the takeover left it, not as it was before."""
    async with Database.from_url(database_url, timeout_secs=30) as db:
        c = await claimed(db)
        before_takeover = await snapshot(db)
        async with db.session() as takeover:
            await takeover.workflows.claim_by_id(c.workflow.id, "w2", now=at(11))
            completing = asyncio.create_task(
                write(db, "step_executions.update_completion", c), name="fenced write"
            )
            await asyncio.sleep(0.3)
            # It waits for the takeover's lock (a row lock; SQLite's write lock).
            assert not completing.done()
        with pytest.raises(LeaseLostError):
            await completing
        after = await snapshot(db)
    assert after["step_executions"] == before_takeover["step_executions"]
    assert after["workflows"] != before_takeover["workflows"]


async def test_fenced_writes_and_claims_of_many_workflows_never_deadlock(
    database_url: str,
) -> None:
    async with Database.from_url(database_url, max_connections=8, timeout_secs=30) as db:
        workflows = [WorkflowFactory.build(created_at=at(n)) for n in range(12)]
        await create_workflows(db, *workflows)
        async with db.session() as uow:
            mine = await uow.workflows.claim("w1", lease_seconds=1, limit=12, now=at(0))

        async def work(workflow: Workflow) -> None:
            lease = workflow.lease
            assert lease is not None
            try:
                async with db.session() as uow:
                    done = await uow.step_executions.start(workflow.id, "s", {}, lease=lease)
                    await uow.artifacts.create(
                        Artifact.new(workflow.id, "s", "out", path="o", size_bytes=1), lease=lease
                    )
                    await uow.step_executions.update_completion(done.id, S.SUCCEEDED, lease=lease)
                    await uow.workflows.update_state(
                        workflow.id, WorkflowState.COMPLETED, lease=lease
                    )
            except LeaseLostError:
                pass  # taken over first: nothing of it landed

        async def take_over() -> list[Workflow]:
            async with db.session() as uow:
                return await uow.workflows.claim("w2", limit=12, now=at(5))

        results = await asyncio.gather(*(work(w) for w in mine), take_over())

    taken = {w.id for w in results[-1]}  # type: ignore[union-attr]
    async with Database.from_url(database_url) as check, check.session(read_only=True) as uow:
        for workflow in workflows:
            stored = await uow.workflows.get(workflow.id)
            assert stored is not None
            steps = await uow.step_executions.get_for_workflow(workflow.id)
            artifacts = await uow.artifacts.list_for_workflow(workflow.id)
            if workflow.id in taken:
                assert (stored.state, stored.lease_owner) == (WorkflowState.RUNNING, "w2")
                assert (steps, artifacts) == ([], [])
            else:
                assert stored.state is WorkflowState.COMPLETED
                assert [s.state for s in steps] == [S.SUCCEEDED]
                assert len(artifacts) == 1


@pytest.mark.parametrize("name", list(WRITES))
async def test_a_lease_of_another_workflow_is_refused_and_nothing_written(
    db: Database, name: str
) -> None:
    c = await claimed(db)
    other = attrs.evolve(c, lease=attrs.evolve(c.lease, workflow_id=WorkflowId(new_uuid7())))
    before = await snapshot(db)
    with pytest.raises(ValidationError, match="lease is on workflow"):
        await write(db, name, other)
    assert await snapshot(db) == before


@pytest.mark.parametrize("name", list(WRITES))
async def test_what_is_not_a_lease_is_refused_before_any_sql(db: Database, name: str) -> None:
    c = await claimed(db)
    bad = attrs.evolve(c, lease=("w1", 1))  # type: ignore[arg-type]
    with statements_run(db) as sent, pytest.raises(ValidationError, match="lease must be a Lease"):
        await write(db, name, bad)
    assert not [s for s in sent if s.lstrip().upper().startswith(("INSERT", "UPDATE"))]


@pytest.mark.parametrize("operation", ["heartbeat", "release"])
async def test_a_lease_of_another_worker_is_refused(db: Database, operation: str) -> None:
    c = await claimed(db)
    async with db.session() as uow:
        with pytest.raises(ValidationError, match="lease is of worker 'w1', not 'w2'"):
            await getattr(uow.workflows, operation)(c.workflow.id, "w2", lease=c.lease)
    assert await stored_workflow(db, c.workflow.id) == c.workflow


async def test_a_fenced_write_to_a_deleted_workflow_raises_not_found(db: Database) -> None:
    c = await claimed(db)
    async with db.session() as uow:
        await uow.workflows.delete(c.workflow.id)
    for name in ("step_executions.start", "artifacts.create", "workflows.update_state-completed"):
        with pytest.raises(NotFoundError, match="workflow"):
            await write(db, name, c)


async def test_a_fenced_completion_of_an_attempt_already_finished_is_an_invalid_transition(
    db: Database,
) -> None:
    c = await claimed(db)
    await write(db, "step_executions.update_completion", c)
    with pytest.raises(InvalidStateTransitionError):
        await write(db, "step_executions.update_completion", c)


async def test_workflow_lease_is_the_fencing_token_of_a_claimed_workflow(db: Database) -> None:
    c = await claimed(db)
    assert c.lease == Lease(c.workflow.id, "w1", 1)
    assert str(c.lease) == f"claim 1 of workflow {c.workflow.id} by 'w1'"
    assert WorkflowFactory.build().lease is None
    again = await claim_one(db, "w1", now=at(11))
    assert again.lease == Lease(c.workflow.id, "w1", 2)
