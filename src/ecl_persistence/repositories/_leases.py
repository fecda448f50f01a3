"""The SQL of claims and leases, and the checks of their arguments.

A claim is two statements in one transaction: ``SELECT ... ORDER BY
priority DESC, created_at, id LIMIT n`` picks the first claimable workflows
of the queue (highest priority, then oldest), with the state
each was in (the audit trail records it), locked as the dialect's strategy
says, then one ``UPDATE ... WHERE id IN (...) RETURNING`` takes exactly
those. On PostgreSQL the pick is ``FOR NO KEY UPDATE SKIP LOCKED``:
concurrent claimers skip the rows another claimer has locked instead of
queueing behind it, and the lock holds until the claim commits. SQLite has
no row locks and needs none: a writing unit of work starts with ``BEGIN
IMMEDIATE`` and so holds the database's single write lock from its first
statement.

Claims are a queue and stay on rows (``docs/concepts.md``); the lease
operations on one workflow (claim by id, heartbeat, release) return entities.
A write made under a lease (a fencing token, :class:`~ecl_persistence.Lease`)
adds :data:`FENCE` to its conditions, or selects its workflow through
:func:`fenced_parent`, in the statement that writes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    Update,
    and_,
    bindparam,
    literal_column,
    or_,
    select,
    update,
)

from ecl_persistence.dialects import DialectStrategy, LockMode
from ecl_persistence.dialects.base import AnySelect
from ecl_persistence.domain import MAX_ID_LENGTH, Lease, WorkflowState, check_text, utc_now
from ecl_persistence.errors import ValidationError
from ecl_persistence.orm import WorkflowRecord
from ecl_persistence.orm.models import CLAIMABLE_STATES
from ecl_persistence.orm.types import UTCDateTime
from ecl_persistence.repositories._checks import check_aware
from ecl_persistence.repositories._concurrency import full_keys

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "FENCE",
    "MAX_LEASE_SECONDS",
    "QUEUE_INDEX",
    "QUEUE_ORDER",
    "STALE",
    "TAKE",
    "TAKE_ONE",
    "check_definition_ids",
    "check_worker_id",
    "fenced_parent",
    "heartbeat",
    "lease_params",
    "lease_times",
    "pick",
    "pick_by_id",
    "release",
]

_W = WorkflowRecord
# The claim queue reads and writes rows of the table itself.
_TABLE = cast("Table", WorkflowRecord.__table__)
_T = _TABLE.c

DEFAULT_LEASE_SECONDS = 30.0
"""How long a claim or a heartbeat holds a workflow unless told otherwise."""
MAX_LEASE_SECONDS = 24 * 60 * 60.0
"""The longest lease accepted: a worker that needs more should heartbeat."""

_RUNNING = WorkflowState.RUNNING.value
_PENDING = WorkflowState.PENDING.value
# Entities returned by the statements below replace what the session's
# identity map holds for them: no stale workflow survives in a unit of work.
_FRESH = {"synchronize_session": False, "populate_existing": True}


def _literal(value: str) -> ColumnElement[Any]:
    return literal_column(f"'{value}'")


def _claimable(now: ColumnElement[Any], *, skip_full: bool = True) -> ColumnElement[bool]:
    """Pending workflows, and running ones whose lease has expired, due by ``now``.

    The states are literals, spelled as in the partial index's predicate, so
    that both planners can prove the index covers the query (a bound
    parameter would hide the values from them). A running workflow without a
    lease was started outside the claim protocol and is never taken; one
    whose ``run_after`` is still to come waits for it. One with a cancel
    request is never taken (``docs/operations.md``). With ``skip_full``, nor
    is one whose concurrency key is at its limit; a workflow without a key
    stops at ``concurrency_key IS NULL`` and never reaches that subquery.
    """
    conditions = [
        _T.state.in_([_literal(state) for state in CLAIMABLE_STATES]),
        or_(_T.state == _literal(_PENDING), _T.lease_expires_at < now),
        or_(_T.run_after.is_(None), _T.run_after <= now),
        _T.cancel_requested_at.is_(None),
    ]
    if skip_full:
        conditions.append(
            or_(_T.concurrency_key.is_(None), _T.concurrency_key.not_in(full_keys(now)))
        )
    return and_(*conditions)


QUEUE_ORDER = (_T.priority.desc(), _T.created_at, _T.id)
"""The order claims take workflows in: highest priority first, then the oldest."""
QUEUE_INDEX = "ix_workflows_claimable_priority_created_at_id"
"""The partial index over the open workflows, in :data:`QUEUE_ORDER`."""


@functools.cache
def pick(strategy: DialectStrategy, *, by_definition: bool) -> AnySelect:
    """Lock the first claimable workflows in queue order (of ``definitions``).

    Each row: id, state, lease owner and concurrency key.
    """
    now = bindparam("now", type_=UTCDateTime())
    columns = (_T.id, _T.state, _T.lease_owner, _T.concurrency_key)
    queue = select(*columns).where(_claimable(now))
    if by_definition:
        queue = queue.where(_T.definition_id.in_(bindparam("definitions", expanding=True)))
    queue = queue.order_by(*QUEUE_ORDER).limit(bindparam("limit"))
    queue = strategy.use_index(queue, _TABLE, QUEUE_INDEX)
    return strategy.lock(queue, LockMode.UPDATE_SKIP_LOCKED)


# No condition beyond the ids: the rows were picked, and are locked, by the
# pick in the same transaction, so nothing can have changed them since.
_TAKE_VALUES: dict[str, Any] = {
    "state": _RUNNING,
    "lease_owner": bindparam("worker"),
    "lease_expires_at": bindparam("expires", type_=UTCDateTime()),
    "updated_at": bindparam("now", type_=UTCDateTime()),
    "version": _T.version + 1,
    "claim_count": _T.claim_count + 1,
}
TAKE = (
    update(_TABLE)
    .where(_T.id.in_(bindparam("ids", expanding=True)))
    .values(**_TAKE_VALUES)
    .returning(*_TABLE.c)
)
"""Claim the picked workflows for ``worker``: running, leased until ``expires``."""

TAKE_ONE: Update = (
    update(_W)
    .where(_W.id == bindparam("wid"))
    .values(**_TAKE_VALUES)
    .returning(_W)
    .execution_options(**_FRESH)
)
"""Claim the one workflow ``wid`` that ``pick_by_id`` locked; returns its entity."""


@functools.cache
def pick_by_id(strategy: DialectStrategy) -> AnySelect:
    """Lock workflow ``wid`` if it is claimable; its id, state, lease owner and key.

    Waits for, rather than skips, a lock another claim holds: once it
    commits, PostgreSQL re-checks the conditions against the row it left, so
    of two racing claims of one workflow exactly one picks it.
    """
    now = bindparam("now", type_=UTCDateTime())
    chosen = select(_T.id, _T.state, _T.lease_owner, _T.concurrency_key).where(
        _T.id == bindparam("wid"), _claimable(now, skip_full=False)
    )
    return strategy.lock(chosen, LockMode.UPDATE)


STALE = (
    select(*_TABLE.c)
    # The literal lets both planners use an index leading with ``state``.
    .where(
        _T.state == _literal(_RUNNING),
        _T.lease_expires_at < bindparam("now", type_=UTCDateTime()),
    )
    .order_by(_T.lease_expires_at, _T.id)
)
"""Running workflows whose lease expired before ``now``, the longest expired first."""

_OWNED = and_(_W.id == bindparam("wid"), _W.lease_owner == bindparam("worker"))
FENCE = (_W.lease_owner == bindparam("fence_owner"), _W.claim_count == bindparam("fence_claims"))
"""The conditions a write under a lease puts on its workflow's row: the same owner and claim."""


