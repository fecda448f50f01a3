"""Property tests: what goes into the database comes back the same, on SQLite and PostgreSQL.

Hypothesis and an async fixture do not mix, so each test is synchronous, takes
``database_url`` (one run per backend) and drives every example through one
``asyncio.Runner`` it owns.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Uuid, bindparam, text
from tests.factories import ArtifactFactory, StepExecutionFactory, WorkflowFactory

from ecl_persistence import (
    Database,
    JsonValue,
    StepExecution,
    StepExecutionState,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import MAX_JSON_INT, MIN_JSON_INT

T = TypeVar("T")

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,  # every example that matters is explicit; write nothing to .hypothesis/
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))


def json_values(floats: st.SearchStrategy[float]) -> st.SearchStrategy[JsonValue]:
    scalars: st.SearchStrategy[JsonValue] = (
        st.none() | st.booleans() | st.integers(MIN_JSON_INT, MAX_JSON_INT) | floats | TEXT
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children) | st.dictionaries(TEXT, children),
        max_leaves=20,
    )


# Adding 0.0 turns -0.0, which payloads refuse, into 0.0 and changes no other float.
ANY_JSON = json_values(st.floats(allow_nan=False, allow_infinity=False).map(lambda x: x + 0.0))

TIMESTAMPS = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-1439, 1439)),
)


def run_examples(
    database_url: str,
    strategy: st.SearchStrategy[T],
    check: Callable[[Database, T], Coroutine[Any, Any, None]],
    examples: tuple[T, ...] = (),
) -> None:
    """Run ``check`` on one database for each value hypothesis draws from ``strategy``."""
    with asyncio.Runner() as runner:
        db = Database.from_url(database_url)
        try:

            @PROPERTY_SETTINGS
            @given(strategy)
            def each(value: T) -> None:
                runner.run(check(db, value))

            for value in examples:
                each = example(value)(each)
            each()
        finally:
            runner.run(db.dispose())


def typed(value: Any) -> Any:
    """``value`` with the type of every element spelled out: 1, 1.0 and True all differ."""
    if isinstance(value, dict):
        return ("dict", {key: typed(item) for key, item in value.items()})
    if isinstance(value, list):
        return ("list", [typed(item) for item in value])
    return (type(value).__name__, value)


async def payload_round_trips(db: Database, value: JsonValue) -> None:
    workflow = Workflow.new("roundtrip", value, metadata={"payload": value})
    step = StepExecution.start(workflow.id, "step", value)
    async with db.session() as uow:
        await uow.workflows.create(workflow)
        await uow.step_executions.create(step)
        await uow.step_executions.update_completion(
            step.id, StepExecutionState.SUCCEEDED, output=value
        )
    async with db.session(read_only=True) as uow:
        got_workflow = await uow.workflows.get(workflow.id)
        got_step = await uow.step_executions.get(step.id)
    assert got_workflow is not None
    assert got_step is not None
    for got in (
        got_workflow.input,
        got_workflow.metadata["payload"],
        got_step.input,
        got_step.output,
    ):
        assert got == value
        assert typed(got) == typed(value)


def test_any_json_payload_round_trips_as_workflow_input_and_step_output(
    database_url: str,
) -> None:
    # Explicit examples for what once failed: a bare number on SQLite (a JSON
    # column has numeric affinity there), a big float on PostgreSQL (jsonb).
    examples: tuple[JsonValue, ...] = (5, 2.0, {"x": 1e23})
    run_examples(database_url, ANY_JSON, payload_round_trips, examples)


@pytest.mark.parametrize("number", [1e16, 1.2345678901234568e18, -9.87654321e17], ids=repr)
async def test_a_float_of_64_bit_integer_magnitude_keeps_its_type_and_value(
    db: Database, number: float
) -> None:
    await payload_round_trips(db, {"x": number, "in": [number]})


async def timestamps_round_trip(db: Database, instant: datetime) -> None:
    workflow = WorkflowFactory.build(
        definition_id=f"ts-{uuid.uuid4().hex}",
        state=WorkflowState.COMPLETED,
        created_at=instant,
        updated_at=instant,
        completed_at=instant,
    )
    step = StepExecutionFactory.build(
        workflow_id=workflow.id,
        state=StepExecutionState.SUCCEEDED,
        started_at=instant,
        completed_at=instant,
    )
    artifact = ArtifactFactory.build(workflow_id=workflow.id, created_at=instant)
    async with db.session() as uow:
        await uow.workflows.create(workflow)
        await uow.step_executions.create(step)
        await uow.artifacts.create(artifact)
    tick = timedelta(microseconds=1)
    async with db.session(read_only=True) as uow:
        got_workflow = await uow.workflows.get(workflow.id)
        got_step = await uow.step_executions.get(step.id)
        got_artifact = await uow.artifacts.get(artifact.id)
        around = await uow.workflows.list(
            definition_id=workflow.definition_id,
            created_after=instant - tick,
            created_before=instant + tick,
        )
        after = await uow.workflows.list(
            definition_id=workflow.definition_id, created_after=instant
        )
        before = await uow.workflows.list(
            definition_id=workflow.definition_id, created_before=instant
        )
    assert got_workflow == workflow
    assert got_step == step
    assert got_artifact == artifact
    assert got_workflow is not None
    assert got_step is not None
    assert got_artifact is not None
    for value in (
        got_workflow.created_at,
        got_workflow.updated_at,
        got_workflow.completed_at,
        got_step.started_at,
        got_step.completed_at,
        got_artifact.created_at,
    ):
        assert value == instant
        assert value is not None
        assert value.tzinfo is UTC
    assert around.items == (workflow,)
    assert after.items == ()
    assert before.items == ()


def test_timestamps_in_any_fixed_offset_round_trip_as_the_same_instant(database_url: str) -> None:
    run_examples(database_url, TIMESTAMPS, timestamps_round_trip)


async def states_round_trip(db: Database, states: tuple[str, str]) -> None:
    workflow_state, step_state = states
    workflow = WorkflowFactory.build(
        state=workflow_state,
        completed_at=datetime.now(UTC) if WorkflowState(workflow_state).is_finished else None,
    )
    step = StepExecutionFactory.build(workflow_id=workflow.id, state=step_state)
    async with db.session() as uow:
        await uow.workflows.create(workflow)
        await uow.step_executions.create(step)
    async with db.session(read_only=True) as uow:
        got_workflow = await uow.workflows.get(workflow.id)
        got_step = await uow.step_executions.get(step.id)
        by_state = await uow.workflows.list_by_state(WorkflowState(workflow_state))
    assert got_workflow is not None
    assert got_step is not None
    assert got_workflow.state is WorkflowState(workflow_state)
    assert got_step.state is StepExecutionState(step_state)
    assert workflow in by_state
    async with db.engine.connect() as connection:
        for table, id, expected in (
            ("workflows", workflow.id, workflow_state),
            ("step_executions", step.id, step_state),
        ):
            statement = text(f"SELECT state FROM {table} WHERE id = :id").bindparams(
                bindparam("id", id, type_=Uuid())
            )
            assert (await connection.execute(statement)).scalar_one() == expected


def test_state_strings_round_trip(database_url: str) -> None:
    run_examples(
        database_url,
        st.tuples(
            st.sampled_from([state.value for state in WorkflowState]),
            st.sampled_from([state.value for state in StepExecutionState]),
        ),
        states_round_trip,
    )
