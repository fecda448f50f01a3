"""The lifecycle states of workflows and step executions, and their rules."""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["WORKFLOW_TRANSITIONS", "StepExecutionState", "WorkflowState"]


class WorkflowState(enum.StrEnum):
    """Where a workflow is in its lifecycle.

    The allowed moves are listed in :data:`WORKFLOW_TRANSITIONS`.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        """Whether the workflow has stopped (completed, failed or cancelled)."""
        return self in (WorkflowState.COMPLETED, WorkflowState.FAILED, WorkflowState.CANCELLED)

    def can_move_to(self, target: WorkflowState) -> bool:
        """Return whether a workflow in this state may move to ``target``.

        A move to the same state is never allowed.
        """
        return target in WORKFLOW_TRANSITIONS[self]


#: The states each workflow state may move to. Completed is final; failed may
#: be resumed (moved back to running), retried (back to pending) or cancelled;
#: cancelled only retried (see ``docs/operations.md``).
WORKFLOW_TRANSITIONS: Mapping[WorkflowState, frozenset[WorkflowState]] = MappingProxyType(
    {
        WorkflowState.PENDING: frozenset(
            {
                WorkflowState.RUNNING,
                WorkflowState.COMPLETED,
                WorkflowState.FAILED,
                WorkflowState.CANCELLED,
            }
        ),
        WorkflowState.RUNNING: frozenset(
            {WorkflowState.COMPLETED, WorkflowState.FAILED, WorkflowState.CANCELLED}
        ),
        WorkflowState.COMPLETED: frozenset(),
        WorkflowState.FAILED: frozenset(
            {WorkflowState.RUNNING, WorkflowState.PENDING, WorkflowState.CANCELLED}
        ),
        WorkflowState.CANCELLED: frozenset({WorkflowState.PENDING}),
    }
)


class StepExecutionState(enum.StrEnum):
    """Where one attempt at running a step is in its lifecycle."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_finished(self) -> bool:
        """Whether the execution has stopped (succeeded or failed)."""
        return self in _FINAL_STEP_STATES

    def can_complete_to(self, target: StepExecutionState) -> bool:
        """Return whether an execution in this state may complete as ``target``.

        Only a pending or running execution can complete, and only to
        succeeded or failed.
        """
        return self in _COMPLETABLE_STEP_STATES and target in _FINAL_STEP_STATES


_COMPLETABLE_STEP_STATES = frozenset({StepExecutionState.PENDING, StepExecutionState.RUNNING})
_FINAL_STEP_STATES = frozenset({StepExecutionState.SUCCEEDED, StepExecutionState.FAILED})
