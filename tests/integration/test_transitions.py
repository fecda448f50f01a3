"""The audit trail: each state change leaves one transition in its transaction, both backends."""

from __future__ import annotations

import asyncio

import pytest
from tests.factories import (
    WorkflowFactory,
    at,
    create_workflows,
    leased_workflow,
    new_workflow,
    persist_step,
    raw_scalar,
    sql,
    stored_workflow,
)
from tests.plans import explaining, forbid_seq_scan

from ecl_persistence import (
    ConflictError,
    ConstraintViolationError,
    Database,
    InvalidStateTransitionError,
    QueryFailedError,
    ValidationError,
    Workflow,
    WorkflowId,
    WorkflowState,
    WorkflowTransition,
)
from ecl_persistence.domain import new_uuid7
from ecl_persistence.repositories.transitions import HISTORY

P, R, C, F = (
    WorkflowState.PENDING,
    WorkflowState.RUNNING,
    WorkflowState.COMPLETED,
    WorkflowState.FAILED,
)


async def history(db: Database, workflow_id: WorkflowId) -> list[WorkflowTransition]:
    async with db.session(read_only=True) as uow:
        return await uow.workflows.history(workflow_id)


def moves(transitions: list[WorkflowTransition]) -> list[tuple[object, ...]]:
    return [(t.from_state, t.to_state, t.actor, t.reason, t.version) for t in transitions]


async def transition_count(db: Database) -> int:
    return int(await raw_scalar(db, "SELECT count(*) FROM workflow_transitions"))


async def test_creation_is_the_first_transition(db: Database) -> None:
    workflow = Workflow.new("research", {"topic": "tides"})
    async with db.session() as uow:
        await uow.workflows.create(workflow, actor="api:alice")

    (created,) = await history(db, workflow.id)
    assert created.workflow_id == workflow.id
    assert (created.from_state, created.to_state, created.version) == (None, P, 1)
    assert (created.actor, created.reason) == ("api:alice", None)
    assert created.at == workflow.updated_at


async def test_a_workflow_created_finished_records_its_state_and_error(db: Database) -> None:
    failed = WorkflowFactory.build(state=F, error="imported: crashed", version=3)
    await create_workflows(db, failed)
    assert moves(await history(db, failed.id)) == [(None, F, None, "imported: crashed", 3)]


async def test_every_update_state_is_recorded_in_order_with_actor_and_reason(db: Database) -> None:
    workflow = await new_workflow(db)
    async with db.session() as uow:
        await uow.workflows.update_state(workflow.id, R, actor="worker-1")
        await uow.workflows.update_state(workflow.id, F, "model timed out", actor="worker-1")
    async with db.session() as uow:
        await uow.workflows.update_state(workflow.id, R, actor="ops:bob", reason="resumed by hand")
        done = await uow.workflows.update_state(workflow.id, C)

    transitions = await history(db, workflow.id)
    assert moves(transitions) == [
        (None, P, None, None, 1),
        (P, R, "worker-1", None, 2),
        (R, F, "worker-1", "model timed out", 3),
        (F, R, "ops:bob", "resumed by hand", 4),
        (R, C, None, None, 5),
    ]
    assert transitions[-1].at == done.updated_at
    assert len({t.id for t in transitions}) == len(transitions)


async def test_claims_reclaims_and_releases_are_recorded_by_their_worker(db: Database) -> None:
    fresh = WorkflowFactory.build(created_at=at(0))
    abandoned = leased_workflow("w-dead", at(10), created_at=at(1))
    await create_workflows(db, fresh, abandoned)

    async with db.session() as uow:
        claimed = await uow.workflows.claim("w-2", limit=5, now=at(60))
    assert [w.id for w in claimed] == [fresh.id, abandoned.id]
    async with db.session() as uow:
        await uow.workflows.heartbeat(fresh.id, "w-2", now=at(61))  # not a state change
        await uow.workflows.release(fresh.id, "w-2")

    assert moves(await history(db, fresh.id)) == [
        (None, P, None, None, 1),
        (P, R, "w-2", None, 2),
        (R, P, "w-2", None, 3),
    ]
    assert moves(await history(db, abandoned.id))[1:] == [
        (R, R, "w-2", "the lease of worker 'w-dead' expired", 2),
    ]
    assert (await history(db, abandoned.id))[1].at == at(60)


