"""The workflow repository: one workflow at a time, and its aggregate.

Its claims and leases live in ``_workflow_leases``, its listings and counts
in ``_workflow_listings``, cancel, retry, fork and concurrency limits in
``_workflow_operations``, its statements in ``_workflow_sql``; the class
below brings them together.
"""

from __future__ import annotations

import builtins
from typing import Any

from ecl_persistence.domain import (
    MAX_ERROR_LENGTH,
    MISSING,
    JsonValue,
    Lease,
    Missing,
    ResumePoint,
    Workflow,
    WorkflowAggregate,
    WorkflowId,
    WorkflowState,
    WorkflowTransition,
    check_actor,
    check_json,
    check_reason,
    check_text,
    new_uuid7,
    utc_now,
)
from ecl_persistence.errors import (
    ConflictError,
    InvalidStateTransitionError,
    NotFoundError,
    ValidationError,
)
from ecl_persistence.repositories import _workflow_sql as sql
from ecl_persistence.repositories import transitions
from ecl_persistence.repositories._checks import check_id, check_payloads
from ecl_persistence.repositories._payload_store import offload, referenced_by_workflows, sweep
from ecl_persistence.repositories._values import same_json
from ecl_persistence.repositories._wakeups import announce_claimable
from ecl_persistence.repositories._workflow_base import (
    ENTITY,
    as_state,
    expect_lease,
    expect_version,
    one_workflow,
    one_workflow_row,
)
from ecl_persistence.repositories._workflow_leases import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    WorkflowLeases,
)
from ecl_persistence.repositories._workflow_listings import WorkflowListings
from ecl_persistence.repositories._workflow_operations import WorkflowOperations
from ecl_persistence.repositories.mappers import (
    artifact_from_record,
    step_execution_from_record,
    transition_from_record,
    workflow_from_record,
    workflow_from_row,
    workflow_values,
)

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "WorkflowRepository"]


