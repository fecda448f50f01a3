"""Retention: delete finished workflows older than a cutoff, a small transaction at a time.

History tables grow with every step attempt. Purging runs in batches, each
its own unit of work, so no single transaction grows with the backlog and
the SQLite write lock is held for one batch at a time. A batch takes the
oldest workflows of one state straight from the ``(state, completed_at)``
index, so its cost does not grow with the backlog either: the completed
workflows go first, then the failed ones. The database deletes
each workflow's step executions, artifacts and transitions with it
(``ON DELETE CASCADE``). On PostgreSQL a batch skips rows other transactions
hold locked (``FOR UPDATE SKIP LOCKED``), so writers of other workflows never
wait for it and it never waits for them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Delete, Table, bindparam, delete, func, select

from ecl_persistence.dialects import DialectStrategy, LockMode
from ecl_persistence.domain import WorkflowState
from ecl_persistence.errors import ValidationError
from ecl_persistence.orm import WorkflowRecord
from ecl_persistence.repositories._checks import check_aware

if TYPE_CHECKING:
    from ecl_persistence.unit_of_work import UnitOfWork

__all__ = ["DEFAULT_PURGE_BATCH", "FINISHED_STATES", "MAX_PURGE_BATCH", "batch_statement", "purge"]

FINISHED_STATES = (WorkflowState.COMPLETED, WorkflowState.FAILED)
"""The only states a purge may delete: pending and running workflows are never touched."""
DEFAULT_PURGE_BATCH = 1000
"""Workflows deleted per transaction unless told otherwise."""
MAX_PURGE_BATCH = 10_000
"""The largest batch accepted: bigger ones hold the SQLite write lock too long."""

# A batch deletes rows of the table: no entity of them is ever loaded.
_TABLE = cast("Table", WorkflowRecord.__table__)
_T = _TABLE.c
_BEFORE_CUTOFF = _T.completed_at < bindparam("cutoff", type_=_T.completed_at.type)


@functools.cache
def batch_statement(strategy: DialectStrategy) -> Delete:
    """Delete the ``batch`` oldest workflows in ``state`` that finished before ``cutoff``."""
    # One state per statement: "state = ?" and the range on completed_at both
    # use the index, which then hands rows over in completed_at order, so
    # LIMIT stops the scan after one batch. With "state IN (...)" both
    # planners would read and sort every purgeable row for each batch.
    oldest = (
        select(_T.id)
        .where(_T.state == bindparam("state"), _BEFORE_CUTOFF)
        .order_by(_T.completed_at)
        .limit(bindparam("batch"))
    )
    oldest = strategy.lock(oldest, LockMode.DELETE_SKIP_LOCKED)
    return delete(_TABLE).where(_T.id.in_(oldest.scalar_subquery()))


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
    open_unit: Callable[..., UnitOfWork],
    *,
    finished_before: datetime,
    states: Iterable[WorkflowState] = FINISHED_STATES,
    batch_size: int = DEFAULT_PURGE_BATCH,
    dry_run: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Delete workflows in ``states`` that finished before ``finished_before``; return how many.

    ``open_unit`` makes the unit of work of each batch (``Database.session``).
    With ``dry_run`` nothing is deleted and the return value is how many
    would be. ``on_batch`` is called with the count of each committed batch
    (for a progress bar). A batch that fails rolls back alone; the batches
    before it stay deleted. Each state is purged in turn, oldest first.
    """
    cutoff = check_aware(finished_before, "finished_before")
    chosen = _check_states(states)
    if type(batch_size) is not int or not 1 <= batch_size <= MAX_PURGE_BATCH:
        raise ValidationError(f"batch_size must be an integer from 1 to {MAX_PURGE_BATCH}")
    if dry_run:
        count: Any = select(func.count()).select_from(_TABLE)
        count = count.where(_T.state.in_(chosen), _BEFORE_CUTOFF)
        async with open_unit(read_only=True) as uow:
            result = await uow.execute(count, {"cutoff": cutoff}, action="count purgeable")
            return int(result.scalar_one())
    total = 0
    for state in chosen:
        params = {"state": state, "cutoff": cutoff, "batch": batch_size}
        deleted = batch_size
        while deleted == batch_size:
            async with open_unit() as uow:
                statement = batch_statement(uow.strategy)
                result = await uow.execute(statement, params, action="purge finished workflows")
                deleted = int(getattr(result, "rowcount", 0))
            total += deleted
            if deleted and on_batch is not None:
                on_batch(deleted)
    return total