async def test_a_claim_by_id_is_recorded_like_a_claim(db: Database) -> None:
    fresh = WorkflowFactory.build(created_at=at(0))
    abandoned = leased_workflow("w-dead", at(10), created_at=at(1))
    await create_workflows(db, fresh, abandoned)

    async with db.session() as uow:
        await uow.workflows.claim_by_id(abandoned.id, "w-3", now=at(60))
        await uow.workflows.claim_by_id(fresh.id, "w-3", now=at(60))

    assert moves(await history(db, fresh.id)) == [
        (None, P, None, None, 1),
        (P, R, "w-3", None, 2),
    ]
    assert moves(await history(db, abandoned.id))[1:] == [
        (R, R, "w-3", "the lease of worker 'w-dead' expired", 2),
    ]


async def test_changes_that_are_not_state_changes_leave_no_transition(db: Database) -> None:
    workflow = await new_workflow(db)
    async with db.session() as uow:
        await uow.workflows.update_output(workflow.id, {"pages": 1})
        await persist_step(uow, workflow)
    assert len(await history(db, workflow.id)) == 1


async def test_a_rolled_back_state_change_leaves_no_transition(db: Database) -> None:
    workflow = await new_workflow(db)

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with db.session() as uow:
            await uow.workflows.update_state(workflow.id, R, actor="worker-1")
            await uow.workflows.claim("w-1")
            assert len(await uow.workflows.history(workflow.id)) == 2  # visible inside
            raise Abort
    async with db.session() as uow:
        await uow.workflows.update_state(workflow.id, R)
        await uow.rollback()

    assert moves(await history(db, workflow.id)) == [(None, P, None, None, 1)]
    assert await stored_workflow(db, workflow.id) == workflow


