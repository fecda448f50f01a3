"""The six workloads: what one operation is, and the arguments it takes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from benchmarks import data
from benchmarks.contenders import Contender
from benchmarks.fixture import Fixture
from ecl_persistence import StepExecution, StepExecutionState

__all__ = ["CREATE_MANY_SIZE", "WORKLOADS", "Workload", "by_key", "create_many_workload"]

CREATE_MANY_SIZE = 10_000
"""Step executions inserted by one ``create_many`` operation."""


@attrs.frozen
class Workload:
    """One kind of operation, timed for every contender."""

    key: str
    """A letter, as in the report."""
    name: str
    """A short name for the tables."""
    title: str
    writes: bool
    arguments: Callable[[Fixture, int], Sequence[Any]]
    """``arguments(fixture, n)``: the arguments of ``n`` operations, made before timing."""
    operation: Callable[[Contender, Any], Awaitable[object]]
    """One operation of ``contender`` on one argument."""
    fixed_batch: int | None = None
    """Operations per timed batch, when not calibrated from the raw driver's rate."""
    expect: Callable[[Any, Any], object] | None = None
    """For a write, ``expect(argument, result)``: what ``result`` must equal.

    A read must return, for one argument, what every other contender returns.
    """


async def _record(contender: Contender, argument: tuple[StepExecution, data.Completion]) -> object:
    execution, completion = argument
    await contender.create_step(execution)
    return await contender.complete_step(completion)


def _record_arguments(fixture: Fixture, count: int) -> list[tuple[StepExecution, data.Completion]]:
    executions = fixture.fresh_executions(count)
    return [(execution, data.completion(execution, fixture.rng)) for execution in executions]


async def _create_many(contender: Contender, argument: Sequence[Any]) -> object:
    await contender.create_many(argument)
    return None


def _recorded(argument: tuple[StepExecution, data.Completion], result: Any) -> StepExecution:
    execution, completion = argument
    # completed_at is each contender's own clock reading; everything else is given.
    return attrs.evolve(
        execution,
        state=StepExecutionState.SUCCEEDED,
        output=completion.output,
        completed_at=getattr(result, "completed_at", None),
        duration_ms=completion.duration_ms,
        tokens_used=completion.tokens_used,
    )


def create_many_workload(size: int) -> Workload:
    """Workload (b): ``create_many`` of ``size`` step executions in one unit of work."""
    return Workload(
        "b",
        "create_many",
        f"create_many of {size:,} step executions",
        writes=True,
        arguments=lambda fixture, count: [fixture.fresh_executions(size) for _ in range(count)],
        operation=_create_many,
        fixed_batch=1,
    )


WORKLOADS = (
    Workload(
        "a",
        "record step",
        "record a step execution (create, then complete)",
        writes=True,
        arguments=_record_arguments,
        operation=_record,
        expect=_recorded,
    ),
    create_many_workload(CREATE_MANY_SIZE),
    Workload(
        "c",
        "get workflow",
        "get a workflow by id",
        writes=False,
        arguments=lambda fixture, count: fixture.workflow_ids(count),
        operation=lambda contender, id: contender.get_workflow(id),
    ),
    Workload(
        "d",
        "get_for_workflow",
        f"get_for_workflow: a {data.STEPS_PER_WORKFLOW}-step history",
        writes=False,
        arguments=lambda fixture, count: fixture.workflow_ids(count),
        operation=lambda contender, id: contender.get_history(id),
    ),
    Workload(
        "e",
        "get_stats",
        "get_stats of a workflow",
        writes=False,
        arguments=lambda fixture, count: fixture.workflow_ids(count),
        operation=lambda contender, id: contender.get_stats(id),
    ),
    Workload(
        "f",
        "list page",
        "list a page of 50 workflows by state",
        writes=False,
        arguments=lambda fixture, count: fixture.list_arguments(count),
        operation=lambda contender, argument: contender.list_page(*argument),
    ),
)
"""Every workload, in the report's order."""


def by_key(keys: str, create_many_size: int = CREATE_MANY_SIZE) -> list[Workload]:
    """The workloads named by their letters (``"cdef"``), in the report's order."""
    unknown = set(keys) - {workload.key for workload in WORKLOADS}
    if unknown:
        raise ValueError(f"unknown workloads: {''.join(sorted(unknown))}")
    chosen = [workload for workload in WORKLOADS if workload.key in keys]
    if create_many_size != CREATE_MANY_SIZE:
        chosen = [
            create_many_workload(create_many_size) if workload.key == "b" else workload
            for workload in chosen
        ]
    return chosen
