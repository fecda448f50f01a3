"""What every contender does: the operations the workloads time."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import attrs

from benchmarks.data import Completion
from ecl_persistence import ExecutionStats, StepExecution, Workflow, WorkflowState
from ecl_persistence.domain import Page, WorkflowId

__all__ = ["Contender", "Target"]


@attrs.frozen
class Target:
    """Where a contender's engine or driver connects: a plain URL and its dialect."""

    url: str
    dialect: str


class Contender(abc.ABC):
    """A persistence layer under test: one unit of work (one transaction) per operation.

    Every read returns ecl's domain objects, equal to what ecl-persistence
    returns for the same rows, so every contender does the same work for the
    caller.
    """

    name: str = ""
    """The name in the report."""

    @abc.abstractmethod
    async def open(self, target: Target) -> None:
        """Connect (engine, pool or connection) to the migrated scratch database."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection."""

    @abc.abstractmethod
    async def create_step(self, execution: StepExecution) -> None:
        """Insert one step execution in a unit of work of its own."""

    @abc.abstractmethod
    async def complete_step(self, completion: Completion) -> StepExecution:
        """Finish a running step execution as succeeded, in a unit of work of its own."""

    @abc.abstractmethod
    async def create_many(self, executions: Sequence[StepExecution]) -> None:
        """Insert many step executions in one unit of work."""

    @abc.abstractmethod
    async def get_workflow(self, id: WorkflowId) -> Workflow | None:
        """The workflow with this id."""

    @abc.abstractmethod
    async def get_history(self, workflow_id: WorkflowId) -> list[StepExecution]:
        """The step executions of a workflow, in the order they started."""

    @abc.abstractmethod
    async def get_stats(self, workflow_id: WorkflowId) -> ExecutionStats:
        """Totals over the step executions of a workflow, aggregated in SQL."""

    @abc.abstractmethod
    async def list_page(self, state: WorkflowState, cursor: str | None) -> Page[Workflow]:
        """A page of 50 workflows in ``state``, newest first, after ``cursor``."""
