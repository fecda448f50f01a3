"""The statements of the workflow repository, built once (per dialect where they differ).

Every statement is a module-level object (or one per dialect strategy,
cached), so SQLAlchemy finds its compiled form in its cache on every call.
Single-workflow statements are ORM-enabled and return ``WorkflowRecord``
entities, refreshing any copy the unit of work's session already holds.
The listings and counts select rows of the table (``docs/concepts.md``).
"""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Delete,
    Insert,
    Table,
    Update,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import selectinload

from ecl_persistence.dialects import DialectStrategy
from ecl_persistence.dialects.base import AnySelect
from ecl_persistence.domain import WORKFLOW_TRANSITIONS, WorkflowState
from ecl_persistence.orm import WorkflowRecord
from ecl_persistence.orm.types import UTCDateTime
from ecl_persistence.repositories import transitions
from ecl_persistence.repositories._leases import FENCE
from ecl_persistence.repositories.mappers import row_binds, row_insert

__all__ = [
    "COUNT_BY_STATE",
    "DELETE",
    "GET",
    "GET_BY_KEY",
    "GET_STATUS",
    "INSERT",
    "LOAD",
    "ROWS",
    "TABLE",
    "insert_keyed",
    "list_statement",
    "record_state",
    "update_output",
    "update_state",
]

_W = WorkflowRecord
TABLE = cast("Table", WorkflowRecord.__table__)
"""The ``workflows`` table, for the statements that select rows."""
_T = TABLE.c
# Entities returned by the statements below replace what the session's
# identity map holds for them: no stale workflow survives in a unit of work.
_FRESH = {"synchronize_session": False, "populate_existing": True}

GET: AnySelect = select(_W).where(_W.id == bindparam("id"))
"""The workflow ``id``, as an entity."""
GET_ROW: AnySelect = select(*TABLE.c).where(_T.id == bindparam("id"))
"""The workflow ``id``, as a row (``workflows.get``: see ``docs/concepts.md``)."""
LOAD: AnySelect = GET.options(
    selectinload(_W.step_executions),
    selectinload(_W.artifacts),
    selectinload(_W.transitions),
).execution_options(populate_existing=True)
"""The workflow ``id`` with its attempts, artifacts and transitions: four queries in all."""
GET_BY_KEY: AnySelect = select(_W).where(
    _W.definition_id == bindparam("definition_id"), _W.idempotency_key == bindparam("key")
)
"""The workflow of ``definition_id`` started with idempotency key ``key``."""
GET_STATUS: AnySelect = select(_W.state, _W.version, _W.lease_owner, _W.claim_count).where(
    _W.id == bindparam("id")
)
"""What a write that matched nothing needs to explain itself: state, version, owner, claims."""
INSERT: Insert = row_insert(_W)
"""Insert a workflow from its entity values."""
DELETE: Delete = (
    delete(_W).where(_W.id == bindparam("id")).execution_options(synchronize_session="fetch")
)
"""Delete the workflow ``id``; the database cascades to its children."""
ROWS: AnySelect = select(*TABLE.c)
"""Every column of ``workflows``, for the listings."""
COUNT_BY_STATE: AnySelect = select(_T.state, func.count())
"""Count workflows per state (add the ``GROUP BY`` and any filter)."""


@functools.cache
def insert_keyed(strategy: DialectStrategy) -> Insert:
    """Insert a workflow unless its idempotency key is stored already; returns its id.

    Inserts nothing on a conflict, on both backends, even while the first
    start is still uncommitted (PostgreSQL waits for it).
    """
    statement = strategy.insert_ignoring_conflicts(TABLE, [_T.definition_id, _T.idempotency_key])
    return statement.values(row_binds(_W)).returning(_T.id)


def _sources_of(target: WorkflowState) -> tuple[str, ...]:
    """The states from which ``target`` may be reached."""
    return tuple(
        source.value for source, targets in WORKFLOW_TRANSITIONS.items() if target in targets
    )


def _may_move(target: WorkflowState, versioned: bool, fenced: bool) -> list[ColumnElement[bool]]:
    """The workflow ``wid`` if it may move to ``target`` (at ``expected_version``, leased)."""
    # The states as SQL literals (constants of the enum): an IN of bound
    # values is expanded again on every execution of the cached statement.
    sources: list[ColumnElement[Any]] = [
        literal_column(f"'{state}'") for state in _sources_of(target)
    ]
    conditions = [_T.id == bindparam("wid"), _T.state.in_(sources)]
    if versioned:
        conditions.append(_T.version == bindparam("expected_version"))
    if fenced:
        conditions.extend(FENCE)
    return conditions