def _owned(fenced: bool) -> ColumnElement[bool]:
    return and_(_OWNED, *FENCE) if fenced else _OWNED


def _heartbeat(fenced: bool) -> Update:
    # An expired lease of a workflow with a concurrency key is not renewed:
    # it stopped counting against its limit, and a claim may have used the room.
    live = or_(
        _W.concurrency_key.is_(None),
        _W.lease_expires_at >= bindparam("now", type_=UTCDateTime()),
    )
    return (
        update(_W)
        .where(_owned(fenced), live)
        .values(lease_expires_at=bindparam("expires", type_=UTCDateTime()))
        .returning(_W)
        .execution_options(**_FRESH)
    )


def _release(fenced: bool) -> Update:
    return (
        update(_W)
        .where(_owned(fenced))
        .values(
            state=_PENDING,
            lease_owner=None,
            lease_expires_at=None,
            run_after=bindparam("run_after", type_=UTCDateTime()),
            updated_at=bindparam("now", type_=UTCDateTime()),
            version=_W.version + 1,
        )
        .returning(_W)
        .execution_options(**_FRESH)
    )


_HEARTBEAT = {fenced: _heartbeat(fenced) for fenced in (False, True)}
_RELEASE = {fenced: _release(fenced) for fenced in (False, True)}


