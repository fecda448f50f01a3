"""Stale workflows (their lease expired) and the claim of one given workflow, on both backends."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.factories import (
    WorkflowFactory,
    at,
    create_workflows,
    leased_workflow,
    query_plan,
    stored_workflow,
)

from ecl_persistence import (
    ConflictError,
    Database,
    InvalidStateTransitionError,
    NotFoundError,
    ValidationError,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import new_uuid7
from ecl_persistence.repositories._leases import STALE


async def stale(db: Database, **options: Any) -> list[Workflow]:
    async with db.session(read_only=True) as uow:
        return await uow.workflows.list_stale(**options)


async def claim_by_id(db: Database, workflow: Workflow, worker: str, **options: Any) -> Workflow:
    async with db.session() as uow:
        return await uow.workflows.claim_by_id(workflow.id, worker, **options)


# --- list_stale --------------------------------------------------------------------------


async def test_list_stale_returns_running_workflows_whose_lease_expired_longest_expired_first(
    db: Database,
) -> None:
    expired_late = leased_workflow("w1", at(50), created_at=at(1))
    expired_early = leased_workflow("w2", at(10), created_at=at(2))
    live = leased_workflow("w3", at(200))
    just_now = leased_workflow("w4", at(100))  # expires exactly at now: still held
    unleased = WorkflowFactory.build(state=WorkflowState.RUNNING)
    others = [WorkflowFactory.build(state=state) for state in ("pending", "completed", "failed")]
    await create_workflows(db, expired_late, expired_early, live, just_now, unleased, *others)

    found = await stale(db, now=at(100))

    assert [w.id for w in found] == [expired_early.id, expired_late.id]
    assert [(w.lease_owner, w.lease_expires_at) for w in found] == [("w2", at(10)), ("w1", at(50))]


async def test_list_stale_filters_by_definition_and_stops_at_the_limit(db: Database) -> None:
    demos = [leased_workflow("w", at(n), definition_id="demo") for n in range(3)]
    research = leased_workflow("w", at(-1), definition_id="research")
    await create_workflows(db, *demos, research)

    assert [w.id for w in await stale(db, now=at(10), definition_id="demo", limit=2)] == [
        demos[0].id,
        demos[1].id,
    ]
    assert [w.id for w in await stale(db, now=at(10), limit=1)] == [research.id]
    assert await stale(db, now=at(10), definition_id="translate") == []


async def test_list_stale_defaults_to_the_current_time(db: Database) -> None:
    past = leased_workflow("w", datetime.now(UTC) - timedelta(minutes=1))
    future = leased_workflow("w", datetime.now(UTC) + timedelta(hours=1))
    await create_workflows(db, past, future)

    assert [w.id for w in await stale(db)] == [past.id]


@pytest.mark.parametrize(
    "options",
    [
        {"now": datetime(2024, 1, 1)},
        {"limit": 0},
        {"definition_id": ""},
    ],
    ids=["naive-now", "zero-limit", "empty-definition"],
)
async def test_list_stale_refuses_bad_arguments(db: Database, options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        await stale(db, **options)


async def test_the_stale_query_reads_an_index_not_the_whole_table(database_url: str) -> None:
    async with Database.from_url(database_url) as db:
        await create_workflows(
            db,
            *(leased_workflow("w", at(n)) for n in range(10)),
            *(WorkflowFactory.build(state="completed") for _ in range(10)),
        )
        plan = await query_plan(db, STALE.limit(5), {"now": at(100)}, starts="SELECT")
    if db.dialect == "postgresql":
        # Either index holding the running workflows serves; the sort is of those only.
        assert re.search(r"Index Scan (using|on) ix_workflows_(state|claimable)_\w+", plan)
        assert "Seq Scan" not in plan
    else:
        # The running workflows are found through an index leading with state, then sorted.
        assert re.search(r"SEARCH workflows USING INDEX ix_workflows_state_\w+ \(state=\?", plan)
        assert "SCAN workflows" not in plan.splitlines()


# --- claim_by_id ------------------------------------------------------------------------


async def test_claim_by_id_takes_a_pending_workflow_even_behind_older_ones(db: Database) -> None:
    older = WorkflowFactory.build(created_at=at(0))
    target = WorkflowFactory.build(created_at=at(1))
    await create_workflows(db, older, target)

    claimed = await claim_by_id(db, target, "w1", lease_seconds=30, now=at(100))

    assert claimed.id == target.id
    assert claimed.state is WorkflowState.RUNNING
    assert (claimed.lease_owner, claimed.lease_expires_at) == ("w1", at(130))
    assert (claimed.version, claimed.claim_count, claimed.updated_at) == (2, 1, at(100))
    assert await stored_workflow(db, target.id) == claimed
    assert (await stored_workflow(db, older.id)).state is WorkflowState.PENDING


async def test_claim_by_id_takes_over_an_expired_lease(db: Database) -> None:
    orphan = leased_workflow("dead", at(10), version=2)
    await create_workflows(db, orphan)

    claimed = await claim_by_id(db, orphan, "rescuer", lease_seconds=5, now=at(11))

    assert (claimed.lease_owner, claimed.lease_expires_at) == ("rescuer", at(16))
    assert (claimed.version, claimed.claim_count) == (3, 2)


async def test_claim_by_id_refuses_a_live_lease_with_a_retryable_conflict(db: Database) -> None:
    held = leased_workflow("alive", at(10))
    await create_workflows(db, held)

    with pytest.raises(ConflictError) as refused:
        await claim_by_id(db, held, "w2", now=at(10))

    assert refused.value.retryable
    assert "'alive'" in str(refused.value)
    assert await stored_workflow(db, held.id) == held


async def test_claim_by_id_refuses_a_running_workflow_without_a_lease(db: Database) -> None:
    unleased = WorkflowFactory.build(state=WorkflowState.RUNNING)
    await create_workflows(db, unleased)

    with pytest.raises(ConflictError) as refused:
        await claim_by_id(db, unleased, "w1")

    assert not refused.value.retryable
    assert await stored_workflow(db, unleased.id) == unleased


@pytest.mark.parametrize("state", [WorkflowState.COMPLETED, WorkflowState.FAILED])
async def test_claim_by_id_refuses_a_finished_workflow(db: Database, state: WorkflowState) -> None:
    finished = WorkflowFactory.build(state=state)
    await create_workflows(db, finished)

    with pytest.raises(InvalidStateTransitionError):
        await claim_by_id(db, finished, "w1")

    assert await stored_workflow(db, finished.id) == finished


async def test_claim_by_id_of_an_unknown_workflow_raises_not_found(db: Database) -> None:
    with pytest.raises(NotFoundError):
        await claim_by_id(db, WorkflowFactory.build(id=new_uuid7()), "w1")


async def test_claim_by_id_checks_its_arguments_before_writing(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)

    for options in ({"lease_seconds": 0}, {"now": datetime(2024, 1, 1)}):
        with pytest.raises(ValidationError):
            await claim_by_id(db, workflow, "w1", **options)
    with pytest.raises(ValidationError):
        await claim_by_id(db, workflow, "")
    assert await stored_workflow(db, workflow.id) == workflow


async def test_racing_claims_of_one_workflow_have_exactly_one_winner(database_url: str) -> None:
    async with Database.from_url(database_url, timeout_secs=30.0) as db:
        orphan = leased_workflow("dead", at(0))
        await create_workflows(db, orphan)

        async def attempt(worker: str) -> str | None:
            try:
                claimed = await claim_by_id(db, orphan, worker, now=at(1))
            except ConflictError:
                return None
            return claimed.lease_owner

        winners = [w for w in await asyncio.gather(*(attempt(f"w{n}") for n in range(5))) if w]
        stored = await stored_workflow(db, orphan.id)
    assert len(winners) == 1
    assert stored.lease_owner == winners[0]
    assert stored.claim_count == 2
