"""advanced-alchemy's ``SQLAlchemyAsyncRepository`` over ecl's own models and tables.

The repositories are plain subclasses naming the model, used with their
defaults, one session and one commit per operation: ``add`` flushes and
refreshes, ``update`` loads, merges, flushes and refreshes, ``list`` takes
column filters, ordering pairs and ``LimitOffset``. advanced-alchemy offers no
aggregate, so ``get_stats`` runs the aggregate query on the repository's
session, as its users do. It accepts ecl's plain ``DeclarativeBase`` models
as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from advanced_alchemy.filters import LimitOffset
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import tuple_
from typing_extensions import override

from benchmarks import build
from benchmarks.contenders._orm import OPEN_STATES, OrmContender, now
from benchmarks.contenders.ecl import PAGE_SIZE
from benchmarks.contenders.naive import page_of, stats_statement
from benchmarks.data import Completion
from ecl_persistence import (
    ExecutionStats,
    StepExecution,
    StepExecutionState,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import Page, WorkflowId
from ecl_persistence.orm import StepExecutionRecord, WorkflowRecord
from ecl_persistence.repositories._cursor import decode_cursor

__all__ = ["AdvancedAlchemy"]

_S = StepExecutionRecord
_W = WorkflowRecord


class WorkflowRepository(SQLAlchemyAsyncRepository[WorkflowRecord]):
    """Workflows through advanced-alchemy."""

    model_type = WorkflowRecord


class StepExecutionRepository(SQLAlchemyAsyncRepository[StepExecutionRecord]):
    """Step executions through advanced-alchemy."""

    model_type = StepExecutionRecord


class AdvancedAlchemy(OrmContender):
    """advanced-alchemy's async repository, one session per operation."""

    name = "advanced-alchemy"

    @override
    async def create_step(self, execution: StepExecution) -> None:
        async with self._sessions() as session:
            await StepExecutionRepository(session=session).add(self._map.record(execution))
            await session.commit()

    @override
    async def complete_step(self, completion: Completion) -> StepExecution:
        async with self._sessions() as session:
            repository = StepExecutionRepository(session=session)
            record = await repository.get(completion.id)
            if record.state not in OPEN_STATES:
                raise LookupError(f"no running step execution {completion.id}")
            record.state = StepExecutionState.SUCCEEDED.value
            record.output = completion.output
            record.completed_at = now()
            record.duration_ms = completion.duration_ms
            record.tokens_used = completion.tokens_used
            record = await repository.update(record)
            await session.commit()
            return self._map.step_execution(record)

    @override
    async def create_many(self, executions: Sequence[StepExecution]) -> None:
        async with self._sessions() as session:
            records = [self._map.record(execution) for execution in executions]
            await StepExecutionRepository(session=session).add_many(records)
            await session.commit()

    @override
    async def get_workflow(self, id: WorkflowId) -> Workflow | None:
        async with self._sessions() as session:
            record = await WorkflowRepository(session=session).get_one_or_none(id=id)
            return None if record is None else self._map.workflow(record)

    @override
    async def get_history(self, workflow_id: WorkflowId) -> list[StepExecution]:
        async with self._sessions() as session:
            records = await StepExecutionRepository(session=session).list(
                _S.workflow_id == workflow_id,
                order_by=[(_S.started_at, False), (_S.attempt, False), (_S.id, False)],
            )
            return [self._map.step_execution(record) for record in records]

    @override
    async def get_stats(self, workflow_id: WorkflowId) -> ExecutionStats:
        async with self._sessions() as session:
            repository = StepExecutionRepository(session=session)
            row = (await repository.session.execute(stats_statement(workflow_id))).one()  # type: ignore[call-overload]
            return build.execution_stats(*(int(value) for value in row))

    @override
    async def list_page(self, state: WorkflowState, cursor: str | None) -> Page[Workflow]:
        filters = [_W.state == state.value]
        if cursor is not None:
            at, last_id = decode_cursor(cursor)
            filters.append(tuple_(_W.created_at, _W.id) < (at, last_id))
        async with self._sessions() as session:
            records = await WorkflowRepository(session=session).list(
                *filters,
                LimitOffset(limit=PAGE_SIZE + 1, offset=0),
                order_by=[(_W.created_at, True), (_W.id, True)],
            )
            return page_of([self._map.workflow(record) for record in records])
