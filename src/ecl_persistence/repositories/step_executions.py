"""The step execution repository: every attempt of every step.

One attempt at a time goes through ORM-enabled statements on
``StepExecutionRecord``; the histories of a workflow, its aggregates and
``create_many`` use rows of the table (``docs/concepts.md`` says why). The
statements live in ``_step_sql``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn

from sqlalchemy import Insert

from ecl_persistence.domain import (
    MAX_ERROR_LENGTH,
    MAX_ID_LENGTH,
    MISSING,
    ExecutionStats,
    JsonValue,
    Lease,
    Missing,
    StepExecution,
    StepExecutionId,
    StepExecutionState,
    StepId,
    TokenUsage,
    UsageRow,
    WorkflowId,
    check_cost,
    check_json,
    check_lease,
    check_model,
    check_text,
    utc_now,
)
from ecl_persistence.domain._fields import copy_metadata
from ecl_persistence.errors import InvalidStateTransitionError, NotFoundError, ValidationError
from ecl_persistence.orm import StepExecutionRecord
from ecl_persistence.repositories import _fencing
from ecl_persistence.repositories import _step_sql as sql
from ecl_persistence.repositories._checks import check_count, check_id, check_payloads
from ecl_persistence.repositories._context import UnitContext
from ecl_persistence.repositories._leases import lease_params
from ecl_persistence.repositories._ledger import Grouping, ledger
from ecl_persistence.repositories._payload_store import offload, offload_many
from ecl_persistence.repositories.mappers import (
    step_execution_from_record,
    step_execution_from_row,
    step_execution_values,
    usage_values,
)

__all__ = ["StepExecutionRepository"]

_ENTITY = "step execution"
_FINISHED = (StepExecutionState.SUCCEEDED, StepExecutionState.FAILED)


class StepExecutionRepository:
    """Step executions of one unit of work: one row per attempt of a step."""

    __slots__ = ("_uow",)

    def __init__(self, uow: UnitContext) -> None:
        self._uow = uow

    async def create(
        self, execution: StepExecution, *, lease: Lease | None = None
    ) -> StepExecution:
        """Insert ``execution``.

        An unknown workflow, or an attempt number already recorded for the
        step, raises ConstraintViolationError. With ``lease`` (a fencing
        token, :class:`~ecl_persistence.Lease`) the row is inserted only if
        that lease is still the workflow's: LeaseLostError (NotFoundError for
        an unknown workflow) otherwise, with nothing written.
        """
        action = f"create step execution {getattr(execution, 'id', '?')}"
        self._uow.require_writable(action)
        values = self._values(execution)
        await offload(self._uow, values)
        if lease is None:
            await self._uow.execute(sql.INSERT, values, action=action)
            return execution
        values.update(lease_params(check_lease(lease, execution.workflow_id)))
        statement = sql.insert_under_workflow(self._uow.strategy, False, True)
        await self._inserted(statement, values, lease, action)
        return execution

    async def start(
        self,
        workflow_id: WorkflowId | str,
        step_id: StepId | str,
        input: JsonValue,
        *,
        attempt: int | None = None,
        metadata: Mapping[str, JsonValue] | None = None,
        lease: Lease | None = None,
    ) -> StepExecution:
        """Record a running attempt of a step, started now, and return it.

        With ``attempt=None`` the database picks the next attempt number of
        the step (1 for its first run), race-free: concurrent starts of steps
        of one workflow are serialised (a row lock on the workflow on
        PostgreSQL, the write lock on SQLite), so each gets its own number.
        An explicit ``attempt`` is stored as given, like :meth:`create` would.
        An unknown workflow raises NotFoundError (ConstraintViolationError
        with an explicit attempt); a taken attempt number,
        ConstraintViolationError. With ``lease``, the attempt is recorded only
        under that lease, checked in the INSERT itself: LeaseLostError if it
        is not current, with nothing written.
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
            return await self.create(execution, lease=lease)
        action = f"start step execution {execution.id}"
        self._uow.require_writable(action)
        values = self._values(execution)
        if lease is not None:
            values.update(lease_params(check_lease(lease, execution.workflow_id)))
        strategy = self._uow.strategy
        # The domain object parsed the id: the workflow_id given may be its text.
        locked = await self._uow.execute(
            sql.lock_workflow(strategy), {"wid": execution.workflow_id}, action=action
        )
        if locked.first() is None:
            raise NotFoundError("workflow", execution.workflow_id)
        await offload(self._uow, values)
        statement = sql.insert_under_workflow(strategy, True, lease is not None)
        return await self._inserted(statement, values, lease, action)

    async def _inserted(
        self, statement: Insert, values: dict[str, Any], lease: Lease | None, action: str
    ) -> StepExecution:
        """Run an INSERT selected from the workflow's row; explain a row it did not insert."""
        row = (await self._uow.execute(statement, values, action=action)).first()
        if row is None:
            if lease is not None:
                await _fencing.check_current(self._uow, lease, action)
            raise NotFoundError("workflow", values["workflow_id"])
        return step_execution_from_row(row)

    async def create_many(self, executions: Iterable[StepExecution]) -> list[StepExecution]:
        """Insert many executions in one batch (one round trip, not one per row).

        All or nothing: one bad row fails the batch and nothing of it is written.
        """
        self._uow.require_writable("create step executions")
        batch = list(executions)
        if not batch:
            return []
        rows = [self._values(execution) for execution in batch]
        await offload_many(self._uow, rows)
        await self._uow.execute(sql.INSERT, rows, action=f"create {len(rows)} step executions")
        return batch

    async def get(self, id: StepExecutionId | str) -> StepExecution | None:
        """The execution with this id (a UUID or its text), or ``None``."""
        id = check_id(id, "step execution id")
        result = await self._uow.execute(sql.GET, {"id": id}, action=f"get step execution {id}")
        record = result.scalars().first()
        return None if record is None else step_execution_from_record(record)

    async def get_for_workflow(self, workflow_id: WorkflowId | str) -> list[StepExecution]:
        """Every execution of the workflow, in the order they started."""
        workflow_id = check_id(workflow_id, "workflow id")
        result = await self._uow.execute(
            sql.FOR_WORKFLOW, {"wid": workflow_id}, action=f"get step executions of {workflow_id}"
        )
        return [step_execution_from_row(row) for row in result]

    async def get_for_step(
        self, workflow_id: WorkflowId | str, step_id: StepId | str
    ) -> list[StepExecution]:
        """Every attempt of one step of the workflow, first attempt first."""
        workflow_id = check_id(workflow_id, "workflow id")
        step = check_text(step_id, field="step_id", max_length=MAX_ID_LENGTH)
        result = await self._uow.execute(
            sql.FOR_STEP,
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
            sql.LATEST_ATTEMPTS,
            {"wid": workflow_id},
            action=f"get latest attempts of {workflow_id}",
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
        metadata: Mapping[str, JsonValue] | None = None,
        lease: Lease | None = None,
        usage: TokenUsage | None = None,
        model: str | None = None,
        cost: Decimal | None = None,
    ) -> StepExecution:
        """Finish a pending or running execution as succeeded or failed; return it.

        Sets ``completed_at``; stores ``output`` (MISSING leaves none, ``None``
        is JSON null), ``error`` and ``duration_ms``; ``tokens_used``,
        ``metadata``, ``usage``, ``model`` and ``cost`` replace the recorded
        ones when given. A ``usage`` sets ``tokens_used`` to its total; with
        a ``model`` too and no ``cost``, the database's price book (if it
        has a price for the model) fills in the cost. Finishing an
        execution that is already finished raises InvalidStateTransitionError
        and changes nothing. With ``lease``, the execution must be one of the
        lease's workflow (ValidationError otherwise) and is finished only if
        that lease is still current, checked in the UPDATE itself:
        LeaseLostError otherwise, with nothing changed.
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
        document: dict[str, JsonValue] | Missing = MISSING
        if metadata is not None:
            document = copy_metadata(metadata)
            check_json(document, field="metadata", max_bytes=self._uow.max_payload_bytes)
        if usage is not None and not isinstance(usage, TokenUsage):
            raise ValidationError(f"usage must be a TokenUsage, not {type(usage).__name__}")
        model = check_model(model)
        cost = check_cost(cost)
        if cost is None and self._uow.price_book is not None:
            cost = self._uow.price_book.cost(model, usage)
        tokens_used = check_count(tokens_used, "tokens_used")
        if usage is not None:
            tokens_used = usage.total
        params: dict[str, Any] = {
            "eid": id,
            "state": target.value,
            "output": output,
            "output_ref": None,
            "error": error,
            "now": utc_now(),
            "duration_ms": check_count(duration_ms, "duration_ms"),
            "tokens_used": tokens_used,
            "metadata": document,
            **usage_values(usage),
            "model": model,
            "cost": cost,
        }
        if lease is not None:
            params.update(lease_params(check_lease(lease)))
        await offload(self._uow, params, "output")
        statement = sql.complete(self._uow.strategy, lease is not None)
        row = (await self._uow.execute(statement, params, action=action)).first()
        if row is None:
            await self._explain_unfinished(id, target, lease, action)
        self._uow.keep_fresh(StepExecutionRecord, row)
        return step_execution_from_row(row)

    async def _explain_unfinished(
        self, id: StepExecutionId, target: StepExecutionState, lease: Lease | None, action: str
    ) -> NoReturn:
        """Why :meth:`update_completion` finished nothing: raise the error that says it."""
        if lease is not None:
            found = await self._uow.execute(sql.GET_WORKFLOW, {"id": id}, action=action)
            workflow_id = found.scalar_one_or_none()
            if workflow_id is None:
                raise NotFoundError(_ENTITY, id)
            check_lease(lease, workflow_id)
            await _fencing.check_current(self._uow, lease, action)
        current = await self._uow.execute(sql.GET_STATE, {"id": id}, action=action)
        value = current.scalar_one_or_none()
        if value is None:
            raise NotFoundError(_ENTITY, id)
        raise InvalidStateTransitionError(_ENTITY, id, str(value), target.value)

    async def get_stats(self, workflow_id: WorkflowId | str) -> ExecutionStats:
        """Counts, total duration and total tokens of the workflow's executions.

        Computed by one aggregate query; zeros for an unknown or empty workflow.
        """
        workflow_id = check_id(workflow_id, "workflow id")
        result = await self._uow.execute(
            sql.STATS_OF_WORKFLOW,
            {"wid": workflow_id},
            action=f"get stats of workflow {workflow_id}",
        )
        return _stats_of(result.one())

    async def get_totals(self, definition_id: str | None = None) -> ExecutionStats:
        """Counts, total duration and total tokens over the executions of many workflows.

        Every workflow's executions when ``definition_id`` is ``None``, else only
        those of workflows of that definition. Computed by one aggregate query
        (a join with ``workflows`` when filtered); all zeros when nothing matches.
        """
        if definition_id is None:
            result = await self._uow.execute(sql.STATS, action="get totals of step executions")
        else:
            checked = check_text(definition_id, field="definition_id", max_length=MAX_ID_LENGTH)
            result = await self._uow.execute(
                sql.TOTALS_OF_DEFINITION,
                {"definition_id": checked},
                action="get totals of the step executions of a definition",
            )
        return _stats_of(result.one())

    async def usage(
        self,
        *,
        workflow_id: WorkflowId | str | None = None,
        definition_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: Grouping | None = None,
    ) -> list[UsageRow]:
        """The ledger: attempts, tokens of each kind and cost, summed in SQL.

        Over every attempt, or those of one workflow, of the workflows of one
        definition, and started from ``since`` (inclusive) to ``until``
        (exclusive), both aware datetimes. ``group_by`` is ``"model"``,
        ``"definition"``, ``"day"`` (the UTC day an attempt started, as
        ``YYYY-MM-DD``) or None for one row over everything; rows come in
        the order of their key, and none when no attempt matches. A row's
        ``cost`` sums the attempts that have one (None when none has).
        """
        return await ledger(
            self._uow,
            workflow_id=workflow_id,
            definition_id=definition_id,
            since=since,
            until=until,
            group_by=group_by,
        )

    def _values(self, execution: StepExecution) -> dict[str, Any]:
        if not isinstance(execution, StepExecution):
            raise ValidationError("expected a StepExecution")
        check_payloads(self._uow, execution.input, execution.output, execution.metadata)
        values = step_execution_values(execution)
        if execution.cost is None and self._uow.price_book is not None:
            values["cost"] = self._uow.price_book.cost(execution.model, execution.usage)
        return values


def _stats_of(row: Sequence[Any]) -> ExecutionStats:
    """Build :class:`ExecutionStats` from a row of the aggregate columns of ``sql.STATS``."""
    total, succeeded, failed, duration, tokens, cost = tuple(row)
    return ExecutionStats(
        total_executions=int(total),
        succeeded_count=int(succeeded),
        failed_count=int(failed),
        total_duration_ms=int(duration),
        total_tokens=int(tokens),
        total_cost=cost,
    )
