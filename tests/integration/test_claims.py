"""Claims, heartbeats and releases: the lease protocol of many workers, on both backends."""

from __future__ import annotations

import asyncio
import math
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from tests.factories import (
    WorkflowFactory,
    at,
    create_workflows,
    leased_workflow,
    stored_workflow,
)
from tests.plans import READ_WHOLE, explaining, forbid_seq_scan

from ecl_persistence import (
    ConflictError,
    ConstraintViolationError,
    Database,
    NotFoundError,
    TransactionFailedError,
    ValidationError,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import new_uuid7
from ecl_persistence.repositories._leases import MAX_LEASE_SECONDS, QUEUE_INDEX, pick


async def claim(db: Database, worker: str = "w1", **options: Any) -> list[Workflow]:
    async with db.session() as uow:
        return await uow.workflows.claim(worker, **options)


def pending(seconds: float, **fields: Any) -> Workflow:
    return WorkflowFactory.build(created_at=at(seconds), **fields)


async def test_claim_takes_the_oldest_pending_workflows_and_leases_them(db: Database) -> None:
    newest, oldest, middle = pending(3), pending(1), pending(2)
    await create_workflows(db, newest, oldest, middle)

    claimed = await claim(db, "w1", limit=2, lease_seconds=30, now=at(100))

    assert [w.id for w in claimed] == [oldest.id, middle.id]
    for workflow in claimed:
        assert workflow.state is WorkflowState.RUNNING
        assert workflow.lease_owner == "w1"
        assert workflow.lease_expires_at == at(130)
        assert workflow.updated_at == at(100)
        assert (workflow.version, workflow.claim_count) == (2, 1)
        assert await stored_workflow(db, workflow.id) == workflow
    assert [w.id for w in await claim(db, "w2", limit=5, now=at(100))] == [newest.id]
    assert await claim(db, "w3", now=at(100)) == []


async def test_claim_skips_finished_workflows_live_leases_and_unleased_running_ones(
    db: Database,
) -> None:
    leased = leased_workflow("w1", at(200), created_at=at(0))
    others = [
        pending(0, state=WorkflowState.COMPLETED, completed_at=at(1)),
        pending(0, state=WorkflowState.FAILED, completed_at=at(1)),
        # Running without a lease: started outside the claim protocol, never taken.
        pending(0, state=WorkflowState.RUNNING),
    ]
    await create_workflows(db, leased, *others)

    assert await claim(db, "w2", limit=10, now=at(199)) == []
    (taken,) = await claim(db, "w2", limit=10, now=at(201), lease_seconds=10)

    assert taken.id == leased.id
    assert (taken.lease_owner, taken.lease_expires_at) == ("w2", at(211))
    assert (taken.version, taken.claim_count) == (leased.version + 1, 2)


async def test_a_worker_whose_lease_was_taken_can_neither_heartbeat_nor_write(
    db: Database,
) -> None:
    await create_workflows(db, pending(0))
    (mine,) = await claim(db, "slow", lease_seconds=1, now=at(10))
    (theirs,) = await claim(db, "fast", now=at(12))

    async with db.session() as uow:
        with pytest.raises(ConflictError, match="'fast'") as lost:
            await uow.workflows.heartbeat(mine.id, "slow")
        with pytest.raises(ConflictError):
            await uow.workflows.update_state(
                mine.id, WorkflowState.COMPLETED, expected_version=mine.version
            )
    assert lost.value.retryable is False
    assert await stored_workflow(db, mine.id) == theirs


async def test_claim_filters_by_definition(db: Database) -> None:
    research, translate, summarise = (
        pending(n, definition_id=name) for n, name in enumerate(["research", "translate", "sum"])
    )
    await create_workflows(db, research, translate, summarise)

    assert await claim(db, definition_ids=[]) == []
    claimed = await claim(db, definition_ids=("sum", "translate", "sum"), limit=10)

    assert [w.id for w in claimed] == [translate.id, summarise.id]
    assert (await stored_workflow(db, research.id)).state is WorkflowState.PENDING


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": "w" * 256}, "worker_id"),
        ({"worker_id": None}, "worker_id"),
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"lease_seconds": -1.0}, "lease_seconds"),
        ({"lease_seconds": math.nan}, "lease_seconds"),
        ({"lease_seconds": math.inf}, "lease_seconds"),
        ({"lease_seconds": True}, "lease_seconds"),
        ({"lease_seconds": "30"}, "lease_seconds"),
        ({"lease_seconds": MAX_LEASE_SECONDS + 1}, "lease_seconds"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"definition_ids": "research"}, "definition_ids"),
        ({"definition_ids": 7}, "definition_ids"),
        ({"definition_ids": [""]}, "definition_id"),
        ({"now": datetime(2024, 1, 1)}, "now"),
        ({"now": datetime.max.replace(tzinfo=UTC)}, "now"),
    ],
)
async def test_claim_refuses_bad_arguments_before_any_sql(
    db: Database, options: dict[str, Any], message: str
) -> None:
    workflow = pending(0)
    await create_workflows(db, workflow)
    options = dict(options)
    worker = options.pop("worker_id", "w1")
    with pytest.raises(ValidationError, match=message):
        await claim(db, worker, **options)
    assert await stored_workflow(db, workflow.id) == workflow


