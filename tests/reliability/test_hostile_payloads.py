"""Hostile payloads: a typed error before any SQL, nothing written, memory bounded.

Building a domain object with such a value already fails (see
tests/unit/test_domain.py); here the values are slipped into a payload after
it was built, or handed straight to the repositories, which must still refuse
them before a statement reaches the driver.
"""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any, cast

import attrs
import pytest
from tests.factories import persist_step, persist_workflow, statements_run
from tests.reliability._support import row_counts

from ecl_persistence import (
    Artifact,
    Database,
    JsonValue,
    SerializationError,
    StepExecution,
    StepExecutionState,
    ValidationError,
    Workflow,
)
from ecl_persistence.unit_of_work import UnitOfWork

SECRET = "Hostile-Payload-Secret"
HUNDRED_MB = 100_000_000


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


HOSTILE: dict[str, Callable[[], object]] = {
    "nan": lambda: math.nan,
    "infinity": lambda: math.inf,
    "minus-infinity": lambda: -math.inf,
    "nul": lambda: SECRET + "\x00",
    "nul-in-a-key": lambda: {SECRET + "\x00": 1},
    "lone-surrogate": lambda: SECRET + "\ud800",
    "integer-of-100001-digits": lambda: 10**100_000,
    "nested-10000-deep": lambda: _nested(10_000),
    "100-MB-string": lambda: SECRET + "x" * HUNDRED_MB,
    # jsonb has no negative zero: it would come back as 0.0 on PostgreSQL only.
    "minus-zero": lambda: -0.0,
}


@attrs.frozen
class Stored:
    """A workflow and a running step that are already in the database."""

    workflow: Workflow
    step: StepExecution


Operation = Callable[[UnitOfWork, Stored, object], Awaitable[object]]


async def _workflow_input(uow: UnitOfWork, stored: Stored, value: object) -> object:
    workflow = Workflow.new("hostile", {"fine": 1})
    cast("dict[str, object]", workflow.input)["bad"] = value
    return await uow.workflows.create(workflow)


async def _workflow_metadata(uow: UnitOfWork, stored: Stored, value: object) -> object:
    workflow = Workflow.new("hostile", {"fine": 1})
    cast("dict[str, object]", workflow.metadata)["bad"] = value
    return await uow.workflows.create(workflow)


async def _output(uow: UnitOfWork, stored: Stored, value: object) -> object:
    return await uow.workflows.update_output(stored.workflow.id, cast("JsonValue", {"bad": value}))


async def _step_input(uow: UnitOfWork, stored: Stored, value: object) -> object:
    execution = StepExecution.start(stored.workflow.id, "hostile", {"fine": 1})
    cast("dict[str, object]", execution.input)["bad"] = value
    return await uow.step_executions.create(execution)


async def _many_steps(uow: UnitOfWork, stored: Stored, value: object) -> object:
    good = StepExecution.start(stored.workflow.id, "good", {"fine": 1})
    bad = StepExecution.start(stored.workflow.id, "bad", {"fine": 1})
    cast("dict[str, object]", bad.metadata)["bad"] = value
    return await uow.step_executions.create_many([good, bad])


async def _step_output(uow: UnitOfWork, stored: Stored, value: object) -> object:
    return await uow.step_executions.update_completion(
        stored.step.id,
        StepExecutionState.SUCCEEDED,
        output=cast("JsonValue", [value]),
    )


async def _artifact_metadata(uow: UnitOfWork, stored: Stored, value: object) -> object:
    artifact = Artifact.new(stored.workflow.id, "hostile", "a.json", path="out/a", size_bytes=1)
    cast("dict[str, object]", artifact.metadata)["bad"] = value
    return await uow.artifacts.create(artifact)


OPERATIONS: dict[str, Operation] = {
    "workflow-input": _workflow_input,
    "workflow-metadata": _workflow_metadata,
    "workflow-output": _output,
    "step-input": _step_input,
    "step-batch": _many_steps,
    "step-output": _step_output,
    "artifact-metadata": _artifact_metadata,
}


@pytest.fixture
async def stored(db: Database) -> Stored:
    """A workflow with a running step, committed."""
    async with db.session() as uow:
        workflow = await persist_workflow(uow)
        step = await persist_step(uow, workflow)
    return Stored(workflow, step)


async def _refused(db: Database, stored: Stored, operation: Operation, value: object) -> str:
    """Run ``operation`` in a unit of work; check that it failed before SQL and wrote nothing."""
    before = await row_counts(db)
    with (
        statements_run(db) as statements,
        pytest.raises((SerializationError, ValidationError)) as caught,
    ):
        async with db.session() as uow:
            await operation(uow, stored, value)
    error = caught.value
    assert statements == []
    assert await row_counts(db) == before
    async with db.session(read_only=True) as uow:
        assert await uow.workflows.get(stored.workflow.id) == stored.workflow
        assert await uow.step_executions.get(stored.step.id) == stored.step
    return f"{error} {error!r}"


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
@pytest.mark.parametrize("make", HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_payload_is_refused_before_any_sql(
    db: Database, stored: Stored, operation: Operation, make: Callable[[], object]
) -> None:
    message = await _refused(db, stored, operation, make())
    assert SECRET not in message
    # The database is as usable as before.
    async with db.session() as uow:
        await uow.workflows.update_output(stored.workflow.id, {"fine": True})


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
async def test_hundred_megabyte_payload_is_refused_without_copying_it(
    db: Database, stored: Stored, operation: Operation
) -> None:
    huge = "x" * HUNDRED_MB
    tracemalloc.start()
    try:
        await _refused(db, stored, operation, huge)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # No encoded or copied form of the string was made: a copy alone is 100 MB.
    assert peak < HUNDRED_MB // 20


async def test_minus_zero_is_refused_at_the_top_level_too_and_zero_round_trips(
    db: Database, stored: Stored
) -> None:
    with pytest.raises(SerializationError, match=r"-0\.0"):
        Workflow.new("hostile", -0.0)
    with pytest.raises(SerializationError, match=r"-0\.0"):
        StepExecution.start(stored.workflow.id, "hostile", {"fine": 1}, metadata={"x": -0.0})
    await _refused(
        db, stored, lambda uow, s, v: uow.workflows.update_output(s.workflow.id, -0.0), None
    )
    await _refused(
        db,
        stored,
        lambda uow, s, v: uow.step_executions.update_completion(
            s.step.id, StepExecutionState.SUCCEEDED, output=-0.0
        ),
        None,
    )
    # What is stored instead reads back the same, sign and type, on both backends.
    async with db.session() as uow:
        await uow.workflows.update_output(stored.workflow.id, [0.0, -1.5])
    async with db.session(read_only=True) as uow:
        stored_now = await uow.workflows.get(stored.workflow.id)
    assert stored_now is not None
    output = cast("list[float]", stored_now.output)
    assert output == [0.0, -1.5]
    assert [math.copysign(1.0, x) for x in output] == [1.0, -1.0]
