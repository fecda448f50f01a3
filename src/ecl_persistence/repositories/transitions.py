"""The audit trail's SQL: record the state changes of workflows, read one's history.

The workflow repository records a transition in the unit of work that
changes the state, so a transition commits with its change or rolls back
with it. Nothing here updates a transition: the table is append-only, and a
trigger refuses an UPDATE on both backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import (
    ColumnElement,
    Insert,
    String,
    Table,
    Text,
    Uuid,
    bindparam,
    insert,
    literal,
    select,
)

from ecl_persistence.dialects import DialectStrategy, LockMode
from ecl_persistence.dialects.base import AnySelect
from ecl_persistence.domain import WorkflowId, WorkflowState, WorkflowTransition
from ecl_persistence.orm import WorkflowRecord, WorkflowTransitionRecord
from ecl_persistence.orm.types import UTCDateTime
from ecl_persistence.repositories._context import UnitContext
from ecl_persistence.repositories.mappers import (
    row_insert,
    transition_from_record,
    transition_values,
)

__all__ = ["HISTORY", "history", "record", "record_change"]

_R = WorkflowTransitionRecord
_TABLE = cast("Table", WorkflowTransitionRecord.__table__)
_INSERT = row_insert(_R)
HISTORY: AnySelect = select(_R).where(_R.workflow_id == bindparam("wid")).order_by(_R.version)
"""The transitions of workflow ``wid`` in version order; its unique index serves it."""


def record_change(
    strategy: DialectStrategy, to_state: WorkflowState, *conditions: ColumnElement[bool]
) -> Insert:
    """Record the change of the workflow that matches ``conditions`` to ``to_state``; lock it.

    For a change the caller makes next, in the same transaction, with an
    UPDATE on the same conditions: the transition is read from the row as it
    is before that UPDATE (its state, its version + 1) by the INSERT itself,
    which locks the row (``FOR NO KEY UPDATE`` on PostgreSQL; SQLite's
    writer holds the whole database), so the UPDATE then changes exactly the
    row recorded. No row matched means nothing was recorded. Parameters:
    ``transition_id``, ``now`` (the ``updated_at`` the UPDATE sets),
    ``transition_actor``, ``transition_reason`` and those of ``conditions``.
    """
    workflow = WorkflowRecord
    before = select(
        bindparam("transition_id", type_=Uuid()),
        workflow.id,
        workflow.state,
        literal(to_state.value, String()),
        bindparam("now", type_=UTCDateTime()),
        bindparam("transition_actor", type_=String()),
        bindparam("transition_reason", type_=Text()),
        workflow.version + 1,
    ).where(*conditions)
    columns = ["id", "workflow_id", "from_state", "to_state", "at", "actor", "reason", "version"]
    # Of the table, not the entity: the ORM would read the parameters of the
    # SELECT as values of rows to insert.
    return insert(_TABLE).from_select(columns, strategy.lock(before, LockMode.UPDATE))


async def record(uow: UnitContext, transitions: Sequence[WorkflowTransition], action: str) -> None:
    """Insert one or more ``transitions`` in ``uow``'s transaction, in one statement."""
    values = [transition_values(transition) for transition in transitions]
    await uow.execute(_INSERT, values[0] if len(values) == 1 else values, action=action)


async def history(uow: UnitContext, workflow_id: WorkflowId) -> list[WorkflowTransition]:
    """The transitions of the workflow, oldest first (by version)."""
    result = await uow.execute(
        HISTORY, {"wid": workflow_id}, action=f"read the history of workflow {workflow_id}"
    )
    return [transition_from_record(record) for record in result.scalars()]