def heartbeat(fenced: bool) -> Update:
    """Extend the lease of its owner (under its claim); ``version`` stays, nothing else changed."""
    return _HEARTBEAT[fenced]


def release(fenced: bool) -> Update:
    """Give a workflow back to the queue: pending again, without a lease, due at ``run_after``."""
    return _RELEASE[fenced]


@functools.cache
def fenced_parent(strategy: DialectStrategy) -> AnySelect:
    """The workflow ``lease_workflow`` while the lease is current, locked as for an update.

    A write to a child table (a step execution, an artifact) selects its
    workflow through this in the statement that writes: the row lock (``FOR
    NO KEY UPDATE`` on PostgreSQL) makes a concurrent claim wait for, or
    skip, the writer, and PostgreSQL re-checks the lease on the newest
    version of the row once it holds the lock. Every fenced write locks the
    workflow before its own row, as claims do, so they cannot deadlock.
    """
    chosen = select(_W.id).where(_W.id == bindparam("fence_workflow"), *FENCE)
    return strategy.lock(chosen, LockMode.UPDATE)


def lease_params(lease: Lease) -> dict[str, Any]:
    """The parameters of :data:`FENCE` and :func:`fenced_parent` for ``lease``."""
    return {
        "fence_workflow": lease.workflow_id,
        "fence_owner": lease.owner,
        "fence_claims": lease.claim_count,
    }


def check_worker_id(worker_id: object) -> str:
    """Refuse a worker id that is not a non-empty string of at most 255 characters."""
    return check_text(worker_id, field="worker_id", max_length=MAX_ID_LENGTH)


def check_definition_ids(definition_ids: Iterable[str]) -> list[str]:
    """Refuse definition ids that are a bare string or hold an invalid id."""
    if isinstance(definition_ids, str | bytes) or not isinstance(definition_ids, Iterable):
        raise ValidationError("definition_ids must be a collection of definition ids")
    checked = [
        check_text(value, field="definition_id", max_length=MAX_ID_LENGTH)
        for value in definition_ids
    ]
    return sorted(set(checked))


def lease_times(lease_seconds: object, now: datetime | None) -> tuple[datetime, datetime]:
    """``now`` (default: the current time) and the lease's expiry ``lease_seconds`` later."""
    if (
        isinstance(lease_seconds, bool)
        or not isinstance(lease_seconds, int | float)
        or not (math.isfinite(lease_seconds) and 0 < lease_seconds <= MAX_LEASE_SECONDS)
    ):
        raise ValidationError(
            f"lease_seconds must be a number of seconds above 0 and at most {MAX_LEASE_SECONDS:g}"
        )
    start = utc_now() if now is None else check_aware(now, "now")
    try:
        return start, start + timedelta(seconds=lease_seconds)
    except OverflowError:
        raise ValidationError("now is too close to the end of time for a lease") from None
