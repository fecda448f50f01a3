"""ecl-persistence through its public API, one unit of work per operation."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.contenders.base import Contender, Target
from benchmarks.data import Completion
from ecl_persistence import (
    Database,
    ExecutionStats,
    StepExecution,
    StepExecutionState,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import Page, WorkflowId

__all__ = ["PAGE_SIZE", "EclPersistence"]

PAGE_SIZE = 50


class EclPersistence(Contender):
    """The code a user of ecl-persistence writes: ``async with db.session() as uow``."""

    name = "ecl-persistence"

    def __init__(self) -> None:
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        """The database, once opened."""
        assert self._db is not None, "open() first"
        return self._db

    async def open(self, target: Target) -> None:  # noqa: D102
        self._db = Database.from_url(target.url)

    async def close(self) -> None:  # noqa: D102
        await self.db.dispose()

    async def create_step(self, execution: StepExecution) -> None:  # noqa: D102
        async with self.db.session() as uow:
            await uow.step_executions.create(execution)

    async def complete_step(self, completion: Completion) -> StepExecution:  # noqa: D102
        async with self.db.session() as uow:
            return await uow.step_executions.update_completion(
                completion.id,
                StepExecutionState.SUCCEEDED,
                output=completion.output,
                duration_ms=completion.duration_ms,
                tokens_used=completion.tokens_used,
            )

    async def create_many(self, executions: Sequence[StepExecution]) -> None:  # noqa: D102
        async with self.db.session() as uow:
            await uow.step_executions.create_many(executions)

    async def get_workflow(self, id: WorkflowId) -> Workflow | None:  # noqa: D102
        async with self.db.session(read_only=True) as uow:
            return await uow.workflows.get(id)

    async def get_history(self, workflow_id: WorkflowId) -> list[StepExecution]:  # noqa: D102
        async with self.db.session(read_only=True) as uow:
            return await uow.step_executions.get_for_workflow(workflow_id)

    async def get_stats(self, workflow_id: WorkflowId) -> ExecutionStats:  # noqa: D102
        async with self.db.session(read_only=True) as uow:
            return await uow.step_executions.get_stats(workflow_id)

    async def list_page(  # noqa: D102
        self, state: WorkflowState, cursor: str | None
    ) -> Page[Workflow]:
        async with self.db.session(read_only=True) as uow:
            return await uow.workflows.list(state=state, limit=PAGE_SIZE, cursor=cursor)
