"""The seeded data set and the arguments each workload's operations take.

Seeding goes through ecl-persistence's public API (``workflows.create`` and
``step_executions.create_many``), since the benchmark's scaling run grows
the data the way an application does.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import attrs

from benchmarks import data
from ecl_persistence import Database, StepExecution, Workflow, WorkflowState
from ecl_persistence.domain import WorkflowId
from ecl_persistence.repositories._cursor import encode_cursor

__all__ = ["Fixture"]

_WORKFLOWS_PER_UNIT = 1000
_EXECUTIONS_PER_UNIT = 10_000
_PAGE = 51
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

Progress = Callable[[int], None]


@attrs.define
class _Seeded:
    """What the benchmark remembers of one seeded workflow."""

    id: WorkflowId
    state: WorkflowState
    created_at: datetime


class Fixture:
    """The workflows seeded so far, and fresh arguments for every operation.

    Every seeded workflow has a 20-step history; workflows are created a
    millisecond apart and cycle through the four states. Two more workflows
    receive the writes, so that the reads keep their shape.
    """

    def __init__(self, seed: int = 20_251_126) -> None:
        self.rng = random.Random(seed)
        self._seeded: list[_Seeded] = []
        self._by_state: dict[WorkflowState, list[_Seeded]] = {state: [] for state in WorkflowState}
        self._names = itertools.count()
        self.sink: WorkflowId | None = None

    @property
    def executions(self) -> int:
        """How many step executions the seeded workflows hold."""
        return len(self._seeded) * data.STEPS_PER_WORKFLOW

    async def grow(self, db: Database, executions: int, progress: Progress | None = None) -> None:
        """Seed workflows and histories until the seeded executions number ``executions``."""
        if self.sink is None:
            async with db.session() as uow:
                sink = Workflow.new("benchmark-writes", {"purpose": "write workloads"})
                await uow.workflows.create(sink)
            self.sink = sink.id
        wanted = -(-executions // data.STEPS_PER_WORKFLOW) - len(self._seeded)
        start = len(self._seeded)
        for first in range(start, start + wanted, _WORKFLOWS_PER_UNIT):
            last = min(first + _WORKFLOWS_PER_UNIT, start + wanted)
            workflows = [
                data.workflow(index, _EPOCH + timedelta(milliseconds=index))
                for index in range(first, last)
            ]
            async with db.session() as uow:
                for workflow in workflows:
                    await uow.workflows.create(workflow)
            histories = (
                data.history(workflow.id, workflow.created_at + timedelta(seconds=1))
                for workflow in workflows
            )
            for chunk in _chunks(itertools.chain.from_iterable(histories), _EXECUTIONS_PER_UNIT):
                async with db.session() as uow:
                    await uow.step_executions.create_many(chunk)
                if progress is not None:
                    progress(len(chunk))
            for workflow in workflows:
                seeded = _Seeded(workflow.id, workflow.state, workflow.created_at)
                self._seeded.append(seeded)
                self._by_state[workflow.state].append(seeded)

    def workflow_ids(self, count: int) -> list[WorkflowId]:
        """``count`` seeded workflow ids drawn at random."""
        return [self.rng.choice(self._seeded).id for _ in range(count)]

    def list_arguments(self, count: int) -> list[tuple[WorkflowState, str | None]]:
        """``count`` (state, cursor) pairs, each cursor followed by at least 50 workflows."""
        states = list(data.SEEDED_STATES)  # the states the seed cycles through
        arguments: list[tuple[WorkflowState, str | None]] = []
        for number in range(count):
            state = states[number % len(states)]
            seeded = self._by_state[state]
            assert len(seeded) > _PAGE, "seed more workflows: a page needs 50 older ones"
            # Oldest first: the workflows before the cursor's fill the page.
            at = seeded[self.rng.randrange(_PAGE, len(seeded))]
            arguments.append((state, encode_cursor(at.created_at, at.id)))
        return arguments

    def fresh_executions(self, count: int) -> list[StepExecution]:
        """``count`` new running executions of distinct steps of the write workflow."""
        assert self.sink is not None, "grow() first"
        return data.fresh_executions(
            self.sink, count, f"step-{next(self._names)}", datetime.now(UTC)
        )


def _chunks(items: Iterator[StepExecution], size: int) -> Iterator[list[StepExecution]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
