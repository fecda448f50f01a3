"""Ids given as the text of a UUID are accepted wherever an id is taken, parsed once at the door.

``WorkflowId`` is a ``NewType``: ``WorkflowId("0190...")`` stays a ``str`` at
run time, so every method and constructor that takes an id parses such text.
Only text that is not a UUID is refused, with "not a UUID" and without
quoting it; a value of another type is refused naming its type.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import attrs
import pytest
from tests.factories import persist_artifact, persist_step, persist_workflow, statements_run

from ecl_persistence import (
    Artifact,
    ArtifactId,
    Database,
    StepExecution,
    StepExecutionId,
    StepExecutionState,
    ValidationError,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.unit_of_work import UnitOfWork

SECRET = "Not-A-Uuid-Secret"


@attrs.frozen
class Ids:
    """The ids of a stored workflow, one of its steps and one of its artifacts."""

    workflow: WorkflowId
    step: StepExecutionId
    artifact: ArtifactId


Spell = Callable[[uuid.UUID], Any]
Call = Callable[[UnitOfWork, Ids, Spell], Awaitable[object]]

# Reads and writes that leave the data as they found it (or change it the same
# way whichever spelling of the id they get).
READS: dict[str, Call] = {
    "workflows.get": lambda uow, ids, s: uow.workflows.get(s(ids.workflow)),
    "workflows.load": lambda uow, ids, s: uow.workflows.load(s(ids.workflow)),
    "workflows.resume_point": lambda uow, ids, s: uow.workflows.resume_point(s(ids.workflow)),
    "workflows.history": lambda uow, ids, s: uow.workflows.history(s(ids.workflow)),
    "step_executions.get": lambda uow, ids, s: uow.step_executions.get(s(ids.step)),
    "step_executions.get_for_workflow": lambda uow, ids, s: uow.step_executions.get_for_workflow(
        s(ids.workflow)
    ),
    "step_executions.get_for_step": lambda uow, ids, s: uow.step_executions.get_for_step(
        s(ids.workflow), "step"
    ),
    "step_executions.latest_attempts": lambda uow, ids, s: uow.step_executions.latest_attempts(
        s(ids.workflow)
    ),
    "step_executions.get_stats": lambda uow, ids, s: uow.step_executions.get_stats(s(ids.workflow)),
    "artifacts.get": lambda uow, ids, s: uow.artifacts.get(s(ids.artifact)),
    "artifacts.list_for_workflow": lambda uow, ids, s: uow.artifacts.list_for_workflow(
        s(ids.workflow)
    ),
    "artifacts.list_for_step": lambda uow, ids, s: uow.artifacts.list_for_step(
        s(ids.workflow), "step"
    ),
}

Effect = Callable[[UnitOfWork, Ids], Awaitable[bool]]


async def _workflow_state(uow: UnitOfWork, ids: Ids) -> WorkflowState | None:
    workflow = await uow.workflows.get(ids.workflow)
    return None if workflow is None else workflow.state


# Each write, and how to see in the database that it happened to the rows named.
WRITES: dict[str, tuple[Call, Effect]] = {
    "workflows.update_state": (
        lambda uow, ids, s: uow.workflows.update_state(s(ids.workflow), WorkflowState.RUNNING),
        lambda uow, ids: _is(_workflow_state(uow, ids), WorkflowState.RUNNING),
    ),
    "workflows.update_output": (
        lambda uow, ids, s: uow.workflows.update_output(s(ids.workflow), {"done": True}),
        lambda uow, ids: _is(_output(uow, ids), {"done": True}),
    ),
    "workflows.claim_by_id": (
        lambda uow, ids, s: uow.workflows.claim_by_id(s(ids.workflow), "w"),
        lambda uow, ids: _is(_workflow_state(uow, ids), WorkflowState.RUNNING),
    ),
    "step_executions.update_completion": (
        lambda uow, ids, s: uow.step_executions.update_completion(
            s(ids.step), StepExecutionState.SUCCEEDED
        ),
        lambda uow, ids: _is(_step_state(uow, ids), StepExecutionState.SUCCEEDED),
    ),
    "step_executions.start": (
        lambda uow, ids, s: uow.step_executions.start(s(ids.workflow), "next", {"q": 1}),
        lambda uow, ids: _is(_step_count(uow, ids), 2),
    ),
    "artifacts.delete": (
        lambda uow, ids, s: uow.artifacts.delete(s(ids.artifact)),
        lambda uow, ids: _is(uow.artifacts.get(ids.artifact), None),
    ),
    "workflows.delete": (
        lambda uow, ids, s: uow.workflows.delete(s(ids.workflow)),
        lambda uow, ids: _is(uow.workflows.get(ids.workflow), None),
    ),
}


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _output(uow: UnitOfWork, ids: Ids) -> object:
    workflow = await uow.workflows.get(ids.workflow)
    return None if workflow is None else workflow.output


async def _step_state(uow: UnitOfWork, ids: Ids) -> object:
    step = await uow.step_executions.get(ids.step)
    return None if step is None else step.state


async def _step_count(uow: UnitOfWork, ids: Ids) -> int:
    return len(await uow.step_executions.get_for_workflow(ids.workflow))


SPELLINGS: dict[str, Spell] = {
    "str": str,
    "upper-case": lambda id: str(id).upper(),
    "hex": lambda id: id.hex,
    "WorkflowId(str)": lambda id: WorkflowId(cast("uuid.UUID", str(id))),
}

NOT_UUIDS = {
    "one-digit-short": lambda id: str(id)[:-1],
    "braces": lambda id: "{" + str(id) + "}",
    "urn": lambda id: id.urn,
    "spaces": lambda id: f" {id} ",
    "secret": lambda id: SECRET,
    "empty": lambda id: "",
}


async def _stored(db: Database) -> Ids:
    async with db.session() as uow:
        workflow = await persist_workflow(uow)
        step = await persist_step(uow, workflow, step_id="step")
        artifact = await persist_artifact(uow, workflow, step_id="step")
    return Ids(workflow.id, step.id, artifact.id)


async def _run(db: Database, call: Call, ids: Ids, spell: Spell) -> object:
    async with db.session() as uow:
        return await call(uow, ids, spell)


@pytest.mark.parametrize("call", READS.values(), ids=READS.keys())
async def test_every_read_takes_the_text_of_a_uuid(db: Database, call: Call) -> None:
    ids = await _stored(db)
    expected = await _run(db, call, ids, lambda id: id)
    for name, spell in SPELLINGS.items():
        assert await _run(db, call, ids, spell) == expected, name


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
async def test_every_write_takes_the_text_of_a_uuid(
    db: Database, write: tuple[Call, Effect]
) -> None:
    call, effect = write
    for name, spell in SPELLINGS.items():
        ids = await _stored(db)
        async with db.session(read_only=True) as uow:
            assert not await effect(uow, ids)
        await _run(db, call, ids, spell)
        async with db.session(read_only=True) as uow:
            assert await effect(uow, ids), name


@pytest.mark.parametrize(
    "call", [*READS.values(), *(call for call, _ in WRITES.values())], ids=[*READS, *WRITES]
)
async def test_text_that_is_not_a_uuid_is_refused_before_any_sql(db: Database, call: Call) -> None:
    ids = await _stored(db)
    for name, spell in NOT_UUIDS.items():
        with statements_run(db) as statements, pytest.raises(ValidationError) as caught:
            await _run(db, call, ids, spell)
        assert statements == [], name
        message = str(caught.value)
        assert "id is not a UUID: " in message, name
        assert SECRET not in message
        assert str(ids.workflow)[:8] not in message


@pytest.mark.parametrize("value", [42, 4.2, b"0" * 16, None, ["id"]], ids=repr)
async def test_an_id_of_another_type_is_refused_naming_the_type(
    db: Database, value: object
) -> None:
    async with db.session(read_only=True) as uow:
        with pytest.raises(
            ValidationError, match=f"must be a UUID or its text, not {type(value).__name__}"
        ):
            await uow.workflows.get(cast(Any, value))


async def test_domain_constructors_parse_the_text_of_a_uuid_once(db: Database) -> None:
    ids = await _stored(db)
    text = str(ids.workflow)
    step = StepExecution.start(cast(Any, text), "step", {"q": 1}, attempt=2)
    artifact = Artifact.new(cast(Any, text), "step", "b.json", path="out/b", size_bytes=1)
    assert step.workflow_id == ids.workflow
    assert type(step.workflow_id) is uuid.UUID
    assert type(artifact.workflow_id) is uuid.UUID
    async with db.session() as uow:
        await uow.step_executions.create(step)
        await uow.artifacts.create(artifact)
    async with db.session(read_only=True) as uow:
        assert await uow.step_executions.get(str(step.id)) == step
        assert await uow.artifacts.get(str(artifact.id)) == artifact
    with pytest.raises(ValidationError, match="workflow_id is not a UUID"):
        StepExecution.start(cast(Any, SECRET), "step", {})
