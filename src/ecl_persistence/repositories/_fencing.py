"""Why a write under a lease matched nothing: the workflow is gone, or the lease is not current."""

from __future__ import annotations

from ecl_persistence.domain import Lease, WorkflowState
from ecl_persistence.errors import LeaseLostError, NotFoundError
from ecl_persistence.repositories import _workflow_sql as sql
from ecl_persistence.repositories._context import UnitContext
from ecl_persistence.repositories._values import state_value

__all__ = ["check_current", "lease_lost"]


def lease_lost(
    action: str, lease: Lease, state: WorkflowState, owner: str | None, claims: int
) -> LeaseLostError:
    """The error for a write under ``lease`` to a workflow now ``state``, held by ``owner``."""
    if owner is not None:
        now = f"it is leased to worker {owner!r} under claim {claims}"
    elif state is WorkflowState.PENDING:
        now = "it was released and waits for a claim"
    else:
        now = f"it is {state.value} without a lease"
    return LeaseLostError(
        f"{action}: the lease of worker {lease.owner!r} (claim {lease.claim_count}) "
        f"is no longer current: {now}",
        workflow_id=lease.workflow_id,
    )


async def check_current(uow: UnitContext, lease: Lease, action: str) -> None:
    """Raise NotFoundError or LeaseLostError unless ``lease`` is the workflow's current one."""
    row = (await uow.execute(sql.GET_STATUS, {"id": lease.workflow_id}, action=action)).first()
    if row is None:
        raise NotFoundError("workflow", lease.workflow_id)
    state, _version, owner, claims = tuple(row)
    if (owner, claims) != (lease.owner, lease.claim_count):
        current = state_value(WorkflowState, state, table="workflows", id=lease.workflow_id)
        raise lease_lost(action, lease, current, owner, claims)