async def test_lease_writes_are_refused_in_a_read_only_unit_of_work(db: Database) -> None:
    workflow = leased_workflow("w1", at(100))
    await create_workflows(db, workflow)
    async with db.session(read_only=True) as uow:
        with pytest.raises(TransactionFailedError):
            await uow.workflows.claim("w1")
        with pytest.raises(TransactionFailedError):
            await uow.workflows.heartbeat(workflow.id, "w1")
        with pytest.raises(TransactionFailedError):
            await uow.workflows.release(workflow.id, "w1")


async def test_concurrent_claims_on_separate_connections_never_share_a_workflow(
    database_url: str,
) -> None:
    async with Database.from_url(database_url, max_connections=6, timeout_secs=30) as db:
        workflows = [pending(n) for n in range(30)]
        await create_workflows(db, *workflows)

        async def worker(name: str) -> list[Workflow]:
            taken: list[Workflow] = []
            while claimed := await claim(db, name, limit=2):
                taken += claimed
                await asyncio.sleep(0)
            return taken

        results = await asyncio.gather(*(worker(f"w{n}") for n in range(6)))

    claimed_ids = [w.id for taken in results for w in taken]
    assert sorted(claimed_ids) == sorted(w.id for w in workflows)
    for name, taken in zip((f"w{n}" for n in range(6)), results, strict=True):
        assert {w.lease_owner for w in taken} <= {name}


async def test_heartbeat_extends_the_lease_and_keeps_the_version(db: Database) -> None:
    workflow = leased_workflow("w1", at(30))
    await create_workflows(db, workflow)
    async with db.session() as uow:
        beaten = await uow.workflows.heartbeat(workflow.id, "w1", lease_seconds=60, now=at(20))
    assert beaten.lease_expires_at == at(80)
    assert beaten.version == workflow.version
    assert beaten.updated_at == workflow.updated_at
    assert await stored_workflow(db, workflow.id) == beaten


async def test_heartbeat_renews_an_expired_lease_that_nobody_took(db: Database) -> None:
    workflow = leased_workflow("w1", at(30))
    await create_workflows(db, workflow)
    async with db.session() as uow:
        beaten = await uow.workflows.heartbeat(workflow.id, "w1", lease_seconds=30, now=at(45))
    assert (beaten.lease_owner, beaten.lease_expires_at) == ("w1", at(75))


