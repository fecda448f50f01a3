"""A workflow with everything that belongs to it, read together."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import attrs

from ecl_persistence.domain import _fields
from ecl_persistence.domain.artifacts import Artifact
from ecl_persistence.domain.ids import StepId, WorkflowId
from ecl_persistence.domain.models import StepExecution, Workflow
from ecl_persistence.domain.resume import ResumePoint
from ecl_persistence.domain.states import StepExecutionState
from ecl_persistence.domain.summaries import ExecutionStats
from ecl_persistence.domain.transitions import WorkflowTransition
from ecl_persistence.errors import ValidationError

__all__ = ["WorkflowAggregate", "stats_of"]


def stats_of(executions: Iterable[StepExecution]) -> ExecutionStats:
    """The :class:`ExecutionStats` of ``executions``, as ``get_stats`` computes them in SQL."""
    total = succeeded = failed = duration = tokens = 0
    cost: Decimal | None = None
    for execution in executions:
        if execution.cost is not None:
            cost = execution.cost if cost is None else cost + execution.cost
        total += 1
        if execution.state is StepExecutionState.SUCCEEDED:
            succeeded += 1
        elif execution.state is StepExecutionState.FAILED:
            failed += 1
        duration += execution.duration_ms or 0
        tokens += execution.tokens_used or 0
    return ExecutionStats(total, succeeded, failed, duration, tokens, cost)


def _executions(items: Iterable[StepExecution]) -> tuple[StepExecution, ...]:
    return _fields.to_tuple(items)


def _artifacts(items: Iterable[Artifact]) -> tuple[Artifact, ...]:
    return _fields.to_tuple(items)


def _transitions(items: Iterable[WorkflowTransition]) -> tuple[WorkflowTransition, ...]:
    return _fields.to_tuple(items)


def _children(kind: type[Any]) -> Any:
    def check(instance: WorkflowAggregate, attribute: attrs.Attribute[Any], value: Any) -> None:
        workflow_id = instance.workflow.id
        for item in value:
            if not isinstance(item, kind):
                raise ValidationError(f"{attribute.name} must hold {kind.__name__} objects")
            if item.workflow_id != workflow_id:
                raise ValidationError(f"{attribute.name} holds an item of another workflow")

    return check


def _workflow(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Workflow):
        raise ValidationError(f"workflow must be a Workflow, not {type(value).__name__}")


@attrs.frozen
class WorkflowAggregate:
    """A workflow with its attempts, artifacts, audit trail and stats, read in one unit of work.

    ``step_executions`` are in the order they started (then by attempt),
    ``artifacts`` oldest first, ``transitions`` in version order (oldest
    first). ``stats`` sums ``step_executions``, as
    :meth:`~ecl_persistence.StepExecutionRepository.get_stats` would.
    Frozen all the way down: the collections are tuples of frozen objects.
    """

    workflow: Workflow = attrs.field(validator=_workflow)
    step_executions: tuple[StepExecution, ...] = attrs.field(
        converter=_executions, validator=_children(StepExecution)
    )
    artifacts: tuple[Artifact, ...] = attrs.field(
        converter=_artifacts, validator=_children(Artifact)
    )
    transitions: tuple[WorkflowTransition, ...] = attrs.field(
        converter=_transitions, validator=_children(WorkflowTransition)
    )
    stats: ExecutionStats = attrs.field()

    @stats.default
    def _stats(self) -> ExecutionStats:
        return stats_of(self.step_executions)

    @property
    def forked_from(self) -> WorkflowId | None:
        """The workflow this one was forked from (``Workflow.forked_from``), or None."""
        return self.workflow.forked_from

    def latest_attempts(self) -> dict[StepId, StepExecution]:
        """The latest attempt of each step, by step id, in the order the steps started."""
        latest: dict[StepId, StepExecution] = {}
        for execution in self.step_executions:
            current = latest.get(execution.step_id)
            if current is None or execution.attempt > current.attempt:
                latest[execution.step_id] = execution
        return dict(sorted(latest.items(), key=lambda item: (item[1].started_at, item[0])))

    def resume_point(self) -> ResumePoint:
        """What a worker picking this workflow up skips and runs again (a :class:`ResumePoint`)."""
        return ResumePoint.of(self.workflow, self.latest_attempts())
