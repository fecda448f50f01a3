"""What an operator does to workflows: cancel, retry, fork, and limit by concurrency key.

See ``docs/operations.md`` for what each writes. Every state change is
recorded in the audit trail, in the same transaction, by the caller's
``actor`` and for its ``reason``.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import attrs
from sqlalchemy import Table, bindparam, insert, literal_column, select, update

from ecl_persistence.dialects import LockMode
from ecl_persistence.domain import (
    MAX_ID_LENGTH,
    MISSING,
    ConcurrencyLimit,
    JsonValue,
    Missing,
    StepExecutionState,
    StepId,
    Workflow,
    WorkflowId,
    WorkflowState,
    WorkflowTransition,
    check_actor,
    check_concurrency_key,
    check_max_running,
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
from ecl_persistence.orm import StepExecutionRecord, WorkflowRecord
from ecl_persistence.orm.types import UTCDateTime
from ecl_persistence.repositories import _concurrency, transitions
from ecl_persistence.repositories import _workflow_sql as sql
from ecl_persistence.repositories._checks import check_id, check_payloads
from ecl_persistence.repositories._values import state_value
from ecl_persistence.repositories._workflow_base import (
    ENTITY,
    TABLE_NAME,
    WorkflowRepositoryBase,
    one_workflow,
)
from ecl_persistence.repositories.mappers import workflow_values

__all__ = ["WorkflowOperations"]

_W = WorkflowRecord
_STEPS = cast("Table", StepExecutionRecord.__table__)
_S = _STEPS.c
_RUNNING = WorkflowState.RUNNING

# What cancel needs to decide, read with the row locked as for an update.
_STATUS = select(_W.state, _W.lease_expires_at, _W.cancel_requested_at, _W.error).where(
    _W.id == bindparam("wid")
)
_REQUESTED = (_W.id == bindparam("wid"), _W.state == literal_column(f"'{_RUNNING.value}'"))
_REQUEST_CANCEL = (
    update(_W)
    .where(*_REQUESTED)
    .values(
        cancel_requested_at=bindparam("now", type_=UTCDateTime()),
        updated_at=bindparam("now", type_=UTCDateTime()),
        version=_W.version + 1,
    )
    .returning(_W)
    .execution_options(synchronize_session=False, populate_existing=True)
)
# The attempts of a workflow, in the order they started: what a fork copies from.
_ATTEMPTS = (
    select(_S.id, _S.step_id, _S.attempt, _S.state, _S.started_at)
    .where(_S.workflow_id == bindparam("wid"))
    .order_by(_S.started_at, _S.attempt, _S.id)
)


def _copy_statement() -> Any:
    """Copy the attempt ``source`` into workflow ``copy_workflow`` as ``copy_id``.

    Every column is copied as it is stored, except the three that make it
    the fork's (its id, its workflow, ``copied_from``): a column added to
    ``step_executions`` later is copied with no change here.
    """
    overrides: dict[str, Any] = {
        "id": bindparam("copy_id", type_=_S.id.type),
        "workflow_id": bindparam("copy_workflow", type_=_S.workflow_id.type),
        "copied_from": _S.id,
    }
    columns = [overrides.get(column.name, column) for column in _STEPS.c]
    source = select(*columns).where(_S.id == bindparam("source", type_=_S.id.type))
    return insert(_STEPS).from_select([column.name for column in _STEPS.c], source)


_COPY = _copy_statement()


class WorkflowOperations(WorkflowRepositoryBase):
    """Cancel, retry and fork workflows; set the concurrency limits of keys."""

    __slots__ = ()

    async def cancel(
        self, id: WorkflowId | str, *, reason: str | None = None, actor: str | None = None
    ) -> Workflow:
        """Cancel the workflow, or ask its worker to; return it as it now is.

        A pending or failed workflow, or a running one whose lease expired
        (its worker is gone), becomes cancelled at once: ``completed_at`` is
        set and any lease ends. A running one with a live lease gets a cancel
        request (``cancel_requested_at``): its :class:`~ecl_persistence.WorkflowRun`
        sees it at its next heartbeat, cancels its block, records the attempt
        in flight as failed with ``cancelled`` and cancels the workflow.
        Asking again while a request is pending changes nothing. No claim
        takes a workflow with a cancel request. Each change is in the audit
        trail, by ``actor``, for ``reason``. Raises NotFoundError, and
        InvalidStateTransitionError for a completed or cancelled workflow.
        """
        id = WorkflowId(check_id(id, "workflow id"))
        action = f"cancel workflow {id}"
        self._uow.require_writable(action)
        actor, reason = check_actor(actor), check_reason(reason)
        status = self._uow.strategy.lock(_STATUS, LockMode.UPDATE)
        row = (await self._uow.execute(status, {"wid": id}, action=action)).first()
        if row is None:
            raise NotFoundError(ENTITY, id)
        stored, expires, requested, error = tuple(row)
        state = state_value(WorkflowState, stored, table=TABLE_NAME, id=id)
        if state in (WorkflowState.COMPLETED, WorkflowState.CANCELLED):
            raise InvalidStateTransitionError(
                ENTITY, id, state.value, WorkflowState.CANCELLED.value
            )
        now = utc_now()
        if state is _RUNNING and expires is not None and expires >= now:
            if requested is not None:
                return await self._get_entity(id, action)
            return await self._request_cancel(id, now, actor, reason or "cancel requested", action)
        why = reason or "cancelled"
        return await self._update_state(id, WorkflowState.CANCELLED, error, actor, why)

    async def retry(
        self, id: WorkflowId | str, *, actor: str | None = None, reason: str | None = None
    ) -> Workflow:
        """Make a failed or cancelled workflow pending again, for any worker to claim.

        Its history stays: its attempts, artifacts and transitions. Its next
        run skips every step whose latest attempt succeeded (the run's
        memoized steps) and runs the others as their next attempt, whose
        retry policy counts the failures from the retry on. The error,
        ``completed_at`` and any cancel request are cleared; ``version`` is
        bumped and the audit trail records the move, by ``actor``, for
        ``reason`` (default: ``retry``). Raises NotFoundError, and
        InvalidStateTransitionError for a workflow in any other state.
        """
        id = WorkflowId(check_id(id, "workflow id"))
        actor, reason = check_actor(actor), check_reason(reason)
        # Claimable from here on: issue 18's wake-up (NOTIFY) goes after this move.
        return await self._update_state(id, WorkflowState.PENDING, None, actor, reason or "retry")

    async def fork(
        self,
        id: WorkflowId | str,
        *,
        from_step: StepId | str,
        input: JsonValue | Missing = MISSING,
        actor: str | None = None,
    ) -> Workflow:
        """Start a new pending workflow that reruns workflow ``id`` from ``from_step`` on.

        The fork has the original's definition, metadata, priority and
        concurrency key, its input (or ``input``), and ``forked_from = id``.
        For every step that started before ``from_step`` in the original
        (by the start of its first attempt), the latest attempt that
        succeeded is copied into the fork, column for column, with
        ``copied_from`` naming the attempt copied: a run of the fork returns
        those outputs without calling their code, and runs ``from_step`` and
        what follows. A workflow still running can be forked: the copy is a
        snapshot of what was stored. The audit trail records the fork's
        creation by ``actor``, naming the original. Raises NotFoundError, and
        ValidationError when the original never ran ``from_step``.
        """
        id = WorkflowId(check_id(id, "workflow id"))
        action = f"fork workflow {id}"
        self._uow.require_writable(action)
        step = StepId(check_text(from_step, field="from_step", max_length=MAX_ID_LENGTH))
        actor = check_actor(actor)
        original = await self._get_entity(id, action)
        first: dict[str, datetime] = {}
        succeeded: dict[str, tuple[int, Any]] = {}
        for row in await self._uow.execute(_ATTEMPTS, {"wid": id}, action=action):
            attempt_id, step_id, attempt, state, started_at = tuple(row)
            first.setdefault(step_id, started_at)
            latest = succeeded.get(step_id)
            if state == StepExecutionState.SUCCEEDED.value and (
                latest is None or attempt > latest[0]
            ):
                succeeded[step_id] = (attempt, attempt_id)
        if step not in first:
            raise ValidationError(f"{action}: the workflow has no step with that id (from_step)")
        copied = [succeeded[s][1] for s, at in first.items() if at < first[step] and s in succeeded]
        fork = attrs.evolve(
            Workflow.new(
                original.definition_id,
                original.input if input is MISSING else input,
                metadata=original.metadata,
                priority=original.priority,
                concurrency_key=original.concurrency_key,
            ),
            forked_from=original.id,
        )
        check_payloads(self._uow, fork.input, fork.output, fork.metadata)
        # The fork is claimable once this commits (issue 18's wake-up goes here too).
        await self._uow.execute(sql.INSERT, workflow_values(fork), action=action)
        why = f"forked from workflow {id} at step {step}"
        await transitions.record(
            self._uow, [WorkflowTransition.of(fork, None, actor=actor, reason=why)], action
        )
        if copied:
            copies = [
                {"copy_id": new_uuid7(), "copy_workflow": fork.id, "source": source}
                for source in copied
            ]
            await self._uow.execute(_COPY, copies, action=action)
        return fork

    async def set_concurrency_limit(
        self, key: str, max_running: int | None
    ) -> ConcurrencyLimit | None:
        """Let at most ``max_running`` workflows of ``key`` run at once; ``None`` removes it.

        Claims then never take a workflow of ``key`` while ``max_running`` of
        them are running with a live lease, on either backend, however many
        processes claim at once (``docs/operations.md`` says how). 0 pauses
        the key. Lowering a limit stops no running workflow: claims wait
        until enough of them end. Returns the limit with its running count,
        or ``None`` once removed.
        """
        key = check_concurrency_key(key)
        action = f"set the concurrency limit of key {key!r}"
        self._uow.require_writable(action)
        if max_running is None:
            await self._uow.execute(_concurrency.DELETE, {"limit_key": key}, action=action)
            return None
        now = utc_now()
        params = {"limit_key": key, "limit_max": check_max_running(max_running), "now": now}
        if _rowcount(await self._uow.execute(_concurrency.UPDATE, params, action=action)) == 0:
            insert = _concurrency.insert(self._uow.strategy)
            if _rowcount(await self._uow.execute(insert, params, action=action)) == 0:
                # Inserted by a racing set, committed meanwhile: this one is the later.
                await self._uow.execute(_concurrency.UPDATE, params, action=action)
        (limit,) = await _concurrency.list_limits(self._uow, now, key)
        return limit

    async def concurrency_limits(self) -> builtins.list[ConcurrencyLimit]:
        """Every concurrency limit, by key, with how many of its workflows run now."""
        return await _concurrency.list_limits(self._uow, utc_now())

    # --- inside ----------------------------------------------------------------------

    async def _get_entity(self, id: WorkflowId, action: str) -> Workflow:
        workflow = one_workflow(await self._uow.execute(sql.GET, {"id": id}, action=action))
        if workflow is None:
            raise NotFoundError(ENTITY, id)
        return workflow

    async def _request_cancel(
        self, id: WorkflowId, now: datetime, actor: str | None, reason: str, action: str
    ) -> Workflow:
        """Record the request (running to running, by ``actor``) and store it."""
        params = {
            "wid": id,
            "now": now,
            "transition_id": new_uuid7(),
            "transition_actor": actor,
            "transition_reason": reason,
        }
        record = transitions.record_change(self._uow.strategy, _RUNNING, *_REQUESTED)
        await self._uow.execute(record, params, action=action)
        workflow = one_workflow(await self._uow.execute(_REQUEST_CANCEL, params, action=action))
        if workflow is None:  # pragma: no cover - the row is locked and was just read
            raise ConflictError(f"{action}: changed concurrently")
        return workflow

    async def _update_state(
        self,
        id: WorkflowId,
        target: WorkflowState,
        error: str | None,
        actor: str | None,
        reason: str,
    ) -> Workflow:
        return await self.update_state(id, target, error, actor=actor, reason=reason)

    if TYPE_CHECKING:
        # The repository's own (``WorkflowRepository.update_state``).
        async def update_state(
            self,
            id: WorkflowId | str,
            state: WorkflowState,
            error: str | None = None,
            *,
            actor: str | None = None,
            reason: str | None = None,
        ) -> Workflow: ...


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
