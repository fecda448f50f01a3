"""Telling listening workers that a workflow became claimable, in the writing transaction."""

from __future__ import annotations

from ecl_persistence.repositories._context import UnitContext

__all__ = ["announce_claimable"]


async def announce_claimable(uow: UnitContext, definition_id: str, action: str) -> None:
    """In ``uow``'s transaction: wake the workers listening for ``definition_id``'s workflows.

    Call it from every write that makes a workflow claimable (its creation as
    pending, a release, a retry). On PostgreSQL it sends a ``NOTIFY``
    delivered when the transaction commits (never when it rolls back); where
    the dialect has no notifications (SQLite) it does nothing and workers
    find the workflow at their next poll.
    """
    notice = uow.strategy.claimable_notice()
    if notice is not None:
        await uow.execute(notice, {"definition_id": definition_id}, action=action)
