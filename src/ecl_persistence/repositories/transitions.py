"""The audit trail's SQL: record the state changes of workflows, read one's history.

The workflow repository calls :func:`record` in the unit of work that changes
the state, so a transition commits with its change or rolls back with it.
Nothing here updates a transition: the table is append-only, and a trigger
refuses an UPDATE on both backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Insert, String, Text, Uuid, bindparam, insert, literal, select

from ecl_persistence.domain import WorkflowId, WorkflowState, WorkflowTransition
from ecl_persistence.orm import TRANSITIONS, WORKFLOWS
from ecl_persistence.orm.types import UTCDateTime
from ecl_persistence.repositories._rows import build, state_column

if TYPE_CHECKING:
    from ecl_persistence.unit_of_work import UnitOfWork

__all__ = [
    "HISTORY",
    "history",
    "record",
    "record_change",
    "transition_to_domain",
    "transition_to_row",
]

_T = TRANSITIONS.c
_TABLE = "workflow_transitions"
_INSERT = insert(TRANSITIONS)
HISTORY = select(*TRANSITIONS.c).where(_T.workflow_id == bindparam("wid")).order_by(_T.version)
"""The transitions of workflow ``wid`` in version order; its unique index serves it."""


def record_change(to_state: WorkflowState, *conditions: ColumnElement[bool]) -> Insert:
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
    workflow = WORKFLOWS.c
    before = (
        select(
            bindparam("transition_id", type_=Uuid()),
            workflow.id,
            workflow.state,
            literal(to_state.value, String()),
            bindparam("now", type_=UTCDateTime()),
            bindparam("transition_actor", type_=String()),
            bindparam("transition_reason", type_=Text()),
            workflow.version + 1,
        )
        .where(*conditions)
        .with_for_update(key_share=True)
    )
    columns = ["id", "workflow_id", "from_state", "to_state", "at", "actor", "reason", "version"]
    return insert(TRANSITIONS).from_select(columns, before)


def transition_to_domain(row: Sequence[Any]) -> WorkflowTransition:
    """Build a :class:`WorkflowTransition` from a ``workflow_transitions`` row."""
    id, workflow_id, from_state, to_state, at, actor, reason, version = row
    return build(
        lambda: WorkflowTransition(
            id=id,
            workflow_id=workflow_id,
            from_state=(
                None
                if from_state is None
                else state_column(WorkflowState, from_state, table=_TABLE, id=id)
            ),
            to_state=state_column(WorkflowState, to_state, table=_TABLE, id=id),
            at=at,
            actor=actor,
            reason=reason,
            version=version,
        ),
        table=_TABLE,
        id=id,
    )


def transition_to_row(transition: WorkflowTransition) -> dict[str, Any]:
    """The bind parameters of a ``workflow_transitions`` row for ``transition``."""
    return {
        "id": transition.id,
        "workflow_id": transition.workflow_id,
        "from_state": None if transition.from_state is None else transition.from_state.value,
        "to_state": transition.to_state.value,
        "at": transition.at,
        "actor": transition.actor,
        "reason": transition.reason,
        "version": transition.version,
    }


async def record(uow: UnitOfWork, transitions: Sequence[WorkflowTransition], action: str) -> None:
    """Insert one or more ``transitions`` in ``uow``'s transaction, in one statement."""
    rows = [transition_to_row(transition) for transition in transitions]
    await uow.execute(_INSERT, rows[0] if len(rows) == 1 else rows, action=action)


async def history(uow: UnitOfWork, workflow_id: WorkflowId) -> list[WorkflowTransition]:
    """The transitions of the workflow, oldest first (by version)."""
    result = await uow.execute(
        HISTORY, {"wid": workflow_id}, action=f"read the history of workflow {workflow_id}"
    )
    return [transition_to_domain(row) for row in result]
