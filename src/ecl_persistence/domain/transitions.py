"""The audit trail of a workflow: one record per change of its state."""

from __future__ import annotations

import uuid
from datetime import datetime

import attrs

from ecl_persistence.domain import _fields
from ecl_persistence.domain.ids import MAX_ID_LENGTH, WorkflowId, new_uuid7
from ecl_persistence.domain.models import MAX_ERROR_LENGTH, Workflow
from ecl_persistence.domain.payload import check_text
from ecl_persistence.domain.states import WorkflowState

__all__ = ["WorkflowTransition", "check_actor", "check_reason"]


def check_actor(value: str | None) -> str | None:
    """Refuse an actor that is not ``None`` or a non-empty string of at most 255 characters."""
    if value is None:
        return None
    return check_text(value, field="actor", max_length=MAX_ID_LENGTH)


def check_reason(value: str | None) -> str | None:
    """Refuse a reason that is not ``None`` or a string of at most 65,536 characters."""
    if value is None:
        return None
    return check_text(value, field="reason", max_length=MAX_ERROR_LENGTH, allow_empty=True)


def _state(value: WorkflowState | str) -> WorkflowState:
    return _fields.coerce_enum(WorkflowState, value, "to_state")


def _from_state(value: WorkflowState | str | None) -> WorkflowState | None:
    if value is None:
        return None
    return _fields.coerce_enum(WorkflowState, value, "from_state")


@attrs.frozen
class WorkflowTransition:
    """One change of a workflow's state, as the audit trail recorded it.

    ``from_state`` is ``None`` on the record of the workflow's creation.
    ``at`` is the workflow's ``updated_at`` after the change and ``version``
    its version after the change, which orders the history of one workflow
    exactly, whatever the clocks of the machines that changed it. ``actor``
    is who made the change (the worker id of a claim or a release, or what
    the caller passed); ``reason`` is why (the error of a failure, or what
    the caller passed). Instances are frozen and validated on construction.
    """

    id: uuid.UUID = attrs.field(converter=_fields.uuid_from_text, validator=_fields.uuid_value)
    workflow_id: WorkflowId = attrs.field(
        converter=_fields.uuid_from_text, validator=_fields.uuid_value
    )
    from_state: WorkflowState | None = attrs.field(converter=_from_state)
    to_state: WorkflowState = attrs.field(converter=_state)
    at: datetime = attrs.field(converter=_fields.utc_datetime, validator=_fields.aware_utc())
    actor: str | None = attrs.field(converter=check_actor)
    reason: str | None = attrs.field(converter=check_reason)
    version: int = attrs.field(validator=_fields.integer(minimum=1))

    @classmethod
    def of(
        cls,
        workflow: Workflow,
        from_state: WorkflowState | None,
        *,
        actor: str | None = None,
        reason: str | None = None,
        id: uuid.UUID | None = None,
    ) -> WorkflowTransition:
        """The transition that brought ``workflow``, as stored after the change, to its state."""
        return cls(
            id=new_uuid7() if id is None else id,
            workflow_id=workflow.id,
            from_state=from_state,
            to_state=workflow.state,
            at=workflow.updated_at,
            actor=actor,
            reason=reason,
            version=workflow.version,
        )
