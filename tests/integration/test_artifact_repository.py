"""ArtifactRepository against a real database: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any, cast

import pytest
from tests.factories import (
    ArtifactFactory,
    at,
    create_artifacts,
    get_artifact,
    new_workflow,
    raw_scalar,
    sql,
    stored_artifact,
)

from ecl_persistence import (
    Artifact,
    ArtifactId,
    ConstraintViolationError,
    Database,
    NotFoundError,
    QueryFailedError,
    StepId,
    TransactionFailedError,
    ValidationError,
    Workflow,
    WorkflowId,
)
from ecl_persistence.domain import new_uuid7
from ecl_persistence.unit_of_work import UnitOfWork


def artifact(workflow: Workflow, **fields: Any) -> Artifact:
    return ArtifactFactory.build(workflow_id=workflow.id, **fields)


async def listed(db: Database, workflow_id: WorkflowId) -> list[Artifact]:
    async with db.session(read_only=True) as uow:
        return await uow.artifacts.list_for_workflow(workflow_id)


# --- create and get -------------------------------------------------------------------


async def test_create_then_get_returns_an_equal_artifact(db: Database) -> None:
    workflow = await new_workflow(db)
    report = Artifact.new(
        workflow.id,
        StepId("summarise"),
        "report.md",
        content_type="text/markdown; charset=utf-8",
        path="runs/2024/report.md",
        size_bytes=2048,
        metadata={"pages": 3, "tags": ["a", "b"]},
    )
    async with db.session() as uow:
        assert await uow.artifacts.create(report) is report
    got = await stored_artifact(db, report.id)
    assert got == report
    assert got.created_at.tzinfo is UTC


async def test_get_returns_none_for_an_unknown_id(db: Database) -> None:
    workflow = await new_workflow(db)
    await create_artifacts(db, artifact(workflow))
    assert await get_artifact(db, ArtifactId(new_uuid7())) is None


@pytest.mark.parametrize(
    "path",
    [
        "s3://bucket/runs/2024/report.json",
        "gs://bucket/a%20b/r\u00e9sum\u00e9.json",
        "https://example.com/files/1?version=2",
        "out/report.md",
    ],
)
async def test_artifact_path_round_trips_unchanged(db: Database, path: str) -> None:
    workflow = await new_workflow(db)
    item = artifact(workflow, path=path)
    await create_artifacts(db, item)
    got = await stored_artifact(db, item.id)
    assert got.path == path
    assert await raw_scalar(db, "SELECT path FROM artifacts WHERE id = :id", id=item.id) == path


async def test_largest_size_round_trips(db: Database) -> None:
    workflow = await new_workflow(db)
    huge = artifact(workflow, size_bytes=2**63 - 1)
    await create_artifacts(db, huge)
    got = await stored_artifact(db, huge.id)
    assert got.size_bytes == 2**63 - 1


async def test_duplicate_name_of_a_step_raises_with_the_unique_constraint_name(
    db: Database,
) -> None:
    workflow = await new_workflow(db)
    first = artifact(workflow, step_id="search", name="hits.json")
    await create_artifacts(db, first)
    with pytest.raises(TransactionFailedError):
        async with db.session() as uow:
            with pytest.raises(ConstraintViolationError) as info:
                await uow.artifacts.create(artifact(workflow, step_id="search", name="hits.json"))
    assert info.value.constraint == "uq_artifacts_workflow_id_step_id_name"
    assert await listed(db, workflow.id) == [first]


async def test_same_name_in_another_step_or_workflow_is_allowed(db: Database) -> None:
    one, two = await new_workflow(db), await new_workflow(db)
    items = [
        artifact(one, step_id="search", name="out.json", created_at=at(0)),
        artifact(one, step_id="summarise", name="out.json", created_at=at(1)),
        artifact(two, step_id="search", name="out.json", created_at=at(2)),
    ]
    await create_artifacts(db, *items)
    assert await listed(db, one.id) == items[:2]
    assert await listed(db, two.id) == items[2:]


async def test_create_for_an_unknown_workflow_raises_and_writes_nothing(db: Database) -> None:
    orphan = ArtifactFactory.build(workflow_id=new_uuid7())
    with pytest.raises(TransactionFailedError):
        async with db.session() as uow:
            with pytest.raises(ConstraintViolationError, match="foreign key") as info:
                await uow.artifacts.create(orphan)
    if db.dialect == "postgresql":
        assert info.value.constraint == "fk_artifacts_workflow_id_workflows"
    assert await raw_scalar(db, "SELECT count(*) FROM artifacts") == 0


async def test_create_rejects_something_that_is_not_an_artifact(db: Database) -> None:
    async with db.session() as uow:
        with pytest.raises(ValidationError):
            await uow.artifacts.create(cast(Any, {"id": new_uuid7()}))


# --- listing --------------------------------------------------------------------------


async def test_list_for_workflow_returns_its_artifacts_oldest_first(db: Database) -> None:
    workflow, other = await new_workflow(db), await new_workflow(db)
    mine = [
        artifact(workflow, step_id="b", name="z", created_at=at(3)),
        artifact(workflow, step_id="a", name="y", created_at=at(1)),
        # Same instant: ordered by step, then name.
        artifact(workflow, step_id="b", name="a", created_at=at(2)),
        artifact(workflow, step_id="a", name="b", created_at=at(2)),
        artifact(workflow, step_id="a", name="a", created_at=at(2)),
    ]
    await create_artifacts(db, *mine, artifact(other, created_at=at(0)))
    got = await listed(db, workflow.id)
    assert got == sorted(mine, key=lambda a: (a.created_at, a.step_id, a.name))
    assert await listed(db, WorkflowId(new_uuid7())) == []


async def test_list_for_step_returns_only_that_steps_artifacts_oldest_first(
    db: Database,
) -> None:
    workflow, other = await new_workflow(db), await new_workflow(db)
    search = [
        artifact(workflow, step_id="search", name="late", created_at=at(5)),
        artifact(workflow, step_id="search", name="early", created_at=at(1)),
        artifact(workflow, step_id="search", name="b-tie", created_at=at(3)),
        artifact(workflow, step_id="search", name="a-tie", created_at=at(3)),
    ]
    noise = [
        artifact(workflow, step_id="summarise", created_at=at(2)),
        artifact(other, step_id="search", created_at=at(2)),
    ]
    await create_artifacts(db, *search, *noise)
    async with db.session(read_only=True) as uow:
        got = await uow.artifacts.list_for_step(workflow.id, StepId("search"))
        none = await uow.artifacts.list_for_step(workflow.id, "fetch")
    assert [a.name for a in got] == ["early", "a-tie", "b-tie", "late"]
    assert got == sorted(search, key=lambda a: (a.created_at, a.name))
    assert none == []


# --- delete ---------------------------------------------------------------------------


async def test_delete_removes_only_the_record(db: Database) -> None:
    workflow = await new_workflow(db)
    doomed, kept = artifact(workflow), artifact(workflow)
    await create_artifacts(db, doomed, kept)
    async with db.session() as uow:
        await uow.artifacts.delete(doomed.id)
    assert await get_artifact(db, doomed.id) is None
    assert await listed(db, workflow.id) == [kept]
    async with db.session(read_only=True) as uow:
        assert await uow.workflows.get(workflow.id) == workflow


async def test_delete_of_a_missing_artifact_raises_not_found_with_type_and_id(
    db: Database,
) -> None:
    workflow = await new_workflow(db)
    item = artifact(workflow)
    await create_artifacts(db, item)
    async with db.session() as uow:
        await uow.artifacts.delete(item.id)
    for absent in (item.id, ArtifactId(new_uuid7())):
        async with db.session() as uow:
            with pytest.raises(NotFoundError) as info:
                await uow.artifacts.delete(absent)
        assert (info.value.entity_type, info.value.id) == ("artifact", absent)
        assert str(absent) in str(info.value)


# --- corrupt rows ---------------------------------------------------------------------


async def test_reading_an_artifact_whose_metadata_is_not_an_object_raises_query_failed(
    db: Database,
) -> None:
    workflow = await new_workflow(db)
    item = artifact(workflow)
    await create_artifacts(db, item)
    value = "CAST(:value AS jsonb)" if db.dialect == "postgresql" else ":value"
    async with db.engine.begin() as connection:
        await connection.execute(
            sql(f"UPDATE artifacts SET metadata = {value} WHERE id = :id", value='"x"', id=item.id)
        )
    async with db.session(read_only=True) as uow:
        with pytest.raises(QueryFailedError) as info:
            await uow.artifacts.get(item.id)
    assert "artifacts" in str(info.value)
    assert "metadata" in str(info.value)
    assert str(item.id) in str(info.value)


# --- read-only and finished units of work ---------------------------------------------

ReadOnlyWrite = Callable[[UnitOfWork, Workflow, Artifact], Awaitable[object]]
READ_ONLY_WRITES: dict[str, ReadOnlyWrite] = {
    "create": lambda uow, wf, item: uow.artifacts.create(artifact(wf)),
    "delete": lambda uow, wf, item: uow.artifacts.delete(item.id),
}


@pytest.mark.parametrize("operation", list(READ_ONLY_WRITES))
async def test_read_only_unit_refuses_every_artifact_write(db: Database, operation: str) -> None:
    workflow = await new_workflow(db)
    item = artifact(workflow)
    await create_artifacts(db, item)
    async with db.session(read_only=True) as uow:
        with pytest.raises(TransactionFailedError, match="read-only"):
            await READ_ONLY_WRITES[operation](uow, workflow, item)
        assert await uow.artifacts.get(item.id) == item
        assert await uow.artifacts.list_for_step(workflow.id, item.step_id) == [item]
    assert await listed(db, workflow.id) == [item]


async def test_artifact_repository_used_after_its_unit_ended_raises(db: Database) -> None:
    workflow = await new_workflow(db)
    item = artifact(workflow)
    async with db.session() as uow:
        await uow.artifacts.create(item)
    repository = uow.artifacts
    with pytest.raises(TransactionFailedError):
        await repository.get(item.id)
    with pytest.raises(TransactionFailedError):
        await repository.list_for_workflow(workflow.id)
    with pytest.raises(TransactionFailedError):
        await repository.create(artifact(workflow))
    with pytest.raises(TransactionFailedError):
        await repository.delete(item.id)
    assert await listed(db, workflow.id) == [item]
