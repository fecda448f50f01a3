"""Claims respect time and priority: ``run_after`` and ``priority``, on both backends."""

from __future__ import annotations

import pytest
from tests.factories import (
    WorkflowFactory,
    at,
    claim_one,
    create_workflows,
    leased_workflow,
    stored_workflow,
)

from ecl_persistence import (
    ConflictError,
    Database,
    ValidationError,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import MAX_PRIORITY, MIN_PRIORITY


async def claim(db: Database, worker: str = "w1", **options: object) -> list[Workflow]:
    async with db.session() as uow:
        return await uow.workflows.claim(worker, **options)  # type: ignore[arg-type]


async def test_a_workflow_is_not_claimed_before_its_run_after(db: Database) -> None:
    later = Workflow.new("research", {}, now=at(0), run_after=at(60))
    await create_workflows(db, later)

    assert await claim(db, now=at(59)) == []
    async with db.session() as uow:
        with pytest.raises(ConflictError, match="not to run before") as early:
            await uow.workflows.claim_by_id(later.id, "w1", now=at(59))
    assert early.value.retryable is True
    assert await stored_workflow(db, later.id) == later

    (taken,) = await claim(db, now=at(60))
    assert (taken.id, taken.run_after, taken.state) == (later.id, at(60), WorkflowState.RUNNING)


async def test_claim_by_id_takes_a_workflow_once_it_is_due(db: Database) -> None:
    later = Workflow.new("research", {}, now=at(0), run_after=at(60))
    await create_workflows(db, later)
    async with db.session() as uow:
        taken = await uow.workflows.claim_by_id(later.id, "w1", now=at(61))
    assert taken.lease_owner == "w1"


async def test_claims_take_the_highest_priority_first_then_the_oldest(db: Database) -> None:
    old_low = WorkflowFactory.build(created_at=at(0), priority=-5)
    old_normal = WorkflowFactory.build(created_at=at(1))
    new_normal = WorkflowFactory.build(created_at=at(2))
    new_high = WorkflowFactory.build(created_at=at(3), priority=10)
    urgent_but_later = WorkflowFactory.build(created_at=at(4), priority=99, run_after=at(500))
    await create_workflows(db, new_normal, old_low, urgent_but_later, new_high, old_normal)

    taken = [(await claim_one(db, "w1", now=at(100))).id for _ in range(4)]

    assert taken == [new_high.id, old_normal.id, new_normal.id, old_low.id]
    assert await claim(db, now=at(100)) == []
    assert (await claim_one(db, "w1", now=at(500))).id == urgent_but_later.id


async def test_one_claim_of_many_returns_them_in_queue_order(db: Database) -> None:
    low, high, normal = (
        WorkflowFactory.build(created_at=at(n), priority=p) for n, p in enumerate([-1, 3, 0])
    )
    await create_workflows(db, low, high, normal)
    claimed = await claim(db, limit=3, now=at(10))
    assert [w.id for w in claimed] == [high.id, normal.id, low.id]


async def test_an_expired_lease_is_retaken_in_priority_order_too(db: Database) -> None:
    expired_low = leased_workflow("dead", at(5), created_at=at(0), priority=-1)
    pending_high = WorkflowFactory.build(created_at=at(9), priority=1)
    await create_workflows(db, expired_low, pending_high)
    claimed = await claim(db, limit=2, now=at(10))
    assert [w.id for w in claimed] == [pending_high.id, expired_low.id]


async def test_a_release_with_run_after_keeps_the_workflow_out_of_the_queue_until_then(
    db: Database,
) -> None:
    await create_workflows(db, WorkflowFactory.build(created_at=at(0)))
    mine = await claim_one(db, "w1", now=at(1))
    async with db.session() as uow:
        released = await uow.workflows.release(
            mine.id, "w1", lease=mine.lease, run_after=at(120), reason="retry search in 119 s"
        )
        history = await uow.workflows.history(mine.id)
    assert (released.state, released.run_after, released.lease_owner) == (
        WorkflowState.PENDING,
        at(120),
        None,
    )
    assert (history[-1].from_state, history[-1].to_state, history[-1].reason) == (
        WorkflowState.RUNNING,
        WorkflowState.PENDING,
        "retry search in 119 s",
    )
    assert await claim(db, now=at(119)) == []
    assert (await claim_one(db, "w2", now=at(120))).claim_count == 2


async def test_the_audit_trail_records_each_claim_as_before(db: Database) -> None:
    workflow = WorkflowFactory.build(created_at=at(0), priority=4, run_after=at(1))
    await create_workflows(db, workflow)
    await claim_one(db, "w1", now=at(2))
    async with db.session(read_only=True) as uow:
        history = await uow.workflows.history(workflow.id)
    assert [(t.from_state, t.to_state, t.actor) for t in history] == [
        (None, WorkflowState.PENDING, None),
        (WorkflowState.PENDING, WorkflowState.RUNNING, "w1"),
    ]


async def test_priority_and_run_after_are_stored_and_read_back(db: Database) -> None:
    extremes = [
        Workflow.new("research", {}, priority=MAX_PRIORITY, run_after=at(3)),
        Workflow.new("research", {}, priority=MIN_PRIORITY),
    ]
    await create_workflows(db, *extremes)
    for workflow in extremes:
        assert await stored_workflow(db, workflow.id) == workflow


async def test_release_refuses_a_naive_run_after(db: Database) -> None:
    await create_workflows(db, WorkflowFactory.build(created_at=at(0)))
    mine = await claim_one(db, "w1", now=at(1))
    async with db.session() as uow:
        with pytest.raises(ValidationError, match="run_after"):
            await uow.workflows.release(mine.id, "w1", run_after=at(5).replace(tzinfo=None))
    assert await stored_workflow(db, mine.id) == mine
