"""Retention: delete finished workflows older than a cutoff, a small transaction at a time.

History tables grow with every step attempt. Purging runs in batches, each
its own unit of work, so no single transaction grows with the backlog and
the SQLite write lock is held for one batch at a time. A batch takes the
oldest workflows of one state straight from the ``(state, completed_at)``
index, so its cost does not grow with the backlog either: the completed
workflows go first, then the failed ones. The database deletes
each workflow's step executions, artifacts and transitions with it
(``ON DELETE CASCADE``).

On PostgreSQL, where other transactions hold row locks, a purge never waits
for one, so it can never be part of a deadlock: a batch first locks its
workflows, skipping those another transaction holds (``FOR UPDATE SKIP
LOCKED``), then deletes those of them whose step executions and artifacts it
can lock too, skipping a workflow of which a writer holds any such row (a
worker finishing an attempt of a workflow that just finished). What it
skips stays for the next purge. A writer that comes to a workflow the batch
holds waits for the batch to commit, and then finds it gone.

A purge that fails part way raises :class:`~ecl_persistence.PurgeFailedError`,
which says how many workflows the batches before had deleted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Delete, Select, Table, bindparam, delete, func, select, union_all

from ecl_persistence.dialects import DialectStrategy, LockMode
from ecl_persistence.domain import WorkflowState
from ecl_persistence.errors import DbError, PurgeFailedError, ValidationError
from ecl_persistence.orm import ArtifactRecord, StepExecutionRecord, WorkflowRecord
from ecl_persistence.repositories._checks import check_aware
from ecl_persistence.repositories._payload_store import referenced_by_workflows, sweep

if TYPE_CHECKING:
    from ecl_persistence.unit_of_work import UnitOfWork

__all__ = [
    "DEFAULT_PURGE_BATCH",
    "FINISHED_STATES",
    "MAX_PURGE_BATCH",
    "batch_statement",
    "delete_unheld_statement",
    "purge",
]

FINISHED_STATES = (WorkflowState.COMPLETED, WorkflowState.FAILED, WorkflowState.CANCELLED)
"""The only states a purge may delete: pending and running workflows are never touched."""
DEFAULT_PURGE_BATCH = 1000
"""Workflows deleted per transaction unless told otherwise."""
MAX_PURGE_BATCH = 10_000
"""The largest batch accepted: bigger ones hold the SQLite write lock too long."""

# A batch deletes rows of the table: no entity of them is ever loaded.
_TABLE = cast("Table", WorkflowRecord.__table__)
_T = _TABLE.c
# The rows of a workflow that writers lock: the attempts they finish, the
# artifacts they delete. Transitions are only ever inserted.
_CHILDREN = (
    cast("Table", StepExecutionRecord.__table__),
    cast("Table", ArtifactRecord.__table__),
)
_BEFORE_CUTOFF = _T.completed_at < bindparam("cutoff", type_=_T.completed_at.type)


_OLDEST = (
    select(_T.id)
    .where(_T.state == bindparam("state"), _BEFORE_CUTOFF)
    .order_by(_T.completed_at)
    .limit(bindparam("batch"))
)


@functools.cache
def batch_statement(strategy: DialectStrategy) -> Delete | Select[tuple[Any]]:
    """The statement taking the ``batch`` oldest workflows in ``state`` finished before ``cutoff``.

    Without row locks (SQLite, whose writer holds the whole database) it
    deletes them. With row locks (PostgreSQL) it selects and locks their ids,
    skipping those other transactions hold; :func:`delete_unheld_statement`
    then deletes them.
    """
    # One state per statement: "state = ?" and the range on completed_at both
    # use the index, which then hands rows over in completed_at order, so
    # LIMIT stops the scan after one batch. With "state IN (...)" both
    # planners would read and sort every purgeable row for each batch.
    oldest = _OLDEST
    if strategy.row_locks:
        return strategy.lock(oldest, LockMode.DELETE_SKIP_LOCKED)
    return delete(_TABLE).where(_T.id.in_(oldest.scalar_subquery()))


@functools.cache
def delete_unheld_statement(strategy: DialectStrategy) -> Delete:
    """Delete the workflows ``ids`` (locked already) of which no other transaction holds a row.

    It locks their step executions and artifacts, skipping those another
    transaction holds, and deletes only the workflows all of whose rows it
    locked: the deletion that follows (the cascade) then waits for nobody.
    """
    doomed = select(_T.id).where(_T.id.in_(bindparam("ids", expanding=True))).cte("doomed")
    held = []
    for child in _CHILDREN:
        of_doomed = child.c.workflow_id.in_(select(doomed.c.id))
        lockable = select(child.c.id).where(of_doomed)
        locked = strategy.lock(lockable, LockMode.DELETE_SKIP_LOCKED).cte(f"locked_{child.name}")
        held.append(
            select(child.c.workflow_id).where(of_doomed, child.c.id.not_in(select(locked.c.id)))
        )
    return delete(_TABLE).where(_T.id.in_(select(doomed.c.id)), _T.id.not_in(union_all(*held)))


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
    (for a progress bar). Each state is purged in turn, oldest first. On
    PostgreSQL, workflows of which another transaction holds a row are left
    for a later purge (see the module's documentation).

    A batch that fails rolls back alone; the batches before it stay deleted,
    and :class:`~ecl_persistence.PurgeFailedError` says how many they deleted
    (its ``deleted``), with the batch's error as its ``__cause__`` and that
    error's ``retryable``.
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
    try:
        for state in chosen:
            params = {"state": state, "cutoff": cutoff, "batch": batch_size}
            more = True
            while more:
                async with open_unit() as uow:
                    taken, deleted = await _batch(uow, params)
                total += deleted
                if deleted and on_batch is not None:
                    on_batch(deleted)
                # A full batch may leave more; one that deleted nothing of a
                # full batch found only workflows in use, which stay.
                more = taken == batch_size and deleted > 0
    except DbError as error:
        noun = "workflow" if total == 1 else "workflows"
        raise PurgeFailedError(
            f"purge stopped after deleting {total} {noun}: {error}",
            deleted=total,
            retryable=error.retryable,
        ) from error
    return total


async def _batch(uow: UnitOfWork, params: dict[str, Any]) -> tuple[int, int]:
    """Run one batch; return how many workflows it took and how many it deleted."""
    action = "purge finished workflows"
    statement = batch_statement(uow.strategy)
    if isinstance(statement, Delete):
        # The payloads the batch's rows refer to: let go of once they are deleted.
        refs = await uow.execute(
            referenced_by_workflows(_OLDEST.scalar_subquery()), params, action=action
        )
        candidates = [row[0] for row in refs]
        result: Any = await uow.execute(statement, params, action=action)
        deleted = int(result.rowcount)
        await sweep(uow, candidates)
        return deleted, deleted
    result = await uow.execute(statement, params, action=action)
    ids = list(result.scalars())
    if not ids:
        return 0, 0
    refs = await uow.execute(
        referenced_by_workflows(bindparam("ids", expanding=True)), {"ids": ids}, action=action
    )
    candidates = [row[0] for row in refs]
    result = await uow.execute(delete_unheld_statement(uow.strategy), {"ids": ids}, action=action)
    await sweep(uow, candidates)
    return len(ids), int(result.rowcount)
