"""The common ORM repository pattern: a session per operation, entities loaded and added.

This is the code found in tutorials and in Prefect-style services: open an
``AsyncSession``, ``session.get`` or ``select`` the entity, change it or
``session.add`` a new one, commit, and map the entity to the domain object.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import case, func, select, tuple_
from typing_extensions import override

from benchmarks import build
from benchmarks.contenders._orm import OPEN_STATES, OrmContender, now
from benchmarks.contenders.ecl import PAGE_SIZE
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
from ecl_persistence.repositories._cursor import decode_cursor, encode_cursor

__all__ = ["NaiveOrm", "page_of", "stats_statement"]

_S = StepExecutionRecord
_W = WorkflowRecord


def stats_statement(workflow_id: WorkflowId) -> object:
    """The aggregate query of ``get_stats``, as an ORM user writes it."""
    return select(
        func.count(),
        func.coalesce(
            func.sum(case((_S.state == StepExecutionState.SUCCEEDED.value, 1), else_=0)), 0
        ),
        func.coalesce(func.sum(case((_S.state == StepExecutionState.FAILED.value, 1), else_=0)), 0),
        func.coalesce(func.sum(_S.duration_ms), 0),
        func.coalesce(func.sum(_S.tokens_used), 0),
    ).where(_S.workflow_id == workflow_id)


def page_of(items: list[Workflow]) -> Page[Workflow]:
    """A page from up to ``PAGE_SIZE + 1`` workflows: the extra one says there is more."""
    if len(items) > PAGE_SIZE:
        del items[PAGE_SIZE:]
        return build.page(items, encode_cursor(items[-1].created_at, items[-1].id))
    return build.page(items, None)


class NaiveOrm(OrmContender):
    """``AsyncSession`` per operation, ORM entities, ``session.add``."""

    name = "naive ORM repository"

    @override
    async def create_step(self, execution: StepExecution) -> None:
        async with self._sessions() as session:
            session.add(self._map.record(execution))
            await session.commit()

    @override
    async def complete_step(self, completion: Completion) -> StepExecution:
        async with self._sessions() as session:
            record = await session.get(StepExecutionRecord, completion.id)
            if record is None or record.state not in OPEN_STATES:
                raise LookupError(f"no running step execution {completion.id}")
            record.state = StepExecutionState.SUCCEEDED.value
            record.output = completion.output
            record.completed_at = now()
            record.duration_ms = completion.duration_ms
            record.tokens_used = completion.tokens_used
            await session.commit()
            return self._map.step_execution(record)

    @override
    async def create_many(self, executions: Sequence[StepExecution]) -> None:
        async with self._sessions() as session:
            session.add_all([self._map.record(execution) for execution in executions])
            await session.commit()

    @override
    async def get_workflow(self, id: WorkflowId) -> Workflow | None:
        async with self._sessions() as session:
            record = await session.get(WorkflowRecord, id)
            return None if record is None else self._map.workflow(record)

    @override
    async def get_history(self, workflow_id: WorkflowId) -> list[StepExecution]:
        statement = (
            select(_S)
            .where(_S.workflow_id == workflow_id)
            .order_by(_S.started_at, _S.attempt, _S.id)
        )
        async with self._sessions() as session:
            records = (await session.scalars(statement)).all()
            return [self._map.step_execution(record) for record in records]

    @override
    async def get_stats(self, workflow_id: WorkflowId) -> ExecutionStats:
        async with self._sessions() as session:
            row = (await session.execute(stats_statement(workflow_id))).one()  # type: ignore[call-overload]
            return build.execution_stats(*(int(value) for value in row))

    @override
    async def list_page(self, state: WorkflowState, cursor: str | None) -> Page[Workflow]:
        statement = select(_W).where(_W.state == state.value)
        if cursor is not None:
            at, last_id = decode_cursor(cursor)
            statement = statement.where(tuple_(_W.created_at, _W.id) < (at, last_id))
        statement = statement.order_by(_W.created_at.desc(), _W.id.desc()).limit(PAGE_SIZE + 1)
        async with self._sessions() as session:
            records = (await session.scalars(statement)).all()
            return page_of([self._map.workflow(record) for record in records])
