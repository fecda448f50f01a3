"""The data the benchmarks read and write: workflows with 20-step histories.

Payloads are small JSON documents shaped like an LLM workflow's (a prompt's
parameters in, a summary and a few hits out), so that decoding and checking
them costs what it costs in real use.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta

import attrs

from ecl_persistence import (
    StepExecution,
    StepExecutionState,
    StepId,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import MISSING, JsonValue, StepExecutionId, WorkflowId, new_uuid7

__all__ = [
    "SEEDED_STATES",
    "STEPS_PER_WORKFLOW",
    "Completion",
    "completion",
    "history",
    "step_input",
    "workflow",
]

STEPS_PER_WORKFLOW = 20
"""The length of every seeded workflow's history: workload (d) reads one."""

_STATES = (
    WorkflowState.PENDING,
    WorkflowState.RUNNING,
    WorkflowState.COMPLETED,
    WorkflowState.FAILED,
)
SEEDED_STATES = _STATES
"""The states seeded workflows cycle through (``list`` pages read each)."""
_STEP_NAMES = ("plan", "search", "read", "extract", "summarise")


@attrs.frozen
class Completion:
    """How a step execution finishes in workload (a)."""

    id: StepExecutionId
    output: JsonValue
    duration_ms: int
    tokens_used: int


def workflow(index: int, at: datetime) -> Workflow:
    """The ``index``-th seeded workflow, created at ``at``; states cycle through all four."""
    state = _STATES[index % len(_STATES)]
    finished = state in (WorkflowState.COMPLETED, WorkflowState.FAILED)
    return Workflow(
        id=WorkflowId(new_uuid7()),
        definition_id=f"research-{index % 7}",
        state=state,
        input={"topic": f"topic {index}", "depth": 3, "sources": ["web", "papers"]},
        output={"summary": f"summary of topic {index}", "score": 0.87} if finished else MISSING,
        error="rate limited by the provider" if state is WorkflowState.FAILED else None,
        created_at=at,
        updated_at=at,
        completed_at=at + timedelta(seconds=30) if finished else None,
        metadata={"tenant": "acme", "priority": index % 3},
        version=1,
    )


def step_input(number: int) -> dict[str, JsonValue]:
    """The input of a step: a prompt's parameters."""
    return {"prompt": f"step {number}: find sources", "max_tokens": 1024, "temperature": 0.2}


def step_output(number: int) -> dict[str, JsonValue]:
    """The output of a finished step: a summary and a few hits."""
    return {
        "summary": f"result of step {number}",
        "hits": [{"url": f"https://example.org/{number}/{i}", "rank": i} for i in range(3)],
    }


def history(workflow_id: WorkflowId, start: datetime) -> Iterator[StepExecution]:
    """A 20-step history: finished attempts, one retried step, the last one running."""
    for number in range(STEPS_PER_WORKFLOW):
        last = number == STEPS_PER_WORKFLOW - 1
        failed = number == 3
        state = (
            StepExecutionState.RUNNING
            if last
            else StepExecutionState.FAILED
            if failed
            else StepExecutionState.SUCCEEDED
        )
        started = start + timedelta(seconds=number)
        yield StepExecution(
            id=StepExecutionId(new_uuid7()),
            workflow_id=workflow_id,
            step_id=StepId(f"{_STEP_NAMES[number % len(_STEP_NAMES)]}-{number // 5}"),
            attempt=1,
            state=state,
            input=step_input(number),
            output=MISSING if last or failed else step_output(number),
            error="timeout" if failed else None,
            started_at=started,
            completed_at=None if last else started + timedelta(milliseconds=800),
            duration_ms=None if last else 800,
            tokens_used=None if last else 350 + number,
            metadata={"model": "small", "worker": number % 4},
        )


def fresh_executions(
    workflow_id: WorkflowId, count: int, prefix: str, now: datetime
) -> list[StepExecution]:
    """``count`` running executions of distinct steps, for the write workloads."""
    return [
        StepExecution.start(
            workflow_id=workflow_id,
            step_id=StepId(f"{prefix}-{number}"),
            input=step_input(number),
            metadata={"model": "small"},
            now=now + timedelta(microseconds=number),
        )
        for number in range(count)
    ]


def completion(execution: StepExecution, rng: random.Random) -> Completion:
    """How ``execution`` finishes: succeeded with an output, a duration and a token count."""
    return Completion(
        id=execution.id,
        output=step_output(rng.randrange(1000)),
        duration_ms=rng.randrange(50, 5000),
        tokens_used=rng.randrange(100, 4000),
    )
