"""Retention: delete finished workflows older than a cutoff, a small transaction at a time.

History tables grow with every step attempt. Purging runs in batches, each
its own unit of work, so no single transaction grows with the backlog and
the SQLite write lock is held for one batch at a time. The database deletes
each workflow's step executions, artifacts and transitions with it
(``ON DELETE CASCADE``). On PostgreSQL a batch skips rows other transactions
hold locked (``FOR UPDATE SKIP LOCKED``), so writers of other workflows never
wait for it and it never waits for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Delete, bindparam, delete, func, select

from ecl_persistence.domain import WorkflowState
from ecl_persistence.errors import ValidationError
from ecl_persistence.orm import WORKFLOWS
from ecl_persistence.repositories._checks import check_aware

if TYPE_CHECKING:
    from ecl_persistence.database import Database

__all__ = ["DEFAULT_PURGE_BATCH", "FINISHED_STATES", "MAX_PURGE_BATCH", "purge"]

FINISHED_STATES = (WorkflowState.COMPLETED, WorkflowState.FAILED)
"""The only states a purge may delete: pending and running workflows are never touched."""
DEFAULT_PURGE_BATCH = 1000
"""Workflows deleted per transaction unless told otherwise."""
MAX_PURGE_BATCH = 10_000
"""The largest batch accepted: bigger ones hold the SQLite write lock too long."""

_T = WORKFLOWS.c


def _purgeable(states: tuple[str, ...]) -> list[ColumnElement[bool]]:
    return [_T.state.in_(states), _T.completed_at < bindparam("cutoff", type_=_T.completed_at.type)]


def _batch_statement(states: tuple[str, ...]) -> Delete:
    oldest = (
        select(_T.id)
        .where(*_purgeable(states))
        .order_by(_T.completed_at)
        .limit(bindparam("batch"))
        .with_for_update(skip_locked=True)
    )
    return delete(WORKFLOWS).where(_T.id.in_(oldest.scalar_subquery()))


def _check_states(states: Iterable[WorkflowState]) -> tuple[str, ...]:
    checked: list[str] = []
    for state in states:
        if not isinstance(state, WorkflowState) or state not in FINISHED_STATES:
            raise ValidationError("purge deletes only completed or failed workflows")
        checked.append(state.value)
    if not checked:
        raise ValidationError("purge needs at least one state")
    return tuple(sorted(set(checked)))


async def purge(
    database: Database,
    *,
    finished_before: datetime,
    states: Iterable[WorkflowState] = FINISHED_STATES,
    batch_size: int = DEFAULT_PURGE_BATCH,
    dry_run: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Delete workflows in ``states`` that finished before ``finished_before``; return how many.

    With ``dry_run`` nothing is deleted and the return value is how many
    would be. ``on_batch`` is called with the count of each committed batch
    (for a progress bar). A batch that fails rolls back alone; the batches
    before it stay deleted.
    """
    cutoff = check_aware(finished_before, "finished_before")
    chosen = _check_states(states)
    if type(batch_size) is not int or not 1 <= batch_size <= MAX_PURGE_BATCH:
        raise ValidationError(f"batch_size must be an integer from 1 to {MAX_PURGE_BATCH}")
    if dry_run:
        count = select(func.count()).select_from(WORKFLOWS).where(*_purgeable(chosen))
        async with database.session(read_only=True) as uow:
            result = await uow.execute(count, {"cutoff": cutoff}, action="count purgeable")
            return int(result.scalar_one())
    statement = _batch_statement(chosen)
    total = 0
    while True:
        async with database.session() as uow:
            result = await uow.execute(
                statement,
                {"cutoff": cutoff, "batch": batch_size},
                action="purge finished workflows",
            )
            deleted = int(getattr(result, "rowcount", 0))
        total += deleted
        if deleted and on_batch is not None:
            on_batch(deleted)
        if deleted < batch_size:
            return total
