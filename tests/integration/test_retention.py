"""Retention: purge deletes finished workflows older than a cutoff, in batches, and nothing else."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from tests.factories import WorkflowFactory, persist_artifact, persist_step, raw_scalar
from tests.plans import explaining, forbid_seq_scan

from ecl_persistence import Database, ValidationError, Workflow, WorkflowState
from ecl_persistence.retention import batch_statement, delete_unheld_statement

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=30)


def _finished(state: WorkflowState, days_ago: float) -> Workflow:
    at = NOW - timedelta(days=days_ago)
    return WorkflowFactory.build(
        state=state, created_at=at - timedelta(hours=1), updated_at=at, completed_at=at
    )


def _open(state: WorkflowState, days_ago: float) -> Workflow:
    at = NOW - timedelta(days=days_ago)
    return WorkflowFactory.build(state=state, created_at=at, updated_at=at)


async def _create(db: Database, *workflows: Workflow, children: bool = True) -> None:
    async with db.session() as uow:
        for workflow in workflows:
            await uow.workflows.create(workflow)
            if children:
                await persist_step(uow, workflow)
                await persist_artifact(uow, workflow)


async def _remaining(db: Database) -> set[object]:
    async with db.session(read_only=True) as uow:
        page = await uow.workflows.list(limit=1000)
    return {workflow.id for workflow in page.items}


async def _counts(db: Database) -> tuple[int, int, int, int]:
    """Rows of workflows, step executions, artifacts and transitions."""
    return (
        int(await raw_scalar(db, "SELECT count(*) FROM workflows")),
        int(await raw_scalar(db, "SELECT count(*) FROM step_executions")),
        int(await raw_scalar(db, "SELECT count(*) FROM artifacts")),
        int(await raw_scalar(db, "SELECT count(*) FROM workflow_transitions")),
    )


async def test_purge_deletes_old_finished_workflows_with_their_children(db: Database) -> None:
    old = [_finished(WorkflowState.COMPLETED, 40), _finished(WorkflowState.FAILED, 90)]
    recent = _finished(WorkflowState.COMPLETED, 10)
    await _create(db, *old, recent)
    assert await _counts(db) == (3, 3, 3, 3)

    assert await db.purge(finished_before=CUTOFF) == 2

    assert await _remaining(db) == {recent.id}
    assert await _counts(db) == (1, 1, 1, 1)


async def test_purge_never_touches_pending_or_running_workflows(db: Database) -> None:
    untouchable = [_open(WorkflowState.PENDING, 400), _open(WorkflowState.RUNNING, 400)]
    await _create(db, *untouchable)

    assert await db.purge(finished_before=NOW) == 0

    assert await _remaining(db) == {workflow.id for workflow in untouchable}
    assert await _counts(db) == (2, 2, 2, 2)


async def test_purge_runs_in_batches_and_reports_each(db: Database) -> None:
    await _create(db, *(_finished(WorkflowState.COMPLETED, 31 + n) for n in range(10)))
    batches: list[int] = []

    deleted = await db.purge(finished_before=CUTOFF, batch_size=3, on_batch=batches.append)

    assert deleted == 10
    assert batches == [3, 3, 3, 1]
    assert await _counts(db) == (0, 0, 0, 0)


async def test_purge_deletes_the_oldest_first(db: Database) -> None:
    workflows = [_finished(WorkflowState.COMPLETED, days) for days in (35, 300, 60)]
    await _create(db, *workflows, children=False)
    batches: list[int] = []

    # A batch of one, stopped after the first: only the oldest is gone.
    class Stop(Exception):
        pass

    def stop_after_first(count: int) -> None:
        batches.append(count)
        raise Stop

    with pytest.raises(Stop):
        await db.purge(finished_before=CUTOFF, batch_size=1, on_batch=stop_after_first)
    assert await _remaining(db) == {workflows[0].id, workflows[2].id}


async def test_purge_of_chosen_states_keeps_the_others(db: Database) -> None:
    completed, failed = _finished(WorkflowState.COMPLETED, 40), _finished(WorkflowState.FAILED, 40)
    await _create(db, completed, failed)

    assert await db.purge(finished_before=CUTOFF, states=[WorkflowState.FAILED]) == 1

    assert await _remaining(db) == {completed.id}


async def test_dry_run_counts_without_deleting(db: Database) -> None:
    await _create(db, _finished(WorkflowState.COMPLETED, 40), _finished(WorkflowState.FAILED, 5))

    assert await db.purge(finished_before=CUTOFF, dry_run=True) == 1

    assert await _counts(db) == (2, 2, 2, 2)


@pytest.mark.parametrize(
    "arguments",
    [
        {"finished_before": datetime(2026, 1, 1)},
        {"finished_before": CUTOFF, "states": [WorkflowState.RUNNING]},
        {"finished_before": CUTOFF, "states": [WorkflowState.PENDING, WorkflowState.FAILED]},
        {"finished_before": CUTOFF, "states": ["completed"]},
        {"finished_before": CUTOFF, "states": []},
        {"finished_before": CUTOFF, "batch_size": 0},
        {"finished_before": CUTOFF, "batch_size": 10_001},
        {"finished_before": CUTOFF, "batch_size": "5"},
    ],
)
async def test_bad_purge_arguments_are_refused_and_nothing_is_deleted(
    db: Database, arguments: dict[str, object]
) -> None:
    await _create(db, _finished(WorkflowState.COMPLETED, 40))
    with pytest.raises(ValidationError):
        await db.purge(**arguments)  # type: ignore[arg-type]
    assert await _counts(db) == (1, 1, 1, 1)


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgresql)])
async def test_postgres_purge_skips_rows_another_transaction_holds(database_url: str) -> None:
    async with Database.from_url(database_url) as db:
        held, free = _finished(WorkflowState.COMPLETED, 40), _finished(WorkflowState.COMPLETED, 50)
        await _create(db, held, free)
        locked = asyncio.Event()
        release = asyncio.Event()

        async def hold_lock() -> None:
            async with db.session() as uow:
                await uow.execute(
                    text("SELECT id FROM workflows WHERE id = :id FOR UPDATE"),
                    {"id": held.id},
                    action="lock one workflow",
                )
                locked.set()
                await release.wait()

        holder = asyncio.create_task(hold_lock())
        await locked.wait()
        try:
            # Bounded only so that a regression fails instead of hanging the suite.
            deleted = await asyncio.wait_for(db.purge(finished_before=CUTOFF), timeout=30)
        finally:
            release.set()
            await holder
        assert deleted == 1
        assert await _remaining(db) == {held.id}


async def test_the_purge_batch_reads_the_oldest_finished_through_the_index(db: Database) -> None:
    await _create(db, *(_finished(WorkflowState.COMPLETED, 31 + n) for n in range(20)))
    params = {"state": "completed", "cutoff": CUTOFF, "batch": 5}
    # The statement that takes the batch: the DELETE itself on SQLite; on
    # PostgreSQL the SELECT that locks the batch's ids (then deleted by id).
    taking = "DELETE FROM workflows" if db.dialect == "sqlite" else "SELECT workflows.id"
    async with explaining(db, taking) as plan, db.session() as uow:
        await forbid_seq_scan(uow)
        await uow.execute(batch_statement(uow.strategy), params, action="plan")
        await uow.rollback()
    text_plan = "\n".join(plan)
    assert "ix_workflows_state_completed_at" in text_plan
    # Read in completed_at order from the index: no sort of every purgeable row.
    assert "Sort" not in text_plan
    assert "TEMP B-TREE" not in text_plan
    assert await _counts(db) == (20, 20, 20, 20)


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgresql)])
async def test_the_postgres_purge_finds_the_rows_of_its_batch_through_their_indexes(
    database_url: str,
) -> None:
    async with Database.from_url(database_url) as db:
        batch = [_finished(WorkflowState.COMPLETED, 31 + n) for n in range(5)]
        await _create(db, *batch)
        params = {"ids": [workflow.id for workflow in batch]}
        async with explaining(db, "WITH doomed") as plan, db.session() as uow:
            await forbid_seq_scan(uow)
            await uow.execute(delete_unheld_statement(uow.strategy), params, action="plan")
            await uow.rollback()
        scans = [line for line in plan if " on " in line and "Scan" in line]
        tables = {"workflows", "step_executions", "artifacts"}
        assert {line.split(" on ")[1].split()[0] for line in scans} >= tables
        # Every table is read through an index (the CTEs are scanned as CTEs).
        assert [line for line in scans if "Seq Scan" in line] == []
        assert await _counts(db) == (5, 5, 5, 5)
