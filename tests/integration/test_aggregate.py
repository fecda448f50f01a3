"""``workflows.load``: a workflow with its attempts, artifacts, transitions and stats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.factories import ArtifactFactory, StepExecutionFactory, WorkflowFactory, statements_run

from ecl_persistence import (
    Database,
    StepExecutionState,
    StepId,
    WorkflowAggregate,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.domain import new_uuid7

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def _populated(db: Database, steps: int) -> WorkflowId:
    """A running workflow with ``steps`` steps of two attempts each, written out of order."""
    workflow = WorkflowFactory.build(created_at=_at(0))
    async with db.session() as uow:
        await uow.workflows.create(workflow, actor="tester")
        await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING, actor="worker-1")
        # Inserted newest first: load() must order them by start, then attempt.
        for step in reversed(range(steps)):
            for attempt in (2, 1):
                await uow.step_executions.create(
                    StepExecutionFactory.build(
                        workflow_id=workflow.id,
                        step_id=f"step-{step}",
                        attempt=attempt,
                        state=(
                            StepExecutionState.SUCCEEDED
                            if attempt == 2
                            else StepExecutionState.FAILED
                        ),
                        started_at=_at(10 * step + attempt),
                        completed_at=_at(10 * step + attempt + 1),
                        duration_ms=100 * attempt,
                        tokens_used=7 * attempt,
                        error="timeout" if attempt == 1 else None,
                    )
                )
            await uow.artifacts.create(
                ArtifactFactory.build(
                    workflow_id=workflow.id, step_id=f"step-{step}", created_at=_at(10 * step + 3)
                )
            )
    return workflow.id


async def test_load_returns_everything_of_the_workflow_in_order(db: Database) -> None:
    workflow_id = await _populated(db, steps=3)
    async with db.session(read_only=True) as uow:
        aggregate = await uow.workflows.load(workflow_id)
        workflow = await uow.workflows.get(workflow_id)
        attempts = await uow.step_executions.get_for_workflow(workflow_id)
        artifacts = await uow.artifacts.list_for_workflow(workflow_id)
        history = await uow.workflows.history(workflow_id)
        stats = await uow.step_executions.get_stats(workflow_id)
    assert isinstance(aggregate, WorkflowAggregate)
    assert aggregate.workflow == workflow
    assert aggregate.step_executions == tuple(attempts)
    assert [(e.step_id, e.attempt) for e in aggregate.step_executions] == [
        (f"step-{step}", attempt) for step in range(3) for attempt in (1, 2)
    ]
    assert aggregate.artifacts == tuple(artifacts)
    assert aggregate.transitions == tuple(history)
    assert [t.to_state for t in aggregate.transitions] == [
        WorkflowState.PENDING,
        WorkflowState.RUNNING,
    ]
    assert [t.actor for t in aggregate.transitions] == ["tester", "worker-1"]
    assert aggregate.stats == stats
    assert (stats.total_executions, stats.succeeded_count, stats.failed_count) == (6, 3, 3)


async def test_load_of_an_unknown_workflow_is_none(db: Database) -> None:
    async with db.session(read_only=True) as uow:
        assert await uow.workflows.load(WorkflowId(new_uuid7())) is None


async def test_load_runs_one_query_per_collection_whatever_their_sizes(db: Database) -> None:
    small, large = await _populated(db, steps=1), await _populated(db, steps=12)
    counts = []
    for workflow_id in (small, large):
        with statements_run(db) as statements:
            async with db.session(read_only=True) as uow:
                aggregate = await uow.workflows.load(workflow_id)
        assert aggregate is not None
        counts.append(len([s for s in statements if s.lstrip().upper().startswith("SELECT")]))
    # The workflow, then its attempts, artifacts and transitions: no N+1.
    assert counts == [4, 4]


async def test_resume_point_comes_from_the_aggregate(db: Database) -> None:
    workflow_id = await _populated(db, steps=2)
    async with db.session() as uow:
        await uow.step_executions.create(
            StepExecutionFactory.build(
                workflow_id=workflow_id, step_id="step-9", attempt=1, started_at=_at(100)
            )
        )
    async with db.session(read_only=True) as uow:
        point = await uow.workflows.resume_point(workflow_id)
        aggregate = await uow.workflows.load(workflow_id)
    assert aggregate is not None
    assert point == aggregate.resume_point()
    assert set(point.succeeded) == {StepId("step-0"), StepId("step-1")}
    # The running attempt of step-9 never finished: it runs again as attempt 2.
    assert dict(point.to_retry) == {StepId("step-9"): 2}
    assert list(aggregate.latest_attempts()) == ["step-0", "step-1", "step-9"]
