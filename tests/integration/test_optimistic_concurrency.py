"""Optimistic concurrency: versions, stale writes, racing state changes, on both backends."""

from __future__ import annotations

import asyncio

import pytest
from tests.factories import WorkflowFactory, create_workflows, stored_workflow

from ecl_persistence import (
    ConflictError,
    Database,
    InvalidStateTransitionError,
    NotFoundError,
    ValidationError,
    Workflow,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.domain import new_uuid7, utc_now

RACERS = 8


def running(version: int = 3) -> Workflow:
    return WorkflowFactory.build(state=WorkflowState.RUNNING, version=version)


async def test_update_state_at_the_expected_version_moves_and_bumps_it(db: Database) -> None:
    workflow = running(version=3)
    await create_workflows(db, workflow)
    async with db.session() as uow:
        done = await uow.workflows.update_state(
            workflow.id, WorkflowState.COMPLETED, expected_version=3
        )
    assert (done.state, done.version) == (WorkflowState.COMPLETED, 4)
    assert await stored_workflow(db, workflow.id) == done


async def test_a_stale_update_state_raises_conflict_and_changes_nothing(db: Database) -> None:
    workflow = running(version=3)
    await create_workflows(db, workflow)
    with pytest.raises(ConflictError, match="version 3, not 2") as stale:
        async with db.session() as uow:
            await uow.workflows.update_state(
                workflow.id, WorkflowState.FAILED, "late", expected_version=2
            )
    assert stale.value.retryable is True
    assert await stored_workflow(db, workflow.id) == workflow


async def test_update_output_at_the_expected_version_only(db: Database) -> None:
    workflow = running(version=3)
    await create_workflows(db, workflow)
    async with db.session() as uow:
        updated = await uow.workflows.update_output(workflow.id, {"pages": 3}, expected_version=3)
    assert (updated.output, updated.version) == ({"pages": 3}, 4)
    with pytest.raises(ConflictError):
        async with db.session() as uow:
            await uow.workflows.update_output(workflow.id, {"pages": 0}, expected_version=3)
    assert await stored_workflow(db, workflow.id) == updated


async def test_an_illegal_move_at_the_current_version_is_still_illegal(db: Database) -> None:
    workflow = WorkflowFactory.build(state=WorkflowState.COMPLETED, completed_at=utc_now())
    await create_workflows(db, workflow)
    with pytest.raises(InvalidStateTransitionError):
        async with db.session() as uow:
            await uow.workflows.update_state(
                workflow.id, WorkflowState.RUNNING, expected_version=workflow.version
            )
    assert await stored_workflow(db, workflow.id) == workflow


async def test_expected_version_of_a_missing_workflow_raises_not_found(db: Database) -> None:
    missing = WorkflowId(new_uuid7())
    async with db.session() as uow:
        with pytest.raises(NotFoundError):
            await uow.workflows.update_state(missing, WorkflowState.RUNNING, expected_version=1)
    async with db.session() as uow:
        with pytest.raises(NotFoundError):
            await uow.workflows.update_output(missing, None, expected_version=1)


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, "1"], ids=repr)
async def test_an_expected_version_that_is_not_a_positive_integer_is_refused(
    db: Database, bad: object
) -> None:
    workflow = running(version=1)
    await create_workflows(db, workflow)
    async with db.session() as uow:
        with pytest.raises(ValidationError, match="expected_version"):
            await uow.workflows.update_state(
                workflow.id,
                WorkflowState.COMPLETED,
                expected_version=bad,  # type: ignore[arg-type]
            )
        with pytest.raises(ValidationError, match="expected_version"):
            await uow.workflows.update_output(workflow.id, 1, expected_version=bad)  # type: ignore[arg-type]
    assert await stored_workflow(db, workflow.id) == workflow


@pytest.mark.parametrize("versioned", [True, False], ids=["expected-version", "state-guard"])
async def test_racing_update_state_calls_have_exactly_one_winner(
    database_url: str, versioned: bool
) -> None:
    workflow = running(version=5)
    targets = [WorkflowState.COMPLETED, WorkflowState.FAILED] * (RACERS // 2)
    async with Database.from_url(database_url, max_connections=RACERS, timeout_secs=30) as db:
        await create_workflows(db, workflow)

        async def race(target: WorkflowState) -> Workflow:
            async with db.session() as uow:
                return await uow.workflows.update_state(
                    workflow.id, target, expected_version=5 if versioned else None
                )

        outcomes = await asyncio.gather(*(race(t) for t in targets), return_exceptions=True)
        final = await stored_workflow(db, workflow.id)

    winners = [o for o in outcomes if isinstance(o, Workflow)]
    losers = [o for o in outcomes if not isinstance(o, Workflow)]
    assert len(winners) == 1
    # A stale version is a conflict; without one, the winner's state forbids the move.
    expected = ConflictError if versioned else InvalidStateTransitionError
    assert [type(o) for o in losers] == [expected] * (RACERS - 1)
    (winner,) = winners
    assert final == winner
    assert final.version == 6