async def test_a_rolled_back_creation_leaves_neither_workflow_nor_transition(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build()
    with pytest.raises(RuntimeError):
        async with db.session() as uow:
            await uow.workflows.create(workflow)
            raise RuntimeError("caller failed")
    assert await history(db, workflow.id) == []
    assert await transition_count(db) == 0


async def test_refused_changes_leave_no_transition_even_when_the_unit_commits(
    db: Database,
) -> None:
    done = WorkflowFactory.build(state=C, completed_at=at(5))
    keyed = WorkflowFactory.build(idempotency_key="request-1")
    await create_workflows(db, done, keyed)
    async with db.session() as uow:
        with pytest.raises(InvalidStateTransitionError):
            await uow.workflows.update_state(done.id, R)
        with pytest.raises(ConflictError):
            await uow.workflows.update_state(keyed.id, R, expected_version=7)
        with pytest.raises(ConflictError):
            await uow.workflows.release(keyed.id, "w-not-owner")
        # A retried start returns the first workflow: no second creation.
        again = WorkflowFactory.build(idempotency_key="request-1", input=keyed.input)
        assert await uow.workflows.create(again) == keyed
    assert await transition_count(db) == 2


@pytest.mark.parametrize(
    "bad",
    [{"actor": ""}, {"actor": "x" * 256}, {"actor": 7}, {"reason": "nul\x00"}, {"reason": 1}],
    ids=repr,
)
async def test_a_bad_actor_or_reason_is_refused_and_nothing_is_written(
    db: Database, bad: dict[str, object]
) -> None:
    workflow = await new_workflow(db)
    async with db.session() as uow:
        with pytest.raises(ValidationError):
            await uow.workflows.update_state(workflow.id, R, **bad)  # type: ignore[arg-type]
    if "actor" in bad:
        fresh = WorkflowFactory.build()
        async with db.session() as uow:
            with pytest.raises(ValidationError):
                await uow.workflows.create(fresh, actor=bad["actor"])  # type: ignore[arg-type]
        assert await history(db, fresh.id) == []
    assert await stored_workflow(db, workflow.id) == workflow
    assert await transition_count(db) == 1


async def test_history_of_an_unknown_workflow_is_empty(db: Database) -> None:
    assert await history(db, WorkflowId(new_uuid7())) == []
    async with db.session(read_only=True) as uow:
        with pytest.raises(ValidationError):
            await uow.workflows.history("not-a-uuid")


async def test_deleting_a_workflow_deletes_its_history(db: Database) -> None:
    kept, deleted = await new_workflow(db), await new_workflow(db)
    async with db.session() as uow:
        await uow.workflows.update_state(deleted.id, R)
        await uow.workflows.delete(deleted.id)
    assert await history(db, deleted.id) == []
    assert len(await history(db, kept.id)) == 1


async def test_transitions_cannot_be_updated_but_go_with_their_workflow(db: Database) -> None:
    workflow = await new_workflow(db)
    (created,) = await history(db, workflow.id)
    with pytest.raises(ConstraintViolationError, match="append-only") as refused:
        async with db.session() as uow:
            await uow.execute(
                sql("UPDATE workflow_transitions SET reason = 'rewritten' WHERE id = :id",
                    id=created.id),
                action="rewrite history",
            )  # fmt: skip
    assert refused.value.constraint == "workflow_transitions_append_only"
    assert await history(db, workflow.id) == [created]
    # DELETE stays allowed: purge and delete cascade through it.
    async with db.session() as uow:
        await uow.execute(
            sql("DELETE FROM workflow_transitions WHERE id = :id", id=created.id),
            action="delete one transition",
        )
    assert await history(db, workflow.id) == []


async def test_a_history_row_that_is_not_valid_raises_query_failed(db: Database) -> None:
    workflow = await new_workflow(db)
    async with db.session() as uow:
        # Written by hand: the database accepts an empty actor, the domain does not.
        await uow.execute(
            sql(
                "INSERT INTO workflow_transitions (id, workflow_id, from_state, to_state, at, "
                "actor, reason, version) VALUES (:id, :wid, 'pending', 'running', "
                "CURRENT_TIMESTAMP, '', NULL, 2)",
                id=new_uuid7(),
                wid=workflow.id,
            ),
            action="insert a bad transition",
        )
    with pytest.raises(QueryFailedError, match="workflow_transitions row"):
        await history(db, workflow.id)


async def test_racing_claims_record_exactly_one_claim_per_workflow(database_url: str) -> None:
    workers = 6
    workflows = [WorkflowFactory.build(created_at=at(n)) for n in range(12)]
    async with Database.from_url(database_url, max_connections=workers, timeout_secs=30) as db:
        await create_workflows(db, *workflows)

        async def work(worker: str) -> list[Workflow]:
            taken: list[Workflow] = []
            while True:
                async with db.session() as uow:
                    claimed = await uow.workflows.claim(worker, limit=2)
                if not claimed:
                    return taken
                taken.extend(claimed)

        results = await asyncio.gather(*(work(f"w-{n}") for n in range(workers)))
        owner = {w.id: f"w-{n}" for n, taken in enumerate(results) for w in taken}
        assert len(owner) == len(workflows) == sum(map(len, results))
        for workflow in workflows:
            assert moves(await history(db, workflow.id)) == [
                (None, P, None, None, 1),
                (P, R, owner[workflow.id], None, 2),
            ]


async def test_the_history_query_reads_the_workflow_index(database_url: str) -> None:
    async with Database.from_url(database_url) as db:
        workflow = await new_workflow(db)
        async with (
            explaining(db, "SELECT workflow_transitions.id") as plan,
            db.session() as uow,
        ):
            await forbid_seq_scan(uow)
            await uow.execute(HISTORY, {"wid": workflow.id}, action="explain history")
    text_plan = "\n".join(plan)
    # The unique constraint's index serves the lookup and the order: no sort step.
    if db.dialect == "postgresql":
        assert "uq_workflow_transitions_workflow_id_version" in text_plan
        assert "Sort" not in text_plan
    else:
        assert "USING INDEX sqlite_autoindex_workflow_transitions" in text_plan
        assert "TEMP B-TREE" not in text_plan
