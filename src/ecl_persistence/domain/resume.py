"""Where a workflow stands when a worker picks it up: what succeeded, what to run again."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ecl_persistence.domain.ids import StepId
from ecl_persistence.domain.models import StepExecution, Workflow
from ecl_persistence.domain.payload import JsonValue, Missing
from ecl_persistence.domain.states import StepExecutionState
from ecl_persistence.errors import ValidationError

__all__ = ["ResumePoint"]


def _frozen_mapping(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(f"expected a mapping, not {type(value).__name__}")
    return MappingProxyType(dict(value))


def _workflow(instance: ResumePoint, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Workflow):
        raise ValidationError(f"workflow must be a Workflow, not {type(value).__name__}")


def _steps_of(instance: ResumePoint, attribute: attrs.Attribute[Any], value: object) -> None:
    succeeded: Mapping[StepId, StepExecution] = instance.succeeded
    for step_id, execution in succeeded.items():
        if not isinstance(execution, StepExecution):
            raise ValidationError("succeeded must map step ids to step executions")
        if execution.step_id != step_id or execution.workflow_id != instance.workflow.id:
            raise ValidationError("succeeded holds an execution of another step or workflow")
        if execution.state is not StepExecutionState.SUCCEEDED:
            raise ValidationError("succeeded holds an execution that did not succeed")
    for step_id, attempt in instance.to_retry.items():
        if type(attempt) is not int or attempt < 2:
            raise ValidationError("to_retry must map step ids to attempt numbers from 2")
        if step_id in succeeded:
            raise ValidationError("a step cannot both have succeeded and need a retry")


@attrs.frozen
class ResumePoint:
    """A workflow with the outcome of the latest attempt of each of its steps.

    ``succeeded`` maps each step whose latest attempt succeeded to that
    attempt (its ``output`` is what later steps may need): skip these.
    ``to_retry`` maps each step whose latest attempt failed, or never
    finished because its worker died, to the attempt number to run next.
    A step in neither was never started: run it as attempt 1. Both mappings
    are read-only.
    """

    workflow: Workflow = attrs.field(validator=_workflow)
    succeeded: Mapping[StepId, StepExecution] = attrs.field(converter=_frozen_mapping)
    to_retry: Mapping[StepId, int] = attrs.field(converter=_frozen_mapping, validator=_steps_of)

    @classmethod
    def of(cls, workflow: Workflow, latest: Mapping[StepId, StepExecution]) -> ResumePoint:
        """The resume point of ``workflow`` from the latest attempt of each of its steps."""
        succeeded = {
            step: execution
            for step, execution in latest.items()
            if execution.state is StepExecutionState.SUCCEEDED
        }
        to_retry = {
            step: execution.attempt + 1
            for step, execution in latest.items()
            if step not in succeeded
        }
        return cls(workflow=workflow, succeeded=succeeded, to_retry=to_retry)

    def is_done(self, step_id: StepId | str) -> bool:
        """Whether the step already succeeded, so a resumed run must not run it again."""
        return step_id in self.succeeded

    def next_attempt(self, step_id: StepId | str) -> int:
        """The attempt number the step runs as next: 1 if it never ran.

        Raises ValidationError for a step that already succeeded.
        """
        if step_id in self.succeeded:
            raise ValidationError("the step already succeeded; it has no next attempt")
        return self.to_retry.get(StepId(step_id), 1)

    def output_of(self, step_id: StepId | str) -> JsonValue | Missing:
        """The output of a succeeded step (``MISSING`` if it stored none).

        Raises ValidationError for a step that has not succeeded.
        """
        execution = self.succeeded.get(StepId(step_id))
        if execution is None:
            raise ValidationError("the step has not succeeded; it has no output")
        return execution.output
