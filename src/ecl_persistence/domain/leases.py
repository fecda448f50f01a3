"""Leases as fencing tokens: which claim of a workflow a write is made under."""

from __future__ import annotations

from typing import Any

import attrs

from ecl_persistence.domain import _fields
from ecl_persistence.domain.ids import MAX_ID_LENGTH, WorkflowId
from ecl_persistence.domain.payload import check_text
from ecl_persistence.errors import ValidationError

__all__ = ["Lease", "check_lease"]


def _owner(value: str) -> str:
    return check_text(value, field="owner", max_length=MAX_ID_LENGTH)


@attrs.frozen
class Lease:
    """One claim of one workflow by one worker: the token its writes are fenced with.

    A workflow's claims are numbered (``claim_count``), so ``(owner,
    claim_count)`` names exactly one of them, even when the same worker
    claims the same workflow again after losing it. A write made with a
    lease (``lease=`` on the repositories' writing methods) is checked
    against the stored owner and claim count in the same SQL statement: if
    another claim has come since, or the workflow was released or finished,
    nothing is written and :class:`~ecl_persistence.LeaseLostError` is raised.

    Get one from :attr:`Workflow.lease <ecl_persistence.Workflow.lease>` of
    a claimed workflow, or from ``run.lease``.
    """

    workflow_id: WorkflowId = attrs.field(validator=_fields.uuid_value)
    """The workflow the lease is on."""
    owner: str = attrs.field(converter=_owner)
    """The worker that claimed it."""
    claim_count: int = attrs.field(validator=_fields.integer(minimum=1))
    """Which claim of the workflow this is: 1 for its first."""

    def __str__(self) -> str:
        return f"claim {self.claim_count} of workflow {self.workflow_id} by {self.owner!r}"


def check_lease(value: Any, workflow_id: object | None = None) -> Lease:
    """Refuse what is not a :class:`Lease` (of ``workflow_id``, when given)."""
    if not isinstance(value, Lease):
        raise ValidationError(f"lease must be a Lease, not {type(value).__name__}")
    if workflow_id is not None and value.workflow_id != workflow_id:
        raise ValidationError(f"the lease is on workflow {value.workflow_id}, not {workflow_id}")
    return value
