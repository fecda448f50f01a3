"""The statements of the step execution repository, built once (per dialect where they differ).

Single attempts go through ORM-enabled statements on ``StepExecutionRecord``;
the histories of a workflow, its aggregates and ``create_many`` select or
insert rows of the table (``docs/concepts.md``). A write under a lease
selects its workflow through :func:`~._leases.fenced_parent` (or from the
workflow's row, under :data:`~._leases.FENCE`) in the statement that writes.
"""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import (
    Insert,
    Table,
    Update,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    select,
    update,
)

from ecl_persistence.dialects import DialectStrategy, LockMode
from ecl_persistence.dialects.base import AnySelect
from ecl_persistence.domain import StepExecutionState
from ecl_persistence.orm import MoneySum, StepExecutionRecord, WorkflowRecord
from ecl_persistence.repositories import _leases
from ecl_persistence.repositories.mappers import row_insert

__all__ = [
    "FOR_STEP",
    "FOR_WORKFLOW",
    "GET",
    "GET_STATE",
    "GET_WORKFLOW",
    "INSERT",
    "KEYS",
    "LATEST_ATTEMPTS",
    "ROWS",
    "STATS",
    "STATS_OF_WORKFLOW",
    "TOTALS_OF_DEFINITION",
    "complete",
    "insert_under_workflow",
    "lock_workflow",
]

_R = StepExecutionRecord
_W = WorkflowRecord
_TABLE = cast("Table", StepExecutionRecord.__table__)
_T = _TABLE.c
_WORKFLOWS = cast("Table", WorkflowRecord.__table__).c
_OPEN = (StepExecutionState.PENDING.value, StepExecutionState.RUNNING.value)
# The attribute key of every column, in table order: the bind parameter names.
KEYS = {prop.columns[0].name: key for key, prop in _R.__mapper__.column_attrs.items()}
_FRESH = {"synchronize_session": False, "populate_existing": True}

GET = select(_R).where(_R.id == bindparam("id"))
INSERT = row_insert(_R)
"""Insert attempts from their entity values: one, or many in one executemany."""
ROWS = select(*_TABLE.c)
FOR_WORKFLOW = ROWS.where(_T.workflow_id == bindparam("wid")).order_by(
    _T.started_at, _T.attempt, _T.id
)
FOR_STEP = ROWS.where(_T.workflow_id == bindparam("wid"), _T.step_id == bindparam("sid")).order_by(
    _T.attempt
)
GET_STATE = select(_T.state).where(_T.id == bindparam("id"))
# Through the table: a hot path of rows (docs/concepts.md); the unit keeps an
# entity the session holds fresh.
_COMPLETE = (
    update(_TABLE)
    # The states as SQL literals (constants of the enum): an IN of bound
    # values is expanded again on every execution of the cached statement.
    .where(_T.id == bindparam("eid"), _T.state.in_([literal_column(f"'{s}'") for s in _OPEN]))
    .values(
        state=bindparam("state"),
        output=bindparam("output"),
        output_ref=bindparam("output_ref", type_=_T.output_ref.type),
        error=bindparam("error"),
        completed_at=bindparam("now"),
        duration_ms=bindparam("duration_ms"),
        tokens_used=func.coalesce(
            bindparam("tokens_used", type_=_T.tokens_used.type), _T.tokens_used
        ),
        metadata=func.coalesce(bindparam("metadata", type_=_T.metadata.type), _T.metadata),
        **{
            name: func.coalesce(bindparam(name, type_=_T[name].type), _T[name])
            for name in (
                "input_tokens",
                "output_tokens",
                "cached_tokens",
                "reasoning_tokens",
                "model",
                "cost",
            )
        },
    )
    .returning(*_TABLE.c)
)
GET_WORKFLOW = select(_T.workflow_id).where(_T.id == bindparam("id"))
_LATEST = (
    select(_T.step_id, func.max(_T.attempt).label("attempt"))
    .where(_T.workflow_id == bindparam("wid"))
    .group_by(_T.step_id)
    .subquery("latest")
)
LATEST_ATTEMPTS = (
    ROWS.join(_LATEST, and_(_T.step_id == _LATEST.c.step_id, _T.attempt == _LATEST.c.attempt))
    .where(_T.workflow_id == bindparam("wid"))
    .order_by(_T.started_at, _T.step_id)
)


@functools.cache
def lock_workflow(strategy: DialectStrategy) -> AnySelect:
    """Lock the workflow ``wid`` as for an update; its id, or no row for an unknown one."""
    # Serialises the starts of a workflow's steps: a row lock on PostgreSQL
    # (NO KEY UPDATE, so other transactions can still insert rows that
    # reference the workflow); the write lock already does it on SQLite.
    chosen = select(_W.id).where(_W.id == bindparam("wid"))
    return strategy.lock(chosen, LockMode.UPDATE)


@functools.cache
def complete(strategy: DialectStrategy, fenced: bool) -> Update:
    """Finish the open execution ``eid`` (of ``lease_workflow``, while the lease is current)."""
    if not fenced:
        return _COMPLETE
    # The lease is checked, and the workflow locked first, in the statement that writes.
    parent = _leases.fenced_parent(strategy)
    return _COMPLETE.where(
        _T.workflow_id == bindparam("fence_workflow"), _T.workflow_id.in_(parent)
    )


def _value(column: str, next_attempt: bool) -> Any:
    if column == "attempt" and next_attempt:
        return (
            select(func.coalesce(func.max(_T.attempt), 0) + 1)
            .where(_T.workflow_id == bindparam("workflow_id"), _T.step_id == bindparam("step_id"))
            .scalar_subquery()
        )
    return bindparam(KEYS[column], type_=_T[column].type)


@functools.cache
def insert_under_workflow(strategy: DialectStrategy, next_attempt: bool, fenced: bool) -> Insert:
    """Insert an attempt, selected from its workflow's row (under the lease, if fenced).

    With ``next_attempt`` the INSERT computes the attempt number itself, after
    :func:`lock_workflow` (a separate statement: waiting for the lock inside
    this one would leave its ``max()`` on a snapshot taken before the wait).
    No row is inserted, and none returned, for an unknown workflow or a lease
    that is not current.
    """
    source = select(*(_value(column.name, next_attempt) for column in _TABLE.c)).where(
        _WORKFLOWS.id == bindparam("workflow_id")
    )
    if fenced:
        source = source.where(*_leases.FENCE)
    # Through the tables, returning a row: plain Core, which the session runs
    # as it is (an ORM INSERT would be annotated, and its cache key computed
    # again, on every call).
    return (
        insert(_TABLE)
        .from_select([column.name for column in _TABLE.c], strategy.lock(source, LockMode.UPDATE))
        .returning(*_TABLE.c)
    )


STATS = select(
    func.count(),
    func.coalesce(func.sum(case((_T.state == StepExecutionState.SUCCEEDED.value, 1), else_=0)), 0),
    func.coalesce(func.sum(case((_T.state == StepExecutionState.FAILED.value, 1), else_=0)), 0),
    func.coalesce(func.sum(_T.duration_ms), 0),
    func.coalesce(func.sum(_T.tokens_used), 0),
    MoneySum(_T.cost),
)
STATS_OF_WORKFLOW = STATS.where(_T.workflow_id == bindparam("wid"))
TOTALS_OF_DEFINITION = STATS.select_from(
    _TABLE.join(WorkflowRecord.__table__, WorkflowRecord.id == _T.workflow_id)
).where(WorkflowRecord.definition_id == bindparam("definition_id"))
