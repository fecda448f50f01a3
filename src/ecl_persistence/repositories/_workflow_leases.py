"""The workflow repository's claims and leases: how workers share the queue."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ecl_persistence.domain import (
    MAX_ID_LENGTH,
    Lease,
    Workflow,
    WorkflowId,
    WorkflowState,
    WorkflowTransition,
    check_lease,
    check_reason,
    check_text,
    utc_now,
)
from ecl_persistence.errors import (
    ConflictError,
    InvalidStateTransitionError,
    LeaseLostError,
    NotFoundError,
    ValidationError,
)
from ecl_persistence.repositories import _concurrency, _leases, transitions
from ecl_persistence.repositories import _workflow_sql as sql
from ecl_persistence.repositories._checks import check_aware, check_id, check_limit
from ecl_persistence.repositories._values import id_value, state_value
from ecl_persistence.repositories._workflow_base import (
    ENTITY,
    TABLE_NAME,
    WorkflowRepositoryBase,
    expect_lease,
    one_workflow,
)
from ecl_persistence.repositories.mappers import workflow_from_row

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "WorkflowLeases"]

DEFAULT_PAGE_SIZE = 50
"""Workflows per page unless told otherwise."""
MAX_PAGE_SIZE = 1000
"""The largest page (and claim) accepted."""


class WorkflowLeases(WorkflowRepositoryBase):
    """Claims, heartbeats and releases of workflows by workers (see ``docs/workers.md``)."""

    __slots__ = ()

    async def claim(
        self,
        worker_id: str,
        *,
        definition_ids: Iterable[str] | None = None,
        lease_seconds: float = _leases.DEFAULT_LEASE_SECONDS,
        limit: int = 1,
        now: datetime | None = None,
    ) -> builtins.list[Workflow]:
        """Take up to ``limit`` workflows for ``worker_id``; return them in queue order.

        Claimable are pending workflows and running ones whose lease has
        expired (their worker stopped heartbeating), of ``definition_ids``
        when given, whose ``run_after`` (if any) is not after ``now``. The
        queue's order is the highest ``priority`` first, then the oldest
        (``created_at``, then ``id``). Each claimed workflow becomes running, leased to the
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
        by_definition = definition_ids is not None
        if definition_ids is not None:
            params["definitions"] = _leases.check_definition_ids(definition_ids)
            if not params["definitions"]:
                return []
        statement = _leases.pick(self._uow.strategy, by_definition=by_definition)
        picked: dict[WorkflowId, tuple[WorkflowState, str | None]] = {}
        keys: list[tuple[WorkflowId, str | None]] = []
        for row in await self._uow.execute(statement, params, action=action):
            id, state, owner, key = tuple(row)
            id = WorkflowId(id_value(id, table=TABLE_NAME))
            picked[id] = (state_value(WorkflowState, state, table=TABLE_NAME, id=id), owner)
            keys.append((id, key))
        if not picked:
            return []
        # Free for workflows without a key: admit() returns at once.
        params["ids"] = await _concurrency.admit(self._uow, keys, start, action)
        if not params["ids"]:
            return []
        if now is None and any(key is not None for _id, key in keys):
            # The claim starts once admitted (after any wait for a limit's
            # lock), so its transitions come after the ends that made room.
            params["now"], params["expires"] = _leases.lease_times(lease_seconds, None)
        taken = await self._uow.execute(_leases.TAKE, params, action=action)
        claimed = [workflow_from_row(row) for row in taken]
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
        return sorted(claimed, key=lambda w: (-w.priority, w.created_at, w.id))

    async def claim_by_id(
        self,
        id: WorkflowId | str,
        worker_id: str,
        *,
        lease_seconds: float = _leases.DEFAULT_LEASE_SECONDS,
        now: datetime | None = None,
    ) -> Workflow:
        """Claim this one workflow for ``worker_id``, as :meth:`claim` would; return it.

        For a caller that must work on a given workflow (an operator resuming
        it) rather than on the oldest in the queue. The workflow must be
        claimable: pending, or running with a lease that expired before
        ``now``, and due (no ``run_after`` after ``now``). It then becomes
        running, leased to the worker until ``now + lease_seconds``, with
        ``version`` and ``claim_count`` bumped; of two racing claims, one
        wins. Raises NotFoundError; InvalidStateTransitionError for a completed or failed workflow;
        ConflictError when another lease still holds it, it is not due yet or
        its concurrency key is at its limit (retryable: the lease may expire,
        the time come, the room free up), when a cancel was asked of it, or when it runs
        without a lease, outside the claim protocol (not retryable). Nothing
        changes then.
        """
        action = f"claim workflow {id}"
        id, worker = self._lease_checks(id, worker_id, action)
        start, expires = _leases.lease_times(lease_seconds, now)
        params = {"wid": id, "worker": worker, "now": start, "expires": expires}
        pick = _leases.pick_by_id(self._uow.strategy)
        row = (await self._uow.execute(pick, params, action=action)).first()
        if row is not None:
            _id, state, owner, key = tuple(row)
            if not await _concurrency.admit(self._uow, [(id, key)], start, action):
                raise ConflictError(f"{action}: its concurrency key is at its limit")
            taken = one_workflow(await self._uow.execute(_leases.TAKE_ONE, params, action=action))
            if taken is None:  # pragma: no cover - the row is locked and was just picked
                raise ConflictError(f"{action}: changed concurrently")
            before = state_value(WorkflowState, state, table=TABLE_NAME, id=id)
            claimed = WorkflowTransition.of(
                taken, before, actor=worker, reason=_lease_expired(owner)
            )
            await transitions.record(self._uow, [claimed], action)
            return taken
        current = one_workflow(await self._uow.execute(sql.GET, {"id": id}, action=action))
        if current is None:
            raise NotFoundError(ENTITY, id)
        if current.state.is_finished:
            raise InvalidStateTransitionError(
                ENTITY, id, current.state.value, WorkflowState.RUNNING.value
            )
        if current.run_after is not None and current.run_after > start:
            raise ConflictError(
                f"{action}: it is not to run before {current.run_after.isoformat()}"
            )
        if current.cancel_requested_at is not None:
            raise ConflictError(f"{action}: a cancel was asked of it", retryable=False)
        if current.lease_expires_at is None:
            raise ConflictError(
                f"{action}: it is running without a lease, outside the claim protocol",
                retryable=False,
            )
        raise ConflictError(
            f"{action}: leased to worker {current.lease_owner!r} "
            f"until {current.lease_expires_at.isoformat()}"
        )

    async def heartbeat(
        self,
        id: WorkflowId | str,
        worker_id: str,
        *,
        lease_seconds: float = _leases.DEFAULT_LEASE_SECONDS,
        now: datetime | None = None,
        lease: Lease | None = None,
    ) -> Workflow:
        """Extend the worker's lease to ``now + lease_seconds``; return the workflow.

        The lease must still be the worker's (and, with ``lease``, still that
        claim of it): one that expired but that no other worker took is
        renewed. ``version`` does not change, so a heartbeat running beside
        the work never makes the worker's ``expected_version`` stale. Raises
        NotFoundError, or LeaseLostError (a ConflictError, not retryable) when
        the worker lost the lease; nothing changes then. The expired lease of
        a workflow with a concurrency key is never renewed (LeaseLostError):
        it no longer counted against the key's limit. The returned workflow
        shows a cancel asked of it (``cancel_requested_at``).
        """
        action = f"heartbeat workflow {id}"
        id, worker = self._lease_checks(id, worker_id, action)
        start, expires = _leases.lease_times(lease_seconds, now)
        params: dict[str, Any] = {"wid": id, "worker": worker, "expires": expires, "now": start}
        fenced = _fence(params, lease, id, worker)
        return await self._owned(_leases.heartbeat(fenced), params, action, lease)

    async def release(
        self,
        id: WorkflowId | str,
        worker_id: str,
        *,
        lease: Lease | None = None,
        run_after: datetime | None = None,
        reason: str | None = None,
    ) -> Workflow:
        """Give the workflow back: pending again, without a lease, for any worker to claim.

        For a worker that stops (a graceful shutdown) before finishing a
        workflow: the next claim takes it at once instead of after the lease
        expires, or not before ``run_after`` when given (a retry later). This
        is the one way back from running to pending, and only for the
        lease's owner (with ``lease``, only under that claim). Bumps
        ``version``; the audit trail records the move by the worker, for
        ``reason``. Raises NotFoundError, or LeaseLostError (a ConflictError,
        not retryable) when the worker does not hold the lease.
        """
        action = f"release workflow {id}"
        id, worker = self._lease_checks(id, worker_id, action)
        due = None if run_after is None else check_aware(run_after, "run_after")
        why = check_reason(reason)
        params: dict[str, Any] = {"wid": id, "worker": worker, "now": utc_now(), "run_after": due}
        fenced = _fence(params, lease, id, worker)
        workflow = await self._owned(_leases.release(fenced), params, action, lease)
        # Only a running workflow holds a lease (a CHECK constraint says so).
        released = WorkflowTransition.of(workflow, WorkflowState.RUNNING, actor=worker, reason=why)
        await transitions.record(self._uow, [released], action)
        return workflow

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
            statement = statement.where(sql.TABLE.c.definition_id == checked)
        statement = statement.limit(check_limit(limit, MAX_PAGE_SIZE))
        result = await self._uow.execute(statement, params, action="list stale workflows")
        return [workflow_from_row(row) for row in result]

    def _lease_checks(
        self, id: WorkflowId | str, worker_id: str, action: str
    ) -> tuple[WorkflowId, str]:
        self._uow.require_writable(action)
        return WorkflowId(check_id(id, "workflow id")), _leases.check_worker_id(worker_id)

    async def _owned(
        self, statement: Any, params: dict[str, Any], action: str, lease: Lease | None
    ) -> Workflow:
        """Run a write guarded by lease ownership; explain a miss."""
        workflow = one_workflow(await self._uow.execute(statement, params, action=action))
        if workflow is None:
            _state, owner = await self._diagnose(params["wid"], None, action, lease)
            holder = "no worker" if owner is None else f"worker {owner!r}"
            raise LeaseLostError(
                f"{action}: worker {params['worker']!r} does not hold the lease ({holder} does)",
                workflow_id=params["wid"],
            )
        return workflow


def _fence(params: dict[str, Any], lease: Lease | None, id: WorkflowId, worker: str) -> bool:
    """Add the fence of ``lease`` to ``params``; it must be a lease of ``worker`` on ``id``."""
    if lease is not None and check_lease(lease, id).owner != worker:
        raise ValidationError(f"the lease is of worker {lease.owner!r}, not {worker!r}")
    return expect_lease(params, lease, id)


def _lease_expired(previous_owner: str | None) -> str | None:
    """Why a claim took a workflow that another worker held: its lease expired."""
    if previous_owner is None:
        return None
    return f"the lease of worker {previous_owner!r} expired"