@pytest.mark.parametrize("operation", ["heartbeat", "release"])
async def test_lease_operations_of_a_worker_without_the_lease_raise_conflict(
    db: Database, operation: str
) -> None:
    leased = leased_workflow("owner", at(30))
    unleased = pending(0)
    await create_workflows(db, leased, unleased)
    async with db.session() as uow:
        act = getattr(uow.workflows, operation)
        with pytest.raises(ConflictError, match="'owner' does"):
            await act(leased.id, "intruder")
        with pytest.raises(ConflictError, match="no worker does"):
            await act(unleased.id, "intruder")
        with pytest.raises(NotFoundError):
            await act(new_uuid7(), "owner")
        with pytest.raises(ValidationError):
            await act(leased.id, "")
    assert await stored_workflow(db, leased.id) == leased
    assert await stored_workflow(db, unleased.id) == unleased


async def test_release_puts_the_workflow_back_in_the_queue_at_once(db: Database) -> None:
    workflow = leased_workflow("w1", at(300), created_at=at(0))
    await create_workflows(db, workflow)
    async with db.session() as uow:
        released = await uow.workflows.release(workflow.id, "w1")
    assert released.state is WorkflowState.PENDING
    assert (released.lease_owner, released.lease_expires_at) == (None, None)
    assert released.version == workflow.version + 1

    (again,) = await claim(db, "w2", now=at(1))
    assert (again.id, again.lease_owner, again.claim_count) == (workflow.id, "w2", 2)


@pytest.mark.parametrize("target", [WorkflowState.COMPLETED, WorkflowState.FAILED])
async def test_finishing_a_leased_workflow_ends_its_lease(
    db: Database, target: WorkflowState
) -> None:
    workflow = leased_workflow("w1", at(300))
    await create_workflows(db, workflow)
    async with db.session() as uow:
        finished = await uow.workflows.update_state(workflow.id, target)
    assert finished.state is target
    assert (finished.lease_owner, finished.lease_expires_at) == (None, None)
    assert await claim(db, "w2", now=at(1000)) == []


@pytest.mark.parametrize(
    "assignment",
    [
        "lease_owner = 'w1'",
        "lease_expires_at = created_at",
        "lease_owner = 'w1', lease_expires_at = created_at",  # but the workflow is pending
        "claim_count = -1",
    ],
)
async def test_the_database_refuses_an_incomplete_or_misplaced_lease(
    db: Database, assignment: str
) -> None:
    workflow = pending(0)
    await create_workflows(db, workflow)
    # The id is inlined: a raw statement cannot bind a UUID the same way on both backends.
    where = workflow.id.hex if db.dialect == "sqlite" else str(workflow.id)
    with pytest.raises(ConstraintViolationError) as refused:
        async with db.session() as uow:
            await uow.execute(
                text(f"UPDATE workflows SET {assignment} WHERE id = '{where}'"),
                action="corrupt a lease",
            )
    assert refused.value.constraint in {
        "ck_workflows_lease",
        "ck_workflows_claim_count_non_negative",
    }
    assert await stored_workflow(db, workflow.id) == workflow


async def test_the_claim_query_reads_an_index_not_the_whole_table(database_url: str) -> None:
    async with Database.from_url(database_url) as db:
        await create_workflows(db, *(pending(n) for n in range(20)))
        params = {"worker": "w1", "now": at(0), "expires": at(30), "limit": 1}
        async with (
            explaining(db, "SELECT workflows.id, workflows.state") as plan,
            db.session() as uow,
        ):
            await forbid_seq_scan(uow)
            await uow.execute(
                pick(uow.strategy, by_definition=False), params, action="explain the claim"
            )
    text_plan = "\n".join(plan)
    # The queue's own index (at scale, read in its order: test_claim_queue_plans.py).
    assert QUEUE_INDEX in text_plan, text_plan
    # Only the concurrency limits are read whole, by design (docs/operations.md).
    scanned = re.findall(r"Seq Scan on (\w+)", text_plan)
    assert set(scanned) <= READ_WHOLE, text_plan
    # SQLite is told which index to read, so it never sorts the open workflows.
    assert "TEMP B-TREE" not in text_plan