def _update_state(
    target: WorkflowState, versioned: bool, fenced: bool, with_output: bool
) -> Update:
    finished = target.is_finished
    values: dict[str, Any] = {
        "state": target.value,
        "error": bindparam("error"),
        "updated_at": bindparam("now", type_=UTCDateTime()),
        "completed_at": bindparam("now", type_=UTCDateTime()) if finished else None,
        "version": _T.version + 1,
    }
    if with_output:
        values["output"] = bindparam("output")
    if finished:
        # A finished workflow is nobody's to work on: its lease ends with it.
        values.update(lease_owner=None, lease_expires_at=None)
    if target is WorkflowState.PENDING:
        # Pending again (a retry): a cancel asked of an earlier run is answered.
        values.update(cancel_requested_at=None)
    # Through the table, returning a row (the unit keeps a held entity fresh):
    # plain Core, run as it is, not annotated and keyed again on every call.
    statement = update(TABLE).where(*_may_move(target, versioned, fenced)).values(**values)
    return statement.returning(*TABLE.c)


_FLAGS = (False, True)
_UPDATE_STATE = {
    (state, versioned, fenced, with_output): _update_state(state, versioned, fenced, with_output)
    for state in WorkflowState
    for versioned in _FLAGS
    for fenced in _FLAGS
    for with_output in _FLAGS
}


def update_state(
    target: WorkflowState, versioned: bool, fenced: bool = False, with_output: bool = False
) -> Update:
    """Move ``wid`` to ``target`` if the lifecycle allows it (at ``expected_version``, leased).

    ``with_output``: the same statement also stores ``output``.
    """
    return _UPDATE_STATE[target, versioned, fenced, with_output]


@functools.cache
def record_state(
    strategy: DialectStrategy, target: WorkflowState, versioned: bool, fenced: bool = False
) -> Insert:
    """Record the move that :func:`update_state` makes next, locking the workflow first."""
    return transitions.record_change(strategy, target, *_may_move(target, versioned, fenced))


def _update_output(versioned: bool, fenced: bool) -> Update:
    statement = update(_W).where(_W.id == bindparam("wid"))
    if versioned:
        statement = statement.where(_W.version == bindparam("expected_version"))
    if fenced:
        statement = statement.where(*FENCE)
    statement = statement.values(
        output=bindparam("output"),
        output_ref=bindparam("output_ref", type_=_W.output_ref.type),
        updated_at=bindparam("now", type_=UTCDateTime()),
        version=_W.version + 1,
    )
    return statement.returning(_W).execution_options(**_FRESH)


_UPDATE_OUTPUT = {
    (versioned, fenced): _update_output(versioned, fenced)
    for versioned in _FLAGS
    for fenced in _FLAGS
}


def update_output(versioned: bool, fenced: bool = False) -> Update:
    """Store the output of ``wid`` (at ``expected_version``, under a lease)."""
    return _UPDATE_OUTPUT[versioned, fenced]


@functools.cache
def list_statement(filters: frozenset[str]) -> AnySelect:
    """The query of ``list`` for one set of filters (parameter names), built once.

    Every call with the same filters then runs the same statement object,
    whose compiled form SQLAlchemy finds in its cache without rebuilding it.
    """
    statement = ROWS
    if "state" in filters:
        statement = statement.where(_T.state == bindparam("state"))
    if "definition_id" in filters:
        statement = statement.where(_T.definition_id == bindparam("definition_id"))
    if "created_after" in filters:
        statement = statement.where(_T.created_at > bindparam("created_after"))
    if "created_before" in filters:
        statement = statement.where(_T.created_at < bindparam("created_before"))
    if "cursor_at" in filters:
        statement = statement.where(
            tuple_(_T.created_at, _T.id)
            < tuple_(
                bindparam("cursor_at", type_=_T.created_at.type),
                bindparam("cursor_id", type_=_T.id.type),
            )
        )
    return statement.order_by(_T.created_at.desc(), _T.id.desc()).limit(bindparam("limit"))
