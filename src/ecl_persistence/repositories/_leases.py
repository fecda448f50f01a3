"""The SQL of claims and leases, and the checks of their arguments.

One set of statements serves both backends. A claim is two statements in
one transaction: ``SELECT ... ORDER BY created_at, id LIMIT n FOR NO KEY
UPDATE SKIP LOCKED`` picks and locks the oldest claimable workflows, with the
state each was in (the audit trail records it), then one ``UPDATE ... WHERE
id IN (...) RETURNING`` takes exactly those. On PostgreSQL, concurrent
claimers skip the rows another claimer has locked instead of queueing behind
it, and the lock holds until the claim commits. SQLite has no ``FOR UPDATE``
(SQLAlchemy leaves it out there) and needs none, because a writing unit of
work starts with ``BEGIN IMMEDIATE`` and so holds the database's single write
lock from its first statement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, literal_column, or_, select, update

from ecl_persistence.domain import MAX_ID_LENGTH, WorkflowState, check_text, utc_now
from ecl_persistence.errors import ValidationError
from ecl_persistence.orm import WORKFLOWS
from ecl_persistence.orm.models import CLAIMABLE_STATES
from ecl_persistence.orm.types import UTCDateTime
from ecl_persistence.repositories._checks import check_aware

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "HEARTBEAT",
    "MAX_LEASE_SECONDS",
    "PICK",
    "PICK_BY_DEFINITION",
    "PICK_BY_ID",
    "RELEASE",
    "STALE",
    "TAKE",
    "check_definition_ids",
    "check_worker_id",
    "lease_times",
]

_T = WORKFLOWS.c

DEFAULT_LEASE_SECONDS = 30.0
"""How long a claim or a heartbeat holds a workflow unless told otherwise."""
MAX_LEASE_SECONDS = 24 * 60 * 60.0
"""The longest lease accepted: a worker that needs more should heartbeat."""

_RUNNING = WorkflowState.RUNNING.value
_PENDING = WorkflowState.PENDING.value


def _literal(value: str) -> ColumnElement[Any]:
    return literal_column(f"'{value}'")


def _claimable(now: ColumnElement[Any]) -> ColumnElement[bool]:
    """Pending workflows, and running ones whose lease has expired.

    The states are literals, spelled as in the partial index's predicate, so
    that both planners can prove the index covers the query (a bound
    parameter would hide the values from them). A running workflow without a
    lease was started outside the claim protocol and is never taken.
    """
    return and_(
        _T.state.in_([_literal(state) for state in CLAIMABLE_STATES]),
        or_(_T.state == _literal(_PENDING), _T.lease_expires_at < now),
    )


def _pick(*, by_definition: bool) -> Any:
    now = bindparam("now", type_=UTCDateTime())
    queue = select(_T.id, _T.state, _T.lease_owner).where(_claimable(now))
    if by_definition:
        queue = queue.where(_T.definition_id.in_(bindparam("definitions", expanding=True)))
    # NO KEY UPDATE, the lock an UPDATE of non-key columns takes anyway: it
    # does not block other transactions inserting step executions of these
    # workflows (their foreign key checks take KEY SHARE locks).
    return (
        queue.order_by(_T.created_at, _T.id)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True, key_share=True)
    )


PICK = _pick(by_definition=False)
"""Lock the oldest claimable workflows of any definition; their id, state and lease owner."""
PICK_BY_DEFINITION = _pick(by_definition=True)
"""Lock the oldest claimable workflows of the ``definitions`` given."""

# No condition beyond the ids: the rows were picked, and are locked, by PICK
# in the same transaction, so nothing can have changed them since.
TAKE = (
    update(WORKFLOWS)
    .where(_T.id.in_(bindparam("ids", expanding=True)))
    .values(
        state=_RUNNING,
        lease_owner=bindparam("worker"),
        lease_expires_at=bindparam("expires", type_=UTCDateTime()),
        updated_at=bindparam("now", type_=UTCDateTime()),
        version=_T.version + 1,
        claim_count=_T.claim_count + 1,
    )
    .returning(*WORKFLOWS.c)
)
"""Claim the picked workflows for ``worker``: running, leased until ``expires``."""


# Waits for, rather than skips, a lock another claim holds: once it commits,
# PostgreSQL re-checks the conditions against the row it left, so of two
# racing claims of one workflow exactly one picks it.
PICK_BY_ID = (
    select(_T.id, _T.state, _T.lease_owner)
    .where(_T.id == bindparam("wid"), _claimable(bindparam("now", type_=UTCDateTime())))
    .with_for_update(key_share=True)
)
"""Lock workflow ``wid`` if it is claimable; its id, state and lease owner."""

STALE = (
    select(*WORKFLOWS.c)
    # The literal lets both planners use an index leading with ``state``.
    .where(
        _T.state == _literal(_RUNNING),
        _T.lease_expires_at < bindparam("now", type_=UTCDateTime()),
    )
    .order_by(_T.lease_expires_at, _T.id)
)
"""Running workflows whose lease expired before ``now``, the longest expired first."""

_OWNED = and_(_T.id == bindparam("wid"), _T.lease_owner == bindparam("worker"))

HEARTBEAT = (
    update(WORKFLOWS)
    .where(_OWNED)
    .values(lease_expires_at=bindparam("expires", type_=UTCDateTime()))
    .returning(*WORKFLOWS.c)
)
"""Extend the lease of its owner; ``version`` stays, since nothing of the workflow changed."""

RELEASE = (
    update(WORKFLOWS)
    .where(_OWNED)
    .values(
        state=_PENDING,
        lease_owner=None,
        lease_expires_at=None,
        updated_at=bindparam("now", type_=UTCDateTime()),
        version=_T.version + 1,
    )
    .returning(*WORKFLOWS.c)
)
"""Give a workflow back to the queue: pending again, without a lease."""


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