class WorkflowRepository(WorkflowLeases, WorkflowListings, WorkflowOperations):
    """Workflows of one unit of work.

    Every method returns detached :class:`Workflow` values; changing one means
    calling a method here, which writes in the unit's transaction.
    """

    __slots__ = ()

    async def create(self, workflow: Workflow, *, actor: str | None = None) -> Workflow:
        """Insert ``workflow`` and return the stored workflow.

        That is ``workflow`` itself, unless it carries an idempotency key
        already stored for its definition: then it is the workflow stored
        first (see :meth:`create_or_get`). A duplicate id raises
        ConstraintViolationError. The audit trail records the creation, by
        ``actor`` if given (see :meth:`history`).
        """
        stored, _created = await self.create_or_get(workflow, actor=actor)
        return stored

    async def create_or_get(
        self, workflow: Workflow, *, actor: str | None = None
    ) -> tuple[Workflow, bool]:
        """Insert ``workflow``; return the stored workflow and whether it was created now.

        Without an idempotency key this always inserts. With one, the first
        workflow stored with that key for its definition wins: a retried start
        returns it with ``False`` instead of starting a second workflow, even
        when the retries race. The same key with another input raises
        ConflictError (not retryable), and nothing is written.

        A workflow created now gets its first transition (from no state to
        its state, by ``actor``, for the reason of its ``error`` if it has
        one) in the same transaction.
        """
        if not isinstance(workflow, Workflow):
            raise ValidationError("create expects a Workflow")
        action = f"create workflow {workflow.id}"
        self._uow.require_writable(action)
        check_payloads(self._uow, workflow.input, workflow.output, workflow.metadata)
        created = WorkflowTransition.of(workflow, None, actor=actor, reason=workflow.error)
        values = workflow_values(workflow)
        await offload(self._uow, values)
        if workflow.idempotency_key is None:
            await self._uow.execute(sql.INSERT, values, action=action)
            await self._created(workflow, created, action)
            return workflow, True
        keyed = sql.insert_keyed(self._uow.strategy)
        inserted = await self._uow.execute(keyed, values, action=action)
        if inserted.first() is not None:
            await self._created(workflow, created, action)
            return workflow, True
        params = {"definition_id": workflow.definition_id, "key": workflow.idempotency_key}
        existing = one_workflow(await self._uow.execute(sql.GET_BY_KEY, params, action=action))
        if existing is None:
            raise ConflictError(
                f"{action}: the workflow with its idempotency key was deleted meanwhile"
            )
        if not same_json(existing.input, workflow.input):
            raise ConflictError(
                f"{action}: idempotency key already used by workflow {existing.id} "
                "with another input",
                retryable=False,
            )
        return existing, False

    async def _created(self, workflow: Workflow, created: WorkflowTransition, action: str) -> None:
        await transitions.record(self._uow, [created], action)
        if workflow.state is WorkflowState.PENDING:
            await announce_claimable(self._uow, workflow.definition_id, action)

    async def get(self, id: WorkflowId | str) -> Workflow | None:
        """The workflow with this id (a UUID or its text), or ``None``."""
        id = check_id(id, "workflow id")
        row = (
            await self._uow.execute(sql.GET_ROW, {"id": id}, action=f"get workflow {id}")
        ).first()
        return None if row is None else workflow_from_row(row)

    async def load(self, id: WorkflowId | str) -> WorkflowAggregate | None:
        """The workflow with its attempts, artifacts, transitions and stats, or ``None``.

        Read through the entity's relationships with ``selectinload``: one
        query for the workflow and one per collection, whatever their sizes.
        """
        id = check_id(id, "workflow id")
        result = await self._uow.execute(sql.LOAD, {"id": id}, action=f"load workflow {id}")
        record = result.scalars().first()
        if record is None:
            return None
        return WorkflowAggregate(
            workflow=workflow_from_record(record),
            step_executions=tuple(map(step_execution_from_record, record.step_executions)),
            artifacts=tuple(map(artifact_from_record, record.artifacts)),
            transitions=tuple(map(transition_from_record, record.transitions)),
        )

    async def resume_point(self, id: WorkflowId | str) -> ResumePoint:
        """The workflow and the latest attempt of each of its steps, to resume it.

        Steps whose latest attempt succeeded are in ``succeeded`` (skip them);
        steps whose latest attempt failed or never finished are in
        ``to_retry`` with their next attempt number. Raises NotFoundError.
        """
        id = check_id(id, "workflow id")
        aggregate = await self.load(id)
        if aggregate is None:
            raise NotFoundError(ENTITY, id)
        return aggregate.resume_point()

    async def history(self, id: WorkflowId | str) -> builtins.list[WorkflowTransition]:
        """Every state change of the workflow, oldest first: its audit trail.

        One :class:`WorkflowTransition` per change made through this
        repository (creation, :meth:`update_state`, :meth:`claim`,
        :meth:`release`), ordered by the workflow's version after each. An
        unknown id, like a deleted or purged workflow, has an empty history.
        """
        id = check_id(id, "workflow id")
        return await transitions.history(self._uow, id)

    async def update_state(
        self,
        id: WorkflowId | str,
        state: WorkflowState,
        error: str | None = None,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        lease: Lease | None = None,
        output: JsonValue | Missing = MISSING,
    ) -> Workflow:
        """Move the workflow to ``state`` and return it as it now is.

        The move follows the lifecycle rules (:data:`WORKFLOW_TRANSITIONS`) and is
        a compare-and-set in SQL, so two racing moves cannot both win. It
        sets ``updated_at``, sets ``completed_at`` on completed, failed and cancelled (and
        clears it otherwise), stores ``error`` (``None`` clears it), bumps
        ``version``, and ends the lease of a workflow that completes or fails.
        The audit trail records the move in the same transaction, by ``actor``
        (say who: a worker id, a user), for ``reason`` (default: ``error``).

        With ``expected_version`` the move happens only if the stored workflow
        is still at that version; with ``lease`` (a fencing token, see
        :class:`~ecl_persistence.Lease`) only if that lease is still the
        workflow's, checked in the same statement. With ``output`` the same
        statement also stores the workflow's output (as :meth:`update_output`
        would, in one write instead of two). Raises NotFoundError,
        LeaseLostError (the lease is not current), ConflictError (another
        change came first) or InvalidStateTransitionError, with nothing changed.
        """
        id = check_id(id, "workflow id")
        action = f"update state of workflow {id}"
        self._uow.require_writable(action)
        target = as_state(state)
        with_output = output is not MISSING
        if with_output:
            check_json(output, field="output", max_bytes=self._uow.max_payload_bytes)
        if error is not None:
            error = check_text(error, field="error", max_length=MAX_ERROR_LENGTH, allow_empty=True)
        actor, reason = check_actor(actor), check_reason(reason)
        params: dict[str, Any] = {
            "wid": id,
            "error": error,
            "now": utc_now(),
            "transition_id": new_uuid7(),
            "transition_actor": actor,
            "transition_reason": error if reason is None else reason,
        }
        if with_output:
            params["output"] = output
        versioned = expect_version(params, expected_version)
        fenced = expect_lease(params, lease, id)
        # Recorded first: the INSERT reads the state being left and locks the row.
        record = sql.record_state(self._uow.strategy, target, versioned, fenced)
        recorded = await self._uow.execute(record, params, action=action)
        if _rowcount(recorded) == 0:
            current, _owner = await self._diagnose(id, expected_version, action, lease)
            raise InvalidStateTransitionError(ENTITY, id, current.value, target.value)
        statement = sql.update_state(target, versioned, fenced, with_output)
        result = await self._uow.execute(statement, params, action=action)
        workflow = one_workflow_row(self._uow, result)
        if workflow is None:  # pragma: no cover - the row is locked and was just checked
            raise ConflictError(f"{action}: changed concurrently")
        return workflow

    async def update_output(
        self,
        id: WorkflowId | str,
        output: JsonValue,
        *,
        expected_version: int | None = None,
        lease: Lease | None = None,
    ) -> Workflow:
        """Store the workflow's output (``None`` is JSON null) and return the workflow.

        With ``expected_version``, only if the stored workflow is still at that
        version (ConflictError otherwise); with ``lease``, only if that lease
        is still the workflow's (LeaseLostError otherwise). Nothing changes then.
        """
        id = check_id(id, "workflow id")
        action = f"update output of workflow {id}"
        self._uow.require_writable(action)
        check_json(output, field="output", max_bytes=self._uow.max_payload_bytes)
        params: dict[str, Any] = {"wid": id, "output": output, "output_ref": None}
        params["now"] = utc_now()
        await offload(self._uow, params, "output")
        versioned = expect_version(params, expected_version)
        statement = sql.update_output(versioned, expect_lease(params, lease, id))
        workflow = one_workflow(await self._uow.execute(statement, params, action=action))
        if workflow is None:
            await self._diagnose(id, expected_version, action, lease)
            raise ConflictError(f"{action}: changed concurrently")  # pragma: no cover
        return workflow

    async def delete(self, id: WorkflowId | str) -> None:
        """Delete the workflow; the database deletes its step executions and artifacts."""
        id = check_id(id, "workflow id")
        action = f"delete workflow {id}"
        self._uow.require_writable(action)
        refs = await self._uow.execute(
            referenced_by_workflows([id]), action=f"{action}: its payloads"
        )
        candidates = [row[0] for row in refs]
        result = await self._uow.execute(sql.DELETE, {"id": id}, action=action)
        if _rowcount(result) == 0:
            raise NotFoundError(ENTITY, id)
        # Payloads only this workflow referred to go with it.
        await sweep(self._uow, candidates)


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
