"""The step execution repository: every attempt of every step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, case, func, insert, select, update

from ecl_persistence.domain import (
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
from ecl_persistence.orm import STEP_EXECUTIONS, WORKFLOWS
from ecl_persistence.repositories._checks import check_count, check_id, check_payloads
from ecl_persistence.repositories._rows import (
    json_column,
    optional_json_column,
    state_column,
    step_execution_from_values,
)

if TYPE_CHECKING:
    from ecl_persistence.unit_of_work import UnitOfWork

__all__ = ["StepExecutionRepository", "step_execution_to_domain", "step_execution_to_row"]

_T = STEP_EXECUTIONS.c
_TABLE = "step_executions"
_ENTITY = "step execution"
_FINISHED = (StepExecutionState.SUCCEEDED, StepExecutionState.FAILED)
_OPEN = (StepExecutionState.PENDING.value, StepExecutionState.RUNNING.value)

_SELECT = select(*STEP_EXECUTIONS.c)
_GET = _SELECT.where(_T.id == bindparam("id"))
_FOR_WORKFLOW = _SELECT.where(_T.workflow_id == bindparam("wid")).order_by(
    _T.started_at, _T.attempt, _T.id
)
_FOR_STEP = _SELECT.where(
    _T.workflow_id == bindparam("wid"), _T.step_id == bindparam("sid")
).order_by(_T.attempt)
_INSERT = insert(STEP_EXECUTIONS)
_GET_STATE = select(_T.state).where(_T.id == bindparam("id"))
_COMPLETE = (
    update(STEP_EXECUTIONS)
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
    .returning(*STEP_EXECUTIONS.c)
)
_LATEST = (
    select(_T.step_id, func.max(_T.attempt).label("attempt"))
    .where(_T.workflow_id == bindparam("wid"))
    .group_by(_T.step_id)
    .subquery("latest")
)
_LATEST_ATTEMPTS = (
    _SELECT.join(_LATEST, and_(_T.step_id == _LATEST.c.step_id, _T.attempt == _LATEST.c.attempt))
    .where(_T.workflow_id == bindparam("wid"))
    .order_by(_T.started_at, _T.step_id)
)
# Serialises the starts of a workflow's steps on PostgreSQL; NO KEY UPDATE
# still lets other transactions insert rows that reference the workflow.
# SQLite has no row locks and needs none: BEGIN IMMEDIATE serialises writers.
_LOCK_WORKFLOW = (
    select(WORKFLOWS.c.id).where(WORKFLOWS.c.id == bindparam("wid")).with_for_update(key_share=True)
)


def _next_attempt_value(column: str) -> Any:
    if column == "attempt":
        return func.coalesce(func.max(_T.attempt), 0) + 1
    return bindparam(column, type_=_T[column].type)


# The next attempt number is computed by the INSERT itself, after the lock above.
_INSERT_NEXT = (
    insert(STEP_EXECUTIONS)
    .from_select(
        [column.name for column in STEP_EXECUTIONS.c],
        select(*(_next_attempt_value(column.name) for column in STEP_EXECUTIONS.c)).where(
            _T.workflow_id == bindparam("workflow_id"), _T.step_id == bindparam("step_id")
        ),
    )
    .returning(*STEP_EXECUTIONS.c)
)

_STATS = select(
    func.count(),
    func.coalesce(func.sum(case((_T.state == StepExecutionState.SUCCEEDED.value, 1), else_=0)), 0),
    func.coalesce(func.sum(case((_T.state == StepExecutionState.FAILED.value, 1), else_=0)), 0),
    func.coalesce(func.sum(_T.duration_ms), 0),
    func.coalesce(func.sum(_T.tokens_used), 0),
).where(_T.workflow_id == bindparam("wid"))


def step_execution_to_domain(row: Sequence[Any]) -> StepExecution:
    """Build a :class:`StepExecution` from a ``step_executions`` row (table order)."""
    (id, workflow_id, step_id, attempt, state, input, output, error, started_at, completed_at,
     duration_ms, tokens_used, metadata) = row  # fmt: skip
    values = (
        id,
        workflow_id,
        step_id,
        attempt,
        state_column(StepExecutionState, state, table=_TABLE, id=id),
        json_column(input, table=_TABLE, column="input", id=id),
        optional_json_column(output, table=_TABLE, column="output", id=id),
        error,
        started_at,
        completed_at,
        duration_ms,
        tokens_used,
        json_column(metadata, table=_TABLE, column="metadata", id=id),
    )
    return step_execution_from_values(values, table=_TABLE, id=id)


def step_execution_to_row(execution: StepExecution) -> dict[str, Any]:
    """The bind parameters of a ``step_executions`` row for ``execution``."""
    return {
        "id": execution.id,
        "workflow_id": execution.workflow_id,
        "step_id": execution.step_id,
        "attempt": execution.attempt,
        "state": execution.state.value,
        "input": execution.input,
        "output": execution.output,
        "error": execution.error,
        "started_at": execution.started_at,
        "completed_at": execution.completed_at,
        "duration_ms": execution.duration_ms,
        "tokens_used": execution.tokens_used,
        "metadata": execution.metadata,
    }


class StepExecutionRepository:
    """Step executions of one unit of work: one row per attempt of a step."""

    __slots__ = ("_uow",)

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def create(self, execution: StepExecution) -> StepExecution:
        """Insert ``execution``.

        An unknown workflow, or an attempt number already recorded for the
        step, raises ConstraintViolationError.
        """
        action = f"create step execution {getattr(execution, 'id', '?')}"
        self._uow.require_writable(action)
        row = self._row(execution)
        await self._uow.execute(_INSERT, row, action=action)
        return execution

    async def start(
        self,
        workflow_id: WorkflowId,
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
        row = self._row(execution)
        locked = await self._uow.execute(_LOCK_WORKFLOW, {"wid": workflow_id}, action=action)
        if locked.first() is None:
            raise NotFoundError("workflow", workflow_id)
        result = await self._uow.execute(_INSERT_NEXT, row, action=action)
        return step_execution_to_domain(result.one())

    async def create_many(self, executions: Iterable[StepExecution]) -> list[StepExecution]:
        """Insert many executions in one batch (one round trip, not one per row).

        All or nothing: one bad row fails the batch and nothing of it is written.
        """
        self._uow.require_writable("create step executions")
        batch = list(executions)
        if not batch:
            return []
        rows = [self._row(execution) for execution in batch]
        await self._uow.execute(_INSERT, rows, action=f"create {len(rows)} step executions")
        return batch

    async def get(self, id: StepExecutionId) -> StepExecution | None:
        """The execution with this id, or ``None``."""
        check_id(id, "step execution id")
        result = await self._uow.execute(_GET, {"id": id}, action=f"get step execution {id}")
        row = result.first()
        return None if row is None else step_execution_to_domain(row)

    async def get_for_workflow(self, workflow_id: WorkflowId) -> list[StepExecution]:
        """Every execution of the workflow, in the order they started."""
        check_id(workflow_id, "workflow id")
        result = await self._uow.execute(
            _FOR_WORKFLOW, {"wid": workflow_id}, action=f"get step executions of {workflow_id}"
        )
        return [step_execution_to_domain(row) for row in result]

    async def get_for_step(
        self, workflow_id: WorkflowId, step_id: StepId | str
    ) -> list[StepExecution]:
        """Every attempt of one step of the workflow, first attempt first."""
        check_id(workflow_id, "workflow id")
        step = check_text(step_id, field="step_id", max_length=MAX_ID_LENGTH)
        result = await self._uow.execute(
            _FOR_STEP,
            {"wid": workflow_id, "sid": step},
            action=f"get attempts of a step of {workflow_id}",
        )
        return [step_execution_to_domain(row) for row in result]

    async def latest_attempts(self, workflow_id: WorkflowId) -> dict[StepId, StepExecution]:
        """The latest attempt of each step of the workflow, by step id, in one query.

        Ordered by start time; empty for an unknown workflow or one without steps.
        """
        check_id(workflow_id, "workflow id")
        result = await self._uow.execute(
            _LATEST_ATTEMPTS, {"wid": workflow_id}, action=f"get latest attempts of {workflow_id}"
        )
        latest = (step_execution_to_domain(row) for row in result)
        return {execution.step_id: execution for execution in latest}

    async def update_completion(
        self,
        id: StepExecutionId,
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
        action = f"complete step execution {id}"
        self._uow.require_writable(action)
        check_id(id, "step execution id")
        try:
            target = StepExecutionState(state)
        except ValueError:
            raise ValidationError("state is not a step execution state") from None
        if target not in _FINISHED:
            raise ValidationError("a step execution completes as succeeded or failed")
        if output is not MISSING:
            check_json(output, field="output", max_bytes=self._uow.max_payload_bytes)
        if error is not None:
            error = check_text(error, field="error", max_length=65536, allow_empty=True)
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
        return step_execution_to_domain(row)

    async def get_stats(self, workflow_id: WorkflowId) -> ExecutionStats:
        """Counts, total duration and total tokens of the workflow's executions.

        Computed by one aggregate query; zeros for an unknown or empty workflow.
        """
        check_id(workflow_id, "workflow id")
        result = await self._uow.execute(
            _STATS, {"wid": workflow_id}, action=f"get stats of workflow {workflow_id}"
        )
        return _stats_of(result.one())

    def _row(self, execution: StepExecution) -> dict[str, Any]:
        if not isinstance(execution, StepExecution):
            raise ValidationError("expected a StepExecution")
        check_payloads(self._uow, execution.input, execution.output, execution.metadata)
        return step_execution_to_row(execution)

    async def get_totals(self, definition_id: str | None = None) -> ExecutionStats:
        """Counts, total duration and total tokens over the executions of many workflows.

        Every workflow's executions when ``definition_id`` is ``None``, else only
        those of workflows of that definition. Computed by one aggregate query
        (a join with ``workflows`` when filtered); all zeros when nothing matches.
        """
        if definition_id is None:
            result = await self._uow.execute(_TOTALS, action="get totals of step executions")
        else:
            checked = check_text(definition_id, field="definition_id", max_length=MAX_ID_LENGTH)
            result = await self._uow.execute(
                _TOTALS_OF_DEFINITION,
                {"definition_id": checked},
                action="get totals of the step executions of a definition",
            )
        return _stats_of(result.one())


_TOTALS = select(*_STATS.selected_columns)
_TOTALS_OF_DEFINITION = _TOTALS.select_from(
    STEP_EXECUTIONS.join(WORKFLOWS, WORKFLOWS.c.id == _T.workflow_id)
).where(WORKFLOWS.c.definition_id == bindparam("definition_id"))


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
