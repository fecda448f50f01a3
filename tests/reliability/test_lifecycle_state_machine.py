"""A model of the lifecycle rules drives the repositories; database and model always agree.

Hypothesis picks the operations (create, transition to any state, record a
step, finish a step again, add an artifact, change the output, delete, a unit
of work that fails half way, reload) and their order; after each one the row
counts must match the model and no step or artifact may outlive its workflow.
Each backend runs the machine through one ``asyncio.Runner``, as in
tests/integration/test_roundtrip_properties.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import ClassVar, TypeVar

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from tests.reliability._support import orphan_counts, row_counts, sized

from ecl_persistence import (
    Artifact,
    ArtifactId,
    ConstraintViolationError,
    Database,
    DbError,
    InvalidStateTransitionError,
    NotFoundError,
    StepExecution,
    StepExecutionId,
    StepExecutionState,
    Workflow,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.domain import MISSING, JsonValue, Missing

T = TypeVar("T")

STEP_IDS = st.sampled_from(["search", "summarize"])
FINISHED = st.sampled_from([StepExecutionState.SUCCEEDED, StepExecutionState.FAILED])


class Boom(Exception):
    pass


@attrs.define
class ModelWorkflow:
    """What the rules say a stored workflow looks like."""

    state: WorkflowState = WorkflowState.PENDING
    version: int = 1
    error: str | None = None
    output: JsonValue | Missing = MISSING
    steps: dict[StepExecutionId, StepExecutionState] = attrs.Factory(dict)
    attempts: dict[str, int] = attrs.Factory(dict)
    artifacts: dict[ArtifactId, tuple[str, str]] = attrs.Factory(dict)


class LifecycleMachine(RuleBasedStateMachine):
    """The rules of the road, checked against a live database."""

    runner: ClassVar[asyncio.Runner]
    db: ClassVar[Database]

    workflows = Bundle("workflows")
    steps = Bundle("steps")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[WorkflowId, ModelWorkflow] = {}
        self.run(self._clear())

    def run(self, work: Awaitable[T]) -> T:
        return self.runner.run(work)  # type: ignore[arg-type]

    async def _clear(self) -> None:
        async with self.db.session() as uow:
            # The database cascades to the steps and artifacts.
            await uow.execute(text("DELETE FROM workflows"), action="clear")
        assert set((await row_counts(self.db)).values()) == {0}

    async def _attempt(self, work: Awaitable[T]) -> T | DbError:
        try:
            return await work
        except DbError as error:
            return error

    @rule(target=workflows)
    def create(self) -> WorkflowId:
        workflow = Workflow.new("lifecycle", {"n": len(self.model)})

        async def work() -> None:
            async with self.db.session() as uow:
                await uow.workflows.create(workflow)

        self.run(work())
        self.model[workflow.id] = ModelWorkflow()
        return workflow.id

    @rule(
        workflow_id=workflows,
        target_state=st.sampled_from(WorkflowState),
        error=st.none() | st.sampled_from(["", "it broke"]),
    )
    def transition(
        self, workflow_id: WorkflowId, target_state: WorkflowState, error: str | None
    ) -> None:
        async def work() -> Workflow:
            async with self.db.session() as uow:
                return await uow.workflows.update_state(workflow_id, target_state, error)

        outcome = self.run(self._attempt(work()))
        expected = self.model.get(workflow_id)
        if expected is None:
            assert isinstance(outcome, NotFoundError)
        elif expected.state.can_move_to(target_state):
            assert isinstance(outcome, Workflow), outcome
            expected.state, expected.error = target_state, error
            expected.version += 1
            assert (outcome.state, outcome.version, outcome.error) == (
                expected.state,
                expected.version,
                expected.error,
            )
        else:
            assert isinstance(outcome, InvalidStateTransitionError), outcome
            assert (outcome.from_state, outcome.to_state) == (expected.state, target_state)

    @rule(target=steps, workflow_id=workflows, step_id=STEP_IDS, finished=FINISHED)
    def record_step(
        self, workflow_id: WorkflowId, step_id: str, finished: StepExecutionState
    ) -> StepExecutionId:
        expected = self.model.get(workflow_id)
        attempt = (expected.attempts.get(step_id, 0) if expected else 0) + 1
        execution = StepExecution.start(workflow_id, step_id, {"step": step_id}, attempt=attempt)

        async def work() -> StepExecution:
            async with self.db.session() as uow:
                await uow.step_executions.create(execution)
                return await uow.step_executions.update_completion(
                    execution.id, finished, output={"ok": True}, duration_ms=5
                )

        outcome = self.run(self._attempt(work()))
        if expected is None:
            assert isinstance(outcome, ConstraintViolationError), outcome
        else:
            assert isinstance(outcome, StepExecution), outcome
            assert (outcome.state, outcome.attempt) == (finished, attempt)
            expected.steps[execution.id] = finished
            expected.attempts[step_id] = attempt
        return execution.id

    @rule(execution_id=steps, finished=FINISHED)
    def finish_step_again(
        self, execution_id: StepExecutionId, finished: StepExecutionState
    ) -> None:
        async def work() -> StepExecution:
            async with self.db.session() as uow:
                return await uow.step_executions.update_completion(execution_id, finished)

        outcome = self.run(self._attempt(work()))
        if any(execution_id in model.steps for model in self.model.values()):
            assert isinstance(outcome, InvalidStateTransitionError), outcome
        else:
            assert isinstance(outcome, NotFoundError), outcome

    @rule(workflow_id=workflows, step_id=STEP_IDS, name=st.sampled_from(["a.json", "b.md"]))
    def add_artifact(self, workflow_id: WorkflowId, step_id: str, name: str) -> None:
        artifact = Artifact.new(workflow_id, step_id, name, path=f"out/{name}", size_bytes=3)

        async def work() -> Artifact:
            async with self.db.session() as uow:
                return await uow.artifacts.create(artifact)

        outcome = self.run(self._attempt(work()))
        expected = self.model.get(workflow_id)
        if expected is None or (step_id, name) in expected.artifacts.values():
            assert isinstance(outcome, ConstraintViolationError), outcome
        else:
            assert outcome == artifact
            expected.artifacts[artifact.id] = (step_id, name)

    @rule(workflow_id=workflows, n=st.integers(0, 3))
    def update_output(self, workflow_id: WorkflowId, n: int) -> None:
        async def work() -> Workflow:
            async with self.db.session() as uow:
                return await uow.workflows.update_output(workflow_id, {"n": n})

        outcome = self.run(self._attempt(work()))
        expected = self.model.get(workflow_id)
        if expected is None:
            assert isinstance(outcome, NotFoundError), outcome
        else:
            assert isinstance(outcome, Workflow), outcome
            expected.output = {"n": n}
            expected.version += 1
            assert (outcome.output, outcome.version) == (expected.output, expected.version)

    @rule(workflow_id=workflows)
    def delete(self, workflow_id: WorkflowId) -> None:
        async def work() -> None:
            async with self.db.session() as uow:
                await uow.workflows.delete(workflow_id)

        outcome = self.run(self._attempt(work()))
        if workflow_id in self.model:
            assert outcome is None
            del self.model[workflow_id]
        else:
            assert isinstance(outcome, NotFoundError), outcome

    @rule(workflow_id=workflows)
    def unit_of_work_that_fails_half_way(self, workflow_id: WorkflowId) -> None:
        async def work() -> None:
            async with self.db.session() as uow:
                await uow.workflows.create(Workflow.new("lifecycle", {"doomed": True}))
                if workflow_id in self.model:
                    await uow.workflows.update_output(workflow_id, {"doomed": True})
                    await uow.artifacts.create(
                        Artifact.new(workflow_id, "doomed", "x", path="out/x", size_bytes=1)
                    )
                    await uow.workflows.delete(workflow_id)
                raise Boom

        with pytest.raises(Boom):
            self.run(work())

    @rule(workflow_id=workflows)
    def reload(self, workflow_id: WorkflowId) -> None:
        async def work() -> tuple[Workflow | None, list[StepExecution], list[Artifact]]:
            async with self.db.session(read_only=True) as uow:
                return (
                    await uow.workflows.get(workflow_id),
                    await uow.step_executions.get_for_workflow(workflow_id),
                    await uow.artifacts.list_for_workflow(workflow_id),
                )

        workflow, executions, artifacts = self.run(work())
        expected = self.model.get(workflow_id)
        if expected is None:
            assert (workflow, executions, artifacts) == (None, [], [])
            return
        assert workflow is not None
        assert (workflow.state, workflow.version, workflow.error, workflow.output) == (
            expected.state,
            expected.version,
            expected.error,
            expected.output,
        )
        assert (workflow.completed_at is not None) == expected.state.is_finished
        assert {e.id: e.state for e in executions} == expected.steps
        assert {a.id: (a.step_id, a.name) for a in artifacts} == expected.artifacts

    @invariant()
    def rows_match_the_model_and_nothing_is_orphaned(self) -> None:
        counts = self.run(row_counts(self.db))
        assert counts == {
            "workflows": len(self.model),
            "step_executions": sum(len(model.steps) for model in self.model.values()),
            "artifacts": sum(len(model.artifacts) for model in self.model.values()),
        }
        assert self.run(orphan_counts(self.db)) == {"step_executions": 0, "artifacts": 0}


def test_repositories_follow_the_lifecycle_model(database_url: str) -> None:
    with asyncio.Runner() as runner:
        db = Database.from_url(database_url)

        class OnThisDatabase(LifecycleMachine):
            pass

        OnThisDatabase.runner = runner
        OnThisDatabase.db = db
        try:
            run_state_machine_as_test(
                OnThisDatabase,
                settings=settings(
                    max_examples=sized(25, 200),
                    stateful_step_count=sized(20, 50),
                    deadline=None,
                    database=None,
                ),
            )
        finally:
            runner.run(db.dispose())
