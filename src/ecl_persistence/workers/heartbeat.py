"""The heartbeat of a run: renew its lease every third of the lease, until it is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ecl_persistence.domain import Lease, Workflow, WorkflowState
from ecl_persistence.errors import DbError, LeaseLostError

if TYPE_CHECKING:
    from ecl_persistence.database import Database
    from ecl_persistence.unit_of_work import UnitOfWork

__all__ = ["CANCELLED_ON_REQUEST", "cancel_on_request", "keep_lease"]

CANCELLED_ON_REQUEST = "cancelled on request"
"""The reason the audit trail gives when a run ends a workflow a cancel was asked of."""

_log = logging.getLogger("ecl_persistence.workers")


async def keep_lease(
    db: Database,
    lease: Lease,
    lease_seconds: float,
    beaten: Callable[[Workflow], None],
    lost: Callable[[LeaseLostError], None],
) -> None:
    """Extend ``lease`` by ``lease_seconds`` every third of that, until cancelled or lost.

    Each renewal is its own short unit of work, fenced with the lease, and
    hands the workflow to ``beaten``. When one finds the lease lost, ``lost``
    gets the error and the heartbeat ends. Other database errors are logged
    and the next beat comes as usual: if the lease expires meanwhile and
    another worker claims the workflow, that beat finds it lost. A beat
    that finds a cancel asked of the workflow (``cancel_requested_at``)
    hands it to ``beaten`` like any other: the run then ends itself.
    """
    interval = lease_seconds / 3
    while True:
        await asyncio.sleep(interval)
        try:
            async with db.session() as uow:
                workflow = await uow.workflows.heartbeat(
                    lease.workflow_id, lease.owner, lease_seconds=lease_seconds, lease=lease
                )
        except LeaseLostError as error:
            lost(error)
            return
        except DbError as error:
            _log.warning(
                "heartbeat of workflow %s failed: %s", lease.workflow_id, type(error).__name__
            )
            continue
        beaten(workflow)


async def cancel_on_request(uow: UnitOfWork, lease: Lease) -> Workflow:
    """Cancel the workflow of ``lease`` under it, by its worker: a heartbeat saw a request."""
    return await uow.workflows.update_state(
        lease.workflow_id,
        WorkflowState.CANCELLED,
        actor=lease.owner,
        reason=CANCELLED_ON_REQUEST,
        lease=lease,
    )
