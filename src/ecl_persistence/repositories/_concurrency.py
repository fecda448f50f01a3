"""Concurrency limits: how claims keep each key within its limit, and how limits are kept.

A claim that picked workflows with a concurrency key admits them in two
more statements, in its own transaction, after its pick:

1. ``SELECT key, max_running FROM concurrency_limits WHERE key IN (...)
   ORDER BY key FOR NO KEY UPDATE`` locks the limits of the keys it picked,
   in key order (so two claims never deadlock on them). A second claim of
   the same key waits here until the first commits.
2. ``SELECT concurrency_key, count(*) ... WHERE state = 'running' AND
   lease_expires_at >= now GROUP BY concurrency_key`` counts the running
   workflows of those keys with a live lease. It runs after the lock, so on
   PostgreSQL (READ COMMITTED: each statement sees what committed before it
   started) it sees every claim that held the lock before.

The claim then takes, in queue order, only as many workflows of each key as
its limit leaves room for; the others stay where they were. On SQLite the
lock is no statement of its own: the claim's ``BEGIN IMMEDIATE`` already
holds the database's one write lock. A claim that picked no workflow with a
key runs neither statement. Its pick skips, with one uncorrelated subquery,
the keys whose limit is reached (:func:`full_keys`), so that they do not
block the queue.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    Update,
    and_,
    bindparam,
    func,
    literal_column,
    select,
    update,
)

from ecl_persistence.dialects import DialectStrategy, LockMode
from ecl_persistence.dialects.base import AnySelect
from ecl_persistence.domain import ConcurrencyLimit, WorkflowId, WorkflowState
from ecl_persistence.orm import ConcurrencyLimitRecord, WorkflowRecord
from ecl_persistence.orm.types import UTCDateTime
from ecl_persistence.repositories._context import UnitContext

__all__ = [
    "DELETE",
    "LIST",
    "UPDATE",
    "admit",
    "full_keys",
    "insert",
    "list_limits",
    "lock_limits",
]

_LIMITS = cast("Table", ConcurrencyLimitRecord.__table__)
_L = _LIMITS.c
_WORKFLOWS = cast("Table", WorkflowRecord.__table__)
_RUNNING: ColumnElement[Any] = literal_column(f"'{WorkflowState.RUNNING.value}'")


def _running_of(workflows: Any, now: ColumnElement[Any]) -> ColumnElement[bool]:
    """Running with a live lease (the literal state lets the partial index serve)."""
    running: ColumnElement[bool] = and_(
        workflows.c.state == _RUNNING, workflows.c.lease_expires_at >= now
    )
    return running


def full_keys(now: ColumnElement[Any]) -> AnySelect:
    """The keys whose limit is reached at ``now``: at least ``max_running`` running.

    Uncorrelated with the queue: evaluated once per claim (a hashed subplan
    on PostgreSQL), one count per limit, whatever the length of the queue.
    """
    keyed = _WORKFLOWS.alias("keyed")
    running = (
        select(func.count())
        .select_from(keyed)
        .where(keyed.c.concurrency_key == _L.key, _running_of(keyed, now))
        .scalar_subquery()
    )
    return select(_L.key).where(_L.max_running <= running)


@functools.cache
def lock_limits(strategy: DialectStrategy) -> AnySelect:
    """Lock the limits of ``keys`` in key order: each key and its ``max_running``."""
    chosen = (
        select(_L.key, _L.max_running)
        .where(_L.key.in_(bindparam("keys", expanding=True)))
        .order_by(_L.key)
    )
    return strategy.lock(chosen, LockMode.UPDATE)


_COUNT = (
    select(_WORKFLOWS.c.concurrency_key, func.count())
    .where(
        _WORKFLOWS.c.concurrency_key.in_(bindparam("keys", expanding=True)),
        _running_of(_WORKFLOWS, bindparam("now", type_=UTCDateTime())),
    )
    .group_by(_WORKFLOWS.c.concurrency_key)
)


async def admit(
    uow: UnitContext,
    picked: Sequence[tuple[WorkflowId, str | None]],
    now: datetime,
    action: str,
) -> builtins.list[WorkflowId]:
    """Of the ``picked`` workflows (id, key; in queue order), those the limits let run now.

    Locks the limits of the keys first (see the module's docstring); a
    workflow without a key, or whose key has no limit, is always admitted.
    """
    keys = sorted({key for _id, key in picked if key is not None})
    if not keys:
        return [id for id, _key in picked]
    locked = await uow.execute(lock_limits(uow.strategy), {"keys": keys}, action=action)
    room = {str(key): int(limit) for key, limit in map(tuple, locked)}
    if room:
        params = {"keys": sorted(room), "now": now}
        for row in await uow.execute(_COUNT, params, action=action):
            key, running = tuple(row)
            room[str(key)] -= int(running)
    admitted = []
    for id, key in picked:
        if key is None or key not in room:
            admitted.append(id)
        elif room[key] > 0:
            room[key] -= 1
            admitted.append(id)
    return admitted


# --- keeping the limits ------------------------------------------------------------------

UPDATE: Update = (
    update(_LIMITS)
    .where(_L.key == bindparam("limit_key"))
    .values(max_running=bindparam("limit_max"), updated_at=bindparam("now", type_=UTCDateTime()))
)
"""Change the limit of ``key``."""
DELETE = _LIMITS.delete().where(_L.key == bindparam("limit_key"))
"""Remove the limit of ``key``."""
LIST: AnySelect = select(_L.key, _L.max_running, _L.updated_at).order_by(_L.key)
"""Every limit, by key."""
_COUNT_ALL = (
    select(_WORKFLOWS.c.concurrency_key, func.count())
    .where(
        _WORKFLOWS.c.concurrency_key.is_not(None),
        _running_of(_WORKFLOWS, bindparam("now", type_=UTCDateTime())),
    )
    .group_by(_WORKFLOWS.c.concurrency_key)
)


@functools.cache
def insert(strategy: DialectStrategy) -> Any:
    """Insert the limit of ``key`` unless one is stored already (a racing set)."""
    statement = strategy.insert_ignoring_conflicts(_LIMITS, [_L.key])
    return statement.values(
        key=bindparam("limit_key"),
        max_running=bindparam("limit_max"),
        updated_at=bindparam("now", type_=UTCDateTime()),
    )


async def list_limits(
    uow: UnitContext, now: datetime, key: str | None = None
) -> builtins.list[ConcurrencyLimit]:
    """The limits (of ``key`` only, when given), each with its running count at ``now``."""
    statement = LIST if key is None else LIST.where(_L.key == key)
    rows = list(await uow.execute(statement, {}, action="list concurrency limits"))
    if not rows:
        return []
    counted = await uow.execute(_COUNT_ALL, {"now": now}, action="count running workflows")
    counts = {str(k): int(n) for k, n in map(tuple, counted)}
    return [
        ConcurrencyLimit(key=k, max_running=m, updated_at=at, running=counts.get(k, 0))
        for k, m, at in map(tuple, rows)
    ]
