"""The workflow repository."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from ecl_persistence.domain import (
    MAX_ID_LENGTH,
    WORKFLOW_TRANSITIONS,
    JsonValue,
    Page,
    ResumePoint,
    StepExecutionState,
    StepId,
    Workflow,
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
from ecl_persistence.orm import WORKFLOWS
from ecl_persistence.orm.types import UTCDateTime
from ecl_persistence.repositories import _leases, transitions
from ecl_persistence.repositories._checks import check_aware, check_id, check_limit, check_payloads
from ecl_persistence.repositories._cursor import decode_cursor, encode_cursor
from ecl_persistence.repositories._rows import (
    json_column,
    optional_json_column,
    same_json,
    state_column,
    workflow_from_values,
)

if TYPE_CHECKING:
    from ecl_persistence.unit_of_work import UnitOfWork

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "WorkflowRepository",
    "workflow_to_domain",
    "workflow_to_row",
]

_T = WORKFLOWS.c
_TABLE = "workflows"
_ENTITY = "workflow"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_SELECT = select(*WORKFLOWS.c)
_GET = _SELECT.where(_T.id == bindparam("id"))
_INSERT = insert(WORKFLOWS)
_GET_STATUS = select(_T.state, _T.version, _T.lease_owner).where(_T.id == bindparam("id"))
_DELETE = delete(WORKFLOWS).where(_T.id == bindparam("id"))
_GET_BY_KEY = _SELECT.where(
    _T.definition_id == bindparam("definition_id"), _T.idempotency_key == bindparam("key")
)
# A start with a key that is already stored inserts nothing, on both backends,
# even while the first start is still uncommitted (PostgreSQL waits for it).
_INSERT_KEYED = {
    name: dialect.insert(WORKFLOWS)
    .on_conflict_do_nothing(index_elements=[_T.definition_id, _T.idempotency_key])
    .returning(_T.id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


def workflow_to_domain(row: Sequence[Any]) -> Workflow:
    """Build a :class:`Workflow` from a ``workflows`` row (columns in table order)."""
    (id, definition_id, state, input, output, error, created_at, updated_at, completed_at,
     metadata, version, idempotency_key, lease_owner, lease_expires_at,
     claim_count) = row  # fmt: skip
    values = (
        id,
        definition_id,
        state_column(WorkflowState, state, table=_TABLE, id=id),
        json_column(input, table=_TABLE, column="input", id=id),
        optional_json_column(output, table=_TABLE, column="output", id=id),
        error,
        created_at,
        updated_at,
        completed_at,
        json_column(metadata, table=_TABLE, column="metadata", id=id),
        version,
        idempotency_key,
        lease_owner,
        lease_expires_at,
        claim_count,
    )
    return workflow_from_values(values, table=_TABLE, id=id)


def workflow_to_row(workflow: Workflow) -> dict[str, Any]:
    """The bind parameters of a ``workflows`` row for ``workflow``."""
    return {
        "id": workflow.id,
        "definition_id": workflow.definition_id,
        "state": workflow.state.value,
        "input": workflow.input,
        "output": workflow.output,
        "error": workflow.error,
        "created_at": workflow.created_at,
        "updated_at": workflow.updated_at,
        "completed_at": workflow.completed_at,
        "metadata": workflow.metadata,
        "version": workflow.version,
        "idempotency_key": workflow.idempotency_key,
        "lease_owner": workflow.lease_owner,
        "lease_expires_at": workflow.lease_expires_at,
        "claim_count": workflow.claim_count,
    }


def _sources_of(target: WorkflowState) -> tuple[str, ...]:
    """The states from which ``target`` may be reached."""
    return tuple(
        source.value for source, targets in WORKFLOW_TRANSITIONS.items() if target in targets
    )


def _versioned(statement: Any, versioned: bool) -> Any:
    return statement.where(_T.version == bindparam("expected_version")) if versioned else statement


def _may_move(target: WorkflowState, versioned: bool) -> list[Any]:
    """The workflow ``wid``, if it may move to ``target`` (and is at ``expected_version``)."""
    conditions = [_T.id == bindparam("wid"), _T.state.in_(_sources_of(target))]
    if versioned:
        conditions.append(_T.version == bindparam("expected_version"))
    return conditions


def _update_state_statement(target: WorkflowState, versioned: bool) -> Any:
    finished = target.is_finished
    values: dict[str, Any] = {
        "state": target.value,
        "error": bindparam("error"),
        "updated_at": bindparam("now", type_=UTCDateTime()),
        "completed_at": bindparam("now", type_=UTCDateTime()) if finished else None,
        "version": _T.version + 1,
    }
    if finished:
        # A finished workflow is nobody's to work on: its lease ends with it.
        values.update(lease_owner=None, lease_expires_at=None)
    statement = update(WORKFLOWS).where(*_may_move(target, versioned))
    return statement.values(**values).returning(*WORKFLOWS.c)


@functools.cache
def _list_statement(filters: frozenset[str]) -> Any:
    """The query of ``list`` for one set of filters (parameter names), built once.

    Every call with the same filters then runs the same statement object,
    whose compiled form SQLAlchemy finds in its cache without rebuilding it.
    """
    statement = _SELECT
    if "state" in filters:
        statement = statement.where(_T.state == bindparam("state"))
    if "definition_id" in filters:
        statement = statement.where(_T.definition_id == bindparam("definition_id"))
    if "created_after" in filters:
        statement = statement.where(_T.created_at > bindparam("created_after"))
    if "created_before" in filters:
        statement = statement.where(_T.created_at < bindparam("created_before"))
    if "cursor_at" in filters:
        statement = statement.where(
            tuple_(_T.created_at, _T.id)
            < tuple_(
                bindparam("cursor_at", type_=_T.created_at.type),
                bindparam("cursor_id", type_=_T.id.type),
            )
        )
    return statement.order_by(_T.created_at.desc(), _T.id.desc()).limit(bindparam("limit"))


_UPDATE_STATE = {
    (state, versioned): _update_state_statement(state, versioned)
    for state in WorkflowState
    for versioned in (False, True)
}
_RECORD_STATE = {
    (state, versioned): transitions.record_change(state, *_may_move(state, versioned))
    for state in WorkflowState
    for versioned in (False, True)
}
_UPDATE_OUTPUT = {
    versioned: _versioned(update(WORKFLOWS).where(_T.id == bindparam("wid")), versioned)
    .values(output=bindparam("output"), updated_at=bindparam("now"), version=_T.version + 1)
    .returning(*WORKFLOWS.c)
    for versioned in (False, True)
}


class WorkflowRepository:
    """Workflows of one unit of work.

    Every method returns detached :class:`Workflow` values; changing one means
    calling a method here, which writes in the unit's transaction.
    """

    __slots__ = ("_uow",)

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

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
        row = workflow_to_row(workflow)
        if workflow.idempotency_key is None:
            await self._uow.execute(_INSERT, row, action=action)
            await transitions.record(self._uow, [created], action)
            return workflow, True
        inserted = await self._uow.execute(_INSERT_KEYED[self._uow.dialect], row, action=action)
        if inserted.first() is not None:
            await transitions.record(self._uow, [created], action)
            return workflow, True
        params = {"definition_id": workflow.definition_id, "key": workflow.idempotency_key}
        found = (await self._uow.execute(_GET_BY_KEY, params, action=action)).first()
        if found is None:
            raise ConflictError(
                f"{action}: the workflow with its idempotency key was deleted meanwhile"
            )
        existing = workflow_to_domain(found)
        if not same_json(existing.input, workflow.input):
            raise ConflictError(
                f"{action}: idempotency key already used by workflow {existing.id} "
                "with another input",
                retryable=False,
            )
        return existing, False

    async def get(self, id: WorkflowId) -> Workflow | None:
        """The workflow with this id, or ``None``."""
        check_id(id, "workflow id")
        result = await self._uow.execute(_GET, {"id": id}, action=f"get workflow {id}")
        row = result.first()
        return None if row is None else workflow_to_domain(row)

    async def history(self, id: WorkflowId) -> builtins.list[WorkflowTransition]:
        """Every state change of the workflow, oldest first: its audit trail.

        One :class:`WorkflowTransition` per change made through this
        repository (creation, :meth:`update_state`, :meth:`claim`,
        :meth:`release`), ordered by the workflow's version after each. An
        unknown id, like a deleted or purged workflow, has an empty history.
        """
        check_id(id, "workflow id")
        return await transitions.history(self._uow, id)

    async def update_state(
        self,
        id: WorkflowId,
        state: WorkflowState,
        error: str | None = None,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Workflow:
        """Move the workflow to ``state`` and return it as it now is.

        The move follows the lifecycle rules (:data:`WORKFLOW_TRANSITIONS`) and is
        a compare-and-set in SQL, so two racing moves cannot both win. It
        sets ``updated_at``, sets ``completed_at`` on completed and failed (and
        clears it otherwise), stores ``error`` (``None`` clears it), bumps
        ``version``, and ends the lease of a workflow that completes or fails.
        The audit trail records the move in the same transaction, by ``actor``
        (say who: a worker id, a user), for ``reason`` (default: ``error``).

        With ``expected_version`` the move happens only if the stored workflow
        is still at that version. Raises NotFoundError, ConflictError (another
        change came first) or InvalidStateTransitionError, with nothing changed.
        """
        action = f"update state of workflow {id}"
        self._uow.require_writable(action)
        check_id(id, "workflow id")
        target = _state(state)
        if error is not None:
            error = check_text(error, field="error", max_length=65536, allow_empty=True)
        actor, reason = check_actor(actor), check_reason(reason)
        params = {
            "wid": id,
            "error": error,
            "now": utc_now(),
            "transition_id": new_uuid7(),
            "transition_actor": actor,
            "transition_reason": error if reason is None else reason,
        }
        versioned = _expect(params, expected_version)
        # Recorded first: the INSERT reads the state being left and locks the row.
        recorded = await self._uow.execute(_RECORD_STATE[target, versioned], params, action=action)
        if _rowcount(recorded) == 0:
            current, _owner = await self._diagnose(id, expected_version, action)
            raise InvalidStateTransitionError(_ENTITY, id, current.value, target.value)
        statement = _UPDATE_STATE[target, versioned]
        row = (await self._uow.execute(statement, params, action=action)).first()
        if row is None:  # pragma: no cover - the row is locked and was just checked
            raise ConflictError(f"{action}: changed concurrently")
        return workflow_to_domain(row)

    async def update_output(
        self, id: WorkflowId, output: JsonValue, *, expected_version: int | None = None
    ) -> Workflow:
        """Store the workflow's output (``None`` is JSON null) and return the workflow.

        With ``expected_version``, only if the stored workflow is still at that
        version: ConflictError otherwise, with nothing changed.
        """
        action = f"update output of workflow {id}"
        self._uow.require_writable(action)
        check_id(id, "workflow id")
        check_json(output, field="output", max_bytes=self._uow.max_payload_bytes)
        params = {"wid": id, "output": output, "now": utc_now()}
        statement = _UPDATE_OUTPUT[_expect(params, expected_version)]
        row = (await self._uow.execute(statement, params, action=action)).first()
        if row is None:
            await self._diagnose(id, expected_version, action)
            raise ConflictError(f"{action}: changed concurrently")  # pragma: no cover
        return workflow_to_domain(row)

    async def claim(
        self,
        worker_id: str,
        *,
        definition_ids: Iterable[str] | None = None,
        lease_seconds: float = _leases.DEFAULT_LEASE_SECONDS,
        limit: int = 1,
        now: datetime | None = None,
    ) -> builtins.list[Workflow]:
        """Take up to ``limit`` workflows for ``worker_id``; return them, oldest first.

        Claimable are pending workflows and running ones whose lease has
        expired (their worker stopped heartbeating), of ``definition_ids``
        when given. Each claimed workflow becomes running, leased to the
        worker until ``now + lease_seconds`` (``now`` defaults to this
        process's clock), with ``version`` and ``claim_count`` bumped. No two
        claims ever take the same workflow under the same lease, on either
        backend; an empty list means there is nothing to do. The audit trail
        records each claim, by ``worker_id``, in the same transaction.
        """
        self._uow.require_writable("claim workflows")
        worker = _leases.check_worker_id(worker_id)
        action = f"claim workflows for worker {worker!r}"
        start, expires = _leases.lease_times(lease_seconds, now)
        params: dict[str, Any] = {
            "worker": worker,
            "now": start,
            "expires": expires,
            "limit": check_limit(limit, MAX_PAGE_SIZE),
        }
        statement = _leases.PICK
        if definition_ids is not None:
            params["definitions"] = _leases.check_definition_ids(definition_ids)
            if not params["definitions"]:
                return []
            statement = _leases.PICK_BY_DEFINITION
        picked: dict[WorkflowId, tuple[WorkflowState, str | None]] = {}
        for row in await self._uow.execute(statement, params, action=action):
            id, state, owner = tuple(row)
            picked[id] = (state_column(WorkflowState, state, table=_TABLE, id=id), owner)
        if not picked:
            return []
        params["ids"] = list(picked)
        taken = await self._uow.execute(_leases.TAKE, params, action=action)
        claimed = [workflow_to_domain(row) for row in taken]
        await transitions.record(
            self._uow,
            [
                WorkflowTransition.of(
                    workflow,
                    picked[workflow.id][0],
                    actor=worker,
                    reason=_lease_expired(picked[workflow.id][1]),
                )
                for workflow in claimed
            ],
            action,
        )
        # RETURNING gives rows in no particular order.
        return sorted(claimed, key=lambda workflow: (workflow.created_at, workflow.id))

    async def heartbeat(
        self,
        id: WorkflowId,
        worker_id: str,
        *,
        lease_seconds: float = _leases.DEFAULT_LEASE_SECONDS,
        now: datetime | None = None,
    ) -> Workflow:
        """Extend the worker's lease to ``now + lease_seconds``; return the workflow.

        The lease must still be the worker's: one that expired but that no
        other worker took is renewed. ``version`` does not change, so a
        heartbeat running beside the work never makes the worker's
        ``expected_version`` stale. Raises NotFoundError, or ConflictError
        (not retryable) when the worker lost the lease; nothing changes then.
        """
        action = f"heartbeat workflow {id}"
        worker = self._lease_checks(id, worker_id, action)
        _start, expires = _leases.lease_times(lease_seconds, now)
        params = {"wid": id, "worker": worker, "expires": expires}
        return await self._owned(_leases.HEARTBEAT, params, action)

    async def release(self, id: WorkflowId, worker_id: str) -> Workflow:
        """Give the workflow back: pending again, without a lease, for any worker to claim.

        For a worker that stops (a graceful shutdown) before finishing a
        workflow: the next claim takes it at once instead of after the lease
        expires. This is the one way back from running to pending, and only
        for the lease's owner. Bumps ``version``. Raises NotFoundError, or
        ConflictError (not retryable) when the worker does not hold the lease.
        """
        action = f"release workflow {id}"
        worker = self._lease_checks(id, worker_id, action)
        params = {"wid": id, "worker": worker, "now": utc_now()}
        workflow = await self._owned(_leases.RELEASE, params, action)
        # Only a running workflow holds a lease (a CHECK constraint says so).
        released = WorkflowTransition.of(workflow, WorkflowState.RUNNING, actor=worker)
        await transitions.record(self._uow, [released], action)
        return workflow

    async def resume_point(self, id: WorkflowId) -> ResumePoint:
        """The workflow and the latest attempt of each of its steps, to resume it.

        Steps whose latest attempt succeeded are in ``succeeded`` (skip them);
        steps whose latest attempt failed or never finished are in
        ``to_retry`` with their next attempt number. Raises NotFoundError.
        """
        workflow = await self.get(id)
        if workflow is None:
            raise NotFoundError(_ENTITY, id)
        latest = await self._uow.step_executions.latest_attempts(id)
        succeeded = {
            step: execution
            for step, execution in latest.items()
            if execution.state is StepExecutionState.SUCCEEDED
        }
        to_retry: dict[StepId, int] = {
            step: execution.attempt + 1
            for step, execution in latest.items()
            if step not in succeeded
        }
        return ResumePoint(workflow=workflow, succeeded=succeeded, to_retry=to_retry)

    async def list_by_state(
        self, state: WorkflowState, *, limit: int | None = None
    ) -> builtins.list[Workflow]:
        """Workflows in ``state``, oldest first (at most ``limit`` of them)."""
        target = _state(state)
        statement = _SELECT.where(_T.state == target.value).order_by(_T.created_at, _T.id)
        if limit is not None:
            statement = statement.limit(check_limit(limit, MAX_PAGE_SIZE * 100))
        result = await self._uow.execute(statement, action=f"list {target.value} workflows")
        return [workflow_to_domain(row) for row in result]

    async def list_by_definition(
        self, definition_id: str, *, limit: int | None = None
    ) -> builtins.list[Workflow]:
        """Workflows of ``definition_id``, newest first (at most ``limit`` of them)."""
        definition_id = check_text(definition_id, field="definition_id", max_length=MAX_ID_LENGTH)
        statement = _SELECT.where(_T.definition_id == definition_id).order_by(
            _T.created_at.desc(), _T.id.desc()
        )
        if limit is not None:
            statement = statement.limit(check_limit(limit, MAX_PAGE_SIZE * 100))
        result = await self._uow.execute(statement, action="list workflows of a definition")
        return [workflow_to_domain(row) for row in result]

    async def delete(self, id: WorkflowId) -> None:
        """Delete the workflow; the database deletes its step executions and artifacts."""
        action = f"delete workflow {id}"
        self._uow.require_writable(action)
        check_id(id, "workflow id")
        result = await self._uow.execute(_DELETE, {"id": id}, action=action)
        if _rowcount(result) == 0:
            raise NotFoundError(_ENTITY, id)

    async def list(
        self,
        *,
        state: WorkflowState | None = None,
        definition_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Workflow]:
        """A page of workflows, newest first, filtered by every argument given.

        Keyset pagination: pass the returned ``next_cursor`` to get the next
        page; workflows created meanwhile never shift or repeat later pages.
        Both ``created_after`` and ``created_before`` are exclusive bounds. A
        cursor this package did not issue raises ValidationError.
        """
        limit = check_limit(limit, MAX_PAGE_SIZE)
        params: dict[str, Any] = {"limit": limit + 1}
        if state is not None:
            params["state"] = _state(state).value
        if definition_id is not None:
            params["definition_id"] = check_text(
                definition_id, field="definition_id", max_length=MAX_ID_LENGTH
            )
        if created_after is not None:
            params["created_after"] = check_aware(created_after, "created_after")
        if created_before is not None:
            params["created_before"] = check_aware(created_before, "created_before")
        if cursor is not None:
            params["cursor_at"], params["cursor_id"] = decode_cursor(cursor)
        statement = _list_statement(frozenset(params))
        result = await self._uow.execute(statement, params, action="list workflows")
        items = [workflow_to_domain(row) for row in result]
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            last = items[-1]
            next_cursor = encode_cursor(last.created_at, last.id)
        return Page(items=tuple(items), next_cursor=next_cursor)

    async def _diagnose(
        self, id: WorkflowId, expected_version: int | None, action: str
    ) -> tuple[WorkflowState, str | None]:
        """After a write matched no row: raise NotFoundError or ConflictError, else say why.

        Returns the workflow's state and lease owner for the caller to explain.
        """
        row = (await self._uow.execute(_GET_STATUS, {"id": id}, action=action)).first()
        if row is None:
            raise NotFoundError(_ENTITY, id)
        state, version, owner = tuple(row)
        if expected_version is not None and version != expected_version:
            raise ConflictError(
                f"{action}: the workflow is at version {version}, not {expected_version}"
            )
        return state_column(WorkflowState, state, table=_TABLE, id=id), owner

    def _lease_checks(self, id: WorkflowId, worker_id: str, action: str) -> str:
        self._uow.require_writable(action)
        check_id(id, "workflow id")
        return _leases.check_worker_id(worker_id)

    async def _owned(self, statement: Any, params: dict[str, Any], action: str) -> Workflow:
        """Run a write guarded by lease ownership; explain a miss."""
        row = (await self._uow.execute(statement, params, action=action)).first()
        if row is None:
            _state, owner = await self._diagnose(params["wid"], None, action)
            holder = "no worker" if owner is None else f"worker {owner!r}"
            raise ConflictError(
                f"{action}: worker {params['worker']!r} does not hold the lease ({holder} does)",
                retryable=False,
            )
        return workflow_to_domain(row)

    async def count_by_state(self, definition_id: str | None = None) -> dict[WorkflowState, int]:
        """How many workflows are in each state, every state present (zero when none).

        Counts every workflow when ``definition_id`` is ``None``, else only those
        of that definition; one ``GROUP BY`` query.
        """
        statement = _COUNT_BY_STATE
        if definition_id is not None:
            checked = check_text(definition_id, field="definition_id", max_length=MAX_ID_LENGTH)
            statement = statement.where(_T.definition_id == checked)
        result = await self._uow.execute(
            statement.group_by(_T.state), action="count workflows by state"
        )
        counts = dict.fromkeys(WorkflowState, 0)
        for row in result:
            value, count = tuple(row)
            state = state_column(WorkflowState, value, table=_TABLE, id="one of its rows")
            counts[state] = int(count)
        return counts

    async def list_stale(
        self,
        *,
        definition_id: str | None = None,
        now: datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> builtins.list[Workflow]:
        """Running workflows whose lease expired before ``now``, the longest expired first.

        These are the workflows of workers that stopped heartbeating (most
        likely dead): the next claim takes them. ``now`` defaults to this
        process's clock; ``definition_id`` restricts the list to one
        definition. At most ``limit`` workflows, ordered by
        ``lease_expires_at`` then ``id``.
        """
        params = {"now": utc_now() if now is None else check_aware(now, "now")}
        statement = _leases.STALE
        if definition_id is not None:
            checked = check_text(definition_id, field="definition_id", max_length=MAX_ID_LENGTH)
            statement = statement.where(_T.definition_id == checked)
        statement = statement.limit(check_limit(limit, MAX_PAGE_SIZE))
        result = await self._uow.execute(statement, params, action="list stale workflows")
        return [workflow_to_domain(row) for row in result]

    async def claim_by_id(
        self,
        id: WorkflowId,
        worker_id: str,
        *,
        lease_seconds: float = _leases.DEFAULT_LEASE_SECONDS,
        now: datetime | None = None,
    ) -> Workflow:
        """Claim this one workflow for ``worker_id``, as :meth:`claim` would; return it.

        For a caller that must work on a given workflow (an operator resuming
        it) rather than on the oldest in the queue. The workflow must be
        claimable: pending, or running with a lease that expired before
        ``now``. It then becomes running, leased to the worker until ``now +
        lease_seconds``, with ``version`` and ``claim_count`` bumped; of two
        racing claims, one wins. Raises NotFoundError;
        InvalidStateTransitionError for a completed or failed workflow;
        ConflictError when another lease still holds it (retryable: it may
        expire) or when it runs without a lease, outside the claim protocol
        (not retryable). Nothing changes then.
        """
        action = f"claim workflow {id}"
        worker = self._lease_checks(id, worker_id, action)
        start, expires = _leases.lease_times(lease_seconds, now)
        params = {"wid": id, "worker": worker, "now": start, "expires": expires}
        row = (await self._uow.execute(_leases.PICK_BY_ID, params, action=action)).first()
        if row is not None:
            _id, state, owner = tuple(row)
            params["ids"] = [id]
            taken = await self._uow.execute(_leases.TAKE, params, action=action)
            workflow = workflow_to_domain(taken.one())
            before = state_column(WorkflowState, state, table=_TABLE, id=id)
            claimed = WorkflowTransition.of(
                workflow, before, actor=worker, reason=_lease_expired(owner)
            )
            await transitions.record(self._uow, [claimed], action)
            return workflow
        current = await self.get(id)
        if current is None:
            raise NotFoundError(_ENTITY, id)
        if current.state.is_finished:
            raise InvalidStateTransitionError(
                _ENTITY, id, current.state.value, WorkflowState.RUNNING.value
            )
        if current.lease_expires_at is None:
            raise ConflictError(
                f"{action}: it is running without a lease, outside the claim protocol",
                retryable=False,
            )
        raise ConflictError(
            f"{action}: leased to worker {current.lease_owner!r} "
            f"until {current.lease_expires_at.isoformat()}"
        )


def _state(state: object) -> WorkflowState:
    if isinstance(state, WorkflowState):
        return state
    if type(state) is str:
        try:
            return WorkflowState(state)
        except ValueError:
            pass
    raise ValidationError("state is not a workflow state")


def _lease_expired(previous_owner: str | None) -> str | None:
    """Why a claim took a workflow that another worker held: its lease expired."""
    if previous_owner is None:
        return None
    return f"the lease of worker {previous_owner!r} expired"


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def _expect(params: dict[str, Any], expected_version: int | None) -> bool:
    """Add ``expected_version`` to ``params`` if given; return whether it was."""
    if expected_version is None:
        return False
    if type(expected_version) is not int or expected_version < 1:
        raise ValidationError("expected_version must be a positive integer")
    params["expected_version"] = expected_version
    return True


_COUNT_BY_STATE = select(_T.state, func.count())
