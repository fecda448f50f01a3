"""What the read commands fetch: each a read-only unit of work on the public repositories."""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from ecl_persistence.database import Database
from ecl_persistence.domain import (
    ExecutionStats,
    Page,
    Workflow,
    WorkflowAggregate,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.errors import NotFoundError
from ecl_persistence.unit_of_work import UnitOfWork

# The resolution of stored timestamps on both backends.
_TICK = timedelta(microseconds=1)

__all__ = [
    "Summary",
    "delete_workflow",
    "get_workflow",
    "list_stale_workflows",
    "list_workflows",
    "load_details",
    "load_summary",
    "page_of",
]


@attrs.frozen
class Summary:
    """Workflows counted by state and totals of their step executions."""

    definition_id: str | None
    """The definition the figures are restricted to, or ``None`` for all."""
    workflows: dict[WorkflowState, int]
    executions: ExecutionStats


async def get_workflow(db: Database, workflow_id: WorkflowId) -> Workflow:
    """The workflow; raises :class:`NotFoundError` when there is none."""
    async with db.session(read_only=True) as uow:
        workflow = await uow.workflows.get(workflow_id)
    if workflow is None:
        raise NotFoundError("workflow", workflow_id)
    return workflow


async def load_details(db: Database, workflow_id: WorkflowId) -> WorkflowAggregate:
    """The workflow, its executions, artifacts, stats and history; NotFoundError if absent."""
    async with db.session(read_only=True) as uow:
        aggregate = await uow.workflows.load(workflow_id)
    if aggregate is None:
        raise NotFoundError("workflow", workflow_id)
    return aggregate


async def list_workflows(
    db: Database,
    *,
    state: WorkflowState | None,
    definition_id: str | None,
    limit: int,
    cursor: str | None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[Workflow]:
    """One page of workflows, newest first, created at or after ``since`` and before ``until``."""
    async with db.session(read_only=True) as uow:
        return await page_of(
            uow,
            state=state,
            definition_id=definition_id,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )


async def page_of(
    uow: UnitOfWork,
    *,
    state: WorkflowState | None,
    definition_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page[Workflow]:
    """In ``uow``: a page of workflows created at or after ``since`` and before ``until``."""
    return await uow.workflows.list(
        state=state,
        definition_id=definition_id,
        # The repository's bounds are both exclusive; ``since`` includes its instant.
        created_after=None if since is None else since - _TICK,
        created_before=until,
        limit=limit,
        cursor=cursor,
    )


async def list_stale_workflows(
    db: Database, *, definition_id: str | None, limit: int
) -> list[Workflow]:
    """Running workflows whose lease expired, the longest expired first."""
    async with db.session(read_only=True) as uow:
        return await uow.workflows.list_stale(definition_id=definition_id, limit=limit)


async def load_summary(db: Database, definition_id: str | None) -> Summary:
    """Counts by state and execution totals, over all workflows or one definition's."""
    async with db.session(read_only=True) as uow:
        counts = await uow.workflows.count_by_state(definition_id)
        totals = await uow.step_executions.get_totals(definition_id)
    return Summary(definition_id, counts, totals)


async def delete_workflow(db: Database, workflow_id: WorkflowId) -> None:
    """Delete the workflow with its executions and artifact records."""
    async with db.session() as uow:
        await uow.workflows.delete(workflow_id)
