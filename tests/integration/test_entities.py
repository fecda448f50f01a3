"""Entities are the mapping: what a loaded record holds, and that no stale one survives."""

from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import select
from sqlalchemy.exc import InvalidRequestError
from tests.factories import StepExecutionFactory, WorkflowFactory, raw_execute

from ecl_persistence import (
    MISSING,
    Database,
    QueryFailedError,
    SerializationError,
    StepExecutionState,
    StoredValueError,
    Workflow,
    WorkflowState,
)
from ecl_persistence.orm import StepExecutionRecord, WorkflowRecord

SECRET = "sk-entity-secret-4242"


async def _create(db: Database, workflow: Workflow) -> None:
    async with db.session() as uow:
        await uow.workflows.create(workflow)


async def test_an_entity_loaded_through_the_session_holds_decoded_values(db: Database) -> None:
    pending = WorkflowFactory.build(input={"q": 1, "nested": [1.5, None, "é"]})
    null_output = WorkflowFactory.build(output=None)
    await _create(db, pending)
    await _create(db, null_output)
    async with db.session(read_only=True) as uow:
        record = await uow.session.get(WorkflowRecord, pending.id)
        with_null = await uow.session.get(WorkflowRecord, null_output.id)
    assert record is not None
    assert with_null is not None
    assert record.input == {"q": 1, "nested": [1.5, None, "é"]}
    assert record.metadata_ == {}
    # SQL NULL and JSON null stay apart, on both backends.
    assert record.output is MISSING
    assert with_null.output is None
    assert record.created_at.tzinfo is UTC
    assert record.created_at == pending.created_at


async def test_a_record_query_of_the_application_decodes_like_the_repositories(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build(input={"topic": "tides"})
    await _create(db, workflow)
    async with db.session(read_only=True) as uow:
        result = await uow.session.execute(
            select(WorkflowRecord.input, WorkflowRecord.output).where(
                WorkflowRecord.id == workflow.id
            )
        )
        input_value, output_value = result.one()
    assert input_value == {"topic": "tides"}
    assert output_value is MISSING


async def test_relationships_never_load_lazily(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await _create(db, workflow)
    async with db.session(read_only=True) as uow:
        record = await uow.session.get(WorkflowRecord, workflow.id)
        assert record is not None
        with pytest.raises(InvalidRequestError, match="lazy='raise'"):
            _ = record.step_executions


async def test_an_undecodable_document_names_table_column_and_row_never_the_value(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build()
    await _create(db, workflow)
    # jsonb keeps any number; this one is beyond the 64 bits payloads are written under.
    damaged = f'{{"token": "{SECRET}", "n": 99999999999999999999}}'
    column = "CAST(:value AS jsonb)" if db.dialect == "postgresql" else ":value"
    await raw_execute(
        db, f"UPDATE workflows SET input = {column} WHERE id = :id", value=damaged, id=workflow.id
    )
    async with db.session(read_only=True) as uow:
        with pytest.raises(StoredValueError) as through_repository:
            await uow.workflows.get(workflow.id)
        with pytest.raises(StoredValueError) as through_session:
            await uow.session.get(WorkflowRecord, workflow.id)
        # The statement ran: the unit of work is still usable.
        assert await uow.workflows.count_by_state() is not None
    for error in (through_repository.value, through_session.value):
        message = str(error)
        assert f"workflows.input of {workflow.id}" in message
        assert SECRET not in message
        assert "99999999999999999999" not in message
        assert isinstance(error, SerializationError)
        assert isinstance(error, QueryFailedError)


async def test_a_state_change_refreshes_the_entity_the_session_holds(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await _create(db, workflow)
    async with db.session() as uow:
        record = await uow.session.get(WorkflowRecord, workflow.id)
        assert record is not None
        assert record.state == "pending"
        moved = await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING)
        assert (record.state, record.version) == ("running", 2)
        assert moved.version == 2
        await uow.workflows.update_output(workflow.id, {"done": True})
        assert record.output == {"done": True}
        assert record.version == 3
        await uow.workflows.update_state(workflow.id, WorkflowState.COMPLETED)
        assert record.state == "completed"
        assert record.completed_at is not None


async def test_a_lease_change_refreshes_the_entity_the_session_holds(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await _create(db, workflow)
    async with db.session() as uow:
        record = await uow.session.get(WorkflowRecord, workflow.id)
        assert record is not None
        claimed = await uow.workflows.claim_by_id(workflow.id, "worker-1")
        assert (record.state, record.lease_owner) == ("running", "worker-1")
        await uow.workflows.heartbeat(workflow.id, "worker-1", lease_seconds=120)
        assert record.lease_expires_at is not None
        assert claimed.lease_expires_at is not None
        assert record.lease_expires_at > claimed.lease_expires_at
        await uow.workflows.release(workflow.id, "worker-1")
        assert (record.state, record.lease_owner) == ("pending", None)


async def test_a_completed_attempt_refreshes_the_entity_the_session_holds(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await _create(db, workflow)
    execution = StepExecutionFactory.build(workflow_id=workflow.id)
    async with db.session() as uow:
        await uow.step_executions.create(execution)
        record = await uow.session.get(StepExecutionRecord, execution.id)
        assert record is not None
        assert record.state == "running"
        await uow.step_executions.update_completion(
            execution.id, StepExecutionState.SUCCEEDED, output={"hits": 3}, duration_ms=5
        )
        assert (record.state, record.output, record.duration_ms) == ("succeeded", {"hits": 3}, 5)


async def test_a_deleted_workflow_leaves_the_session_too(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await _create(db, workflow)
    async with db.session() as uow:
        record = await uow.session.get(WorkflowRecord, workflow.id)
        assert record is not None
        await uow.workflows.delete(workflow.id)
        assert record not in uow.session
        assert await uow.session.get(WorkflowRecord, workflow.id) is None
