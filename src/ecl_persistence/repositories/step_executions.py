"""The step execution repository: every attempt of every step.

One attempt at a time goes through ORM-enabled statements on
``StepExecutionRecord``; the histories of a workflow, its aggregates and
``create_many`` use rows of the table (``docs/concepts.md`` says why).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Insert, Table, and_, bindparam, case, func, insert, select, update

from ecl_persistence.dialects import DialectStrategy, LockMode
from ecl_persistence.dialects.base import AnySelect
from ecl_persistence.domain import (
    MAX_ERROR_LENGTH,
    MAX_ID_LENGTH,
    MISSING,
    ExecutionStats,
    JsonValue,
    Missing,
    StepExecution,
    StepExecutionId,
    StepExecutionState,
    StepId,
    WorkflowId,
    check_json,
    check_text,
    utc_now,
)
from ecl_persistence.errors import InvalidStateTransitionError, NotFoundError, ValidationError
from ecl_persistence.orm import StepExecutionRecord, WorkflowRecord
from ecl_persistence.repositories._checks import check_count, check_id, check_payloads
from ecl_persistence.repositories._context import UnitContext
from ecl_persistence.repositories.mappers import (
    row_insert,
    step_execution_from_record,
    step_execution_from_row,
    step_execution_values,
)

__all__ = ["StepExecutionRepository"]

_R = StepExecutionRecord
_TABLE = cast("Table", StepExecutionRecord.__table__)
_T = _TABLE.c
_ENTITY = "step execution"
_FINISHED = (StepExecutionState.SUCCEEDED, StepExecutionState.FAILED)
_OPEN = (StepExecutionState.PENDING.value, StepExecutionState.RUNNING.value)
# The attribute key of every column, in table order: the bind parameter names.
_KEYS = {prop.columns[0].name: key for key, prop in _R.__mapper__.column_attrs.items()}

_GET = select(_R).where(_R.id == bindparam("id"))
_INSERT = row_insert(_R)
"""Insert attempts from their entity values: one, or many in one executemany."""
_ROWS = select(*_TABLE.c)
_FOR_WORKFLOW = _ROWS.where(_T.workflow_id == bindparam("wid")).order_by(
    _T.started_at, _T.attempt, _T.id
)
_FOR_STEP = _ROWS.where(
    _T.workflow_id == bindparam("wid"), _T.step_id == bindparam("sid")
).order_by(_T.attempt)
_GET_STATE = select(_T.state).where(_T.id == bindparam("id"))
_COMPLETE = (
    update(_TABLE)
    .where(_T.id == bindparam("eid"), _T.state.in_(_OPEN))
    .values(
        state=bindparam("state"),
        output=bindparam("output"),
        error=bindparam("error"),
        completed_at=bindparam("now"),
        duration_ms=bindparam("duration_ms"),
        tokens_used=func.coalesce(
            bindparam("tokens_used", type_=_T.tokens_used.type), _T.tokens_used
        ),
    )
    .returning(*_TABLE.c)
)
_LATEST = (
    select(_T.step_id, func.max(_T.attempt).label("attempt"))
    .where(_T.workflow_id == bindparam("wid"))
    .group_by(_T.step_id)
    .subquery("latest")
)
_LATEST_ATTEMPTS = (
    _ROWS.join(_LATEST, and_(_T.step_id == _LATEST.c.step_id, _T.attempt == _LATEST.c.attempt))
    .where(_T.workflow_id == bindparam("wid"))
    .order_by(_T.started_at, _T.step_id)
)


@functools.cache
def _lock_workflow(strategy: DialectStrategy) -> AnySelect:
    # Serialises the starts of a workflow's steps: a row lock on PostgreSQL
    # (NO KEY UPDATE, so other transactions can still insert rows that
    # reference the workflow); the write lock already does it on SQLite.
    workflow = WorkflowRecord
    chosen = select(workflow.id).where(workflow.id == bindparam("wid"))
    return strategy.lock(chosen, LockMode.UPDATE)


def _next_attempt_value(column: str) -> Any:
    if column == "attempt":
        return func.coalesce(func.max(_T.attempt), 0) + 1
    return bindparam(_KEYS[column], type_=_T[column].type)


# The next attempt number is computed by the INSERT itself, after the lock above.
_INSERT_NEXT: Insert = (
    insert(_R)
    .from_select(
        [column.name for column in _TABLE.c],
        select(*(_next_attempt_value(column.name) for column in _TABLE.c)).where(
            _T.workflow_id == bindparam("workflow_id"), _T.step_id == bindparam("step_id")
        ),
    )
    .returning(_R)
    # The parameters fill the SELECT: no rows of parameters to insert in bulk.
    .execution_options(dml_strategy="orm")
)

_STATS = select(
    func.count(),
    func.coalesce(func.sum(case((_T.state == StepExecutionState.SUCCEEDED.value, 1), else_=0)), 0),
    func.coalesce(func.sum(case((_T.state == StepExecutionState.FAILED.value, 1), else_=0)), 0),
    func.coalesce(func.sum(_T.duration_ms), 0),
    func.coalesce(func.sum(_T.tokens_used), 0),
)
_STATS_OF_WORKFLOW = _STATS.where(_T.workflow_id == bindparam("wid"))
_TOTALS_OF_DEFINITION = _STATS.select_from(
    _TABLE.join(WorkflowRecord.__table__, WorkflowRecord.id == _T.workflow_id)
).where(WorkflowRecord.definition_id == bindparam("definition_id"))


class StepExecutionRepository:
    """Step executions of one unit of work: one row per attempt of a step."""

    __slots__ = ("_uow",)

    def __init__(self, uow: UnitContext) -> None:
        self._uow = uow

    async def create(self, execution: StepExecution) -> StepExecution:
        """Insert ``execution``.

        An unknown workflow, or an attempt number already recorded for the
        step, raises ConstraintViolationError.
        """
        action = f"create step execution {getattr(execution, 'id', '?')}"
        self._uow.require_writable(action)
        await self._uow.execute(_INSERT, self._values(execution), action=action)
        return execution

    async def start(
        self,
        workflow_id: WorkflowId | str,
        step_id: StepId | str,
        input: JsonValue,
        *,
        attempt: int | None = None,
        metadata: Mapping[str, JsonValue] | None = None,
    ) -> StepExecution:
        """Record a running attempt of a step, started now, and return it.

        With ``attempt=None`` the database picks the next attempt number of
        the step (1 for its first run), race-free: concurrent starts of steps
        of one workflow are serialised (a row lock on the workflow on
        PostgreSQL, the write lock on SQLite), so each gets its own number.
        An explicit ``attempt`` is stored as given, like :meth:`create` would.
        An unknown workflow raises NotFoundError (ConstraintViolationError
        with an explicit attempt); a taken attempt number,
        ConstraintViolationError.
        """
        # The domain object validates every argument before any SQL runs; with
        # attempt=None its number 1 is a placeholder that the INSERT replaces.
        execution = StepExecution.start(
            workflow_id,
            step_id,
            input,
            attempt=1 if attempt is None else attempt,
            metadata=metadata,
        )
        if attempt is not None:
            return await self.create(execution)
        action = f"start step execution {execution.id}"
        self._uow.require_writable(action)
        values = self._values(execution)
        lock = _lock_workflow(self._uow.strategy)
        locked = await self._uow.execute(lock, {"wid": execution.workflow_id}, action=action)
        if locked.first() is None:
            raise NotFoundError("workflow", execution.workflow_id)
        result = await self._uow.execute(_INSERT_NEXT, values, action=action)
        return step_execution_from_record(result.scalars().one())

    async def create_many(self, executions: Iterable[StepExecution]) -> list[StepExecution]:
        """Insert many executions in one batch (one round trip, not one per row).

        All or nothing: one bad row fails the batch and nothing of it is written.
        """
        self._uow.require_writable("create step executions")
        batch = list(executions)
        if not batch:
            return []
        rows = [self._values(execution) for execution in batch]
        await self._uow.execute(_INSERT, rows, action=f"create {len(rows)} step executions")
        return batch

    async def get(self, id: StepExecutionId | str) -> StepExecution | None:
        """The execution with this id (a UUID or its text), or ``None``."""
        id = check_id(id, "step execution id")
        result = await self._uow.execute(_GET, {"id": id}, action=f"get step execution {id}")
        record = result.scalars().first()
        return None if record is None else step_execution_from_record(record)

    async def get_for_workflow(self, workflow_id: WorkflowId | str) -> list[StepExecution]:
        """Every execution of the workflow, in the order they started."""
        workflow_id = check_id(workflow_id, "workflow id")
        result = await self._uow.execute(
            _FOR_WORKFLOW, {"wid": workflow_id}, action=f"get step executions of {workflow_id}"
        )
        return [step_execution_from_row(row) for row in result]

    async def get_for_step(
        self, workflow_id: WorkflowId | str, step_id: StepId | str
    ) -> list[StepExecution]:
        """Every attempt of one step of the workflow, first attempt first."""
        workflow_id = check_id(workflow_id, "workflow id")
        step = check_text(step_id, field="step_id", max_length=MAX_ID_LENGTH)
        result = await self._uow.execute(
            _FOR_STEP,
            {"wid": workflow_id, "sid": step},
            action=f"get attempts of a step of {workflow_id}",
        )
        return [step_execution_from_row(row) for row in result]

    async def latest_attempts(self, workflow_id: WorkflowId | str) -> dict[StepId, StepExecution]:
        """The latest attempt of each step of the workflow, by step id, in one query.

        Ordered by start time; empty for an unknown workflow or one without steps.
        """
        workflow_id = check_id(workflow_id, "workflow id")
        result = await self._uow.execute(
            _LATEST_ATTEMPTS, {"wid": workflow_id}, action=f"get latest attempts of {workflow_id}"
        )
        latest = (step_execution_from_row(row) for row in result)
        return {execution.step_id: execution for execution in latest}

    async def update_completion(
        self,
        id: StepExecutionId | str,
        state: StepExecutionState,
        output: JsonValue | Missing = MISSING,
        error: str | None = None,
        duration_ms: int | None = None,
        *,
        tokens_used: int | None = None,
    ) -> StepExecution:
        """Finish a pending or running execution as succeeded or failed; return it.

        Sets ``completed_at``; stores ``output`` (MISSING leaves none, ``None``
        is JSON null), ``error`` and ``duration_ms``; ``tokens_used`` replaces the
        recorded count when given. Finishing an execution that is already
        finished raises InvalidStateTransitionError and changes nothing.
        """
        id = check_id(id, "step execution id")
        action = f"complete step execution {id}"
        self._uow.require_writable(action)
        try:
            target = StepExecutionState(state)
        except ValueError:
            raise ValidationError("state is not a step execution state") from None
        if target not in _FINISHED:
            raise ValidationError("a step execution completes as succeeded or failed")
        if output is not MISSING:
            check_json(output, field="output", max_bytes=self._uow.max_payload_bytes)
        if error is not None:
            error = check_text(error, field="error", max_length=MAX_ERROR_LENGTH, allow_empty=True)
        params = {
            "eid": id,
            "state": target.value,
            "output": output,
            "error": error,
            "now": utc_now(),
            "duration_ms": check_count(duration_ms, "duration_ms"),
            "tokens_used": check_count(tokens_used, "tokens_used"),
        }
        result = await self._uow.execute(_COMPLETE, params, action=action)
        row = result.first()
        if row is None:
            current = await self._uow.execute(_GET_STATE, {"id": id}, action=action)
            value = current.scalar_one_or_none()
            if value is None:
                raise NotFoundError(_ENTITY, id)
            raise InvalidStateTransitionError(_ENTITY, id, str(value), target.value)
        self._uow.keep_fresh(_R, row)
        return step_execution_from_row(row)

    async def get_stats(self, workflow_id: WorkflowId | str) -> ExecutionStats:
        """Counts, total duration and total tokens of the workflow's executions.

        Computed by one aggregate query; zeros for an unknown or empty workflow.
        """
        workflow_id = check_id(workflow_id, "workflow id")
        result = await self._uow.execute(
            _STATS_OF_WORKFLOW, {"wid": workflow_id}, action=f"get stats of workflow {workflow_id}"
        )
        return _stats_of(result.one())

    async def get_totals(self, definition_id: str | None = None) -> ExecutionStats:
        """Counts, total duration and total tokens over the executions of many workflows.

        Every workflow's executions when ``definition_id`` is ``None``, else only
        those of workflows of that definition. Computed by one aggregate query
        (a join with ``workflows`` when filtered); all zeros when nothing matches.
        """
        if definition_id is None:
            result = await self._uow.execute(_STATS, action="get totals of step executions")
        else:
            checked = check_text(definition_id, field="definition_id", max_length=MAX_ID_LENGTH)
            result = await self._uow.execute(
                _TOTALS_OF_DEFINITION,
                {"definition_id": checked},
                action="get totals of the step executions of a definition",
            )
        return _stats_of(result.one())

    def _values(self, execution: StepExecution) -> dict[str, Any]:
        if not isinstance(execution, StepExecution):
            raise ValidationError("expected a StepExecution")
        check_payloads(self._uow, execution.input, execution.output, execution.metadata)
        return step_execution_values(execution)


def _stats_of(row: Sequence[Any]) -> ExecutionStats:
    """Build :class:`ExecutionStats` from a row of the aggregate columns of ``_STATS``."""
    total, succeeded, failed, duration, tokens = tuple(row)
    return ExecutionStats(
        total_executions=int(total),
        succeeded_count=int(succeeded),
        failed_count=int(failed),
        total_duration_ms=int(duration),
        total_tokens=int(tokens),
    )
