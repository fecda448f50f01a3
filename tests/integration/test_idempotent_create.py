"""Idempotent starts: one workflow per (definition, idempotency key), on both backends."""

from __future__ import annotations

import asyncio

import attrs
import pytest
from sqlalchemy import false, text
from tests.factories import WorkflowFactory, stored_workflow

from ecl_persistence import (
    ConflictError,
    ConstraintViolationError,
    Database,
    JsonValue,
    Workflow,
)
from ecl_persistence.repositories import _workflow_sql

CONCURRENT = 20


async def count_workflows(db: Database) -> int:
    async with db.session(read_only=True) as uow:
        result = await uow.execute(text("SELECT count(*) FROM workflows"), action="count")
        return int(result.scalar_one())


async def create_or_get(db: Database, workflow: Workflow) -> tuple[Workflow, bool]:
    async with db.session() as uow:
        return await uow.workflows.create_or_get(workflow)


async def test_a_retried_start_returns_the_first_workflow_not_a_second(db: Database) -> None:
    first = Workflow.new("research", {"topic": "tides"}, idempotency_key="request-1")
    retry = Workflow.new("research", {"topic": "tides"}, idempotency_key="request-1")

    stored, created = await create_or_get(db, first)
    again, created_again = await create_or_get(db, retry)
    async with db.session() as uow:
        via_create = await uow.workflows.create(retry)

    assert (stored, created) == (first, True)
    assert (again, created_again) == (first, False)
    assert via_create == first
    assert await stored_workflow(db, first.id) == first
    assert await count_workflows(db) == 1


async def test_retrying_the_very_same_workflow_returns_it_as_not_created(db: Database) -> None:
    workflow = Workflow.new("research", {"topic": "tides"}, idempotency_key="request-1")
    await create_or_get(db, workflow)
    assert await create_or_get(db, workflow) == (workflow, False)


@pytest.mark.parametrize(
    "other_input",
    [{"topic": "waves"}, {"topic": "tides", "depth": 2}, {"topic": ["tides"]}, None],
    ids=repr,
)
async def test_the_same_key_with_another_input_raises_conflict_and_writes_nothing(
    db: Database, other_input: JsonValue
) -> None:
    first = Workflow.new("research", {"topic": "tides"}, idempotency_key="request-1")
    await create_or_get(db, first)
    with pytest.raises(ConflictError, match=str(first.id)) as refused:
        await create_or_get(db, Workflow.new("research", other_input, idempotency_key="request-1"))
    assert refused.value.retryable is False
    assert await count_workflows(db) == 1


@pytest.mark.parametrize(
    ("first_input", "second_input"),
    [({"n": 1}, {"n": 1.0}), ({"n": 1}, {"n": True}), ([0], [False])],
    ids=["int-float", "int-bool", "int-bool-in-list"],
)
async def test_inputs_equal_in_python_but_not_in_json_are_different(
    db: Database, first_input: JsonValue, second_input: JsonValue
) -> None:
    await create_or_get(db, Workflow.new("research", first_input, idempotency_key="k"))
    with pytest.raises(ConflictError):
        await create_or_get(db, Workflow.new("research", second_input, idempotency_key="k"))


async def test_inputs_with_keys_in_another_order_are_the_same(db: Database) -> None:
    first = Workflow.new("research", {"a": 1, "b": [1.5, "x"]}, idempotency_key="k")
    await create_or_get(db, first)
    again = Workflow.new("research", {"b": [1.5, "x"], "a": 1}, idempotency_key="k")
    assert await create_or_get(db, again) == (first, False)


async def test_a_key_is_unique_per_definition_only(db: Database) -> None:
    research = Workflow.new("research", {"topic": "tides"}, idempotency_key="k")
    translate = Workflow.new("translate", {"topic": "tides"}, idempotency_key="k")
    assert (await create_or_get(db, research))[1] is True
    assert (await create_or_get(db, translate))[1] is True
    assert await count_workflows(db) == 2


async def test_workflows_without_a_key_never_collide(db: Database) -> None:
    workflows = [Workflow.new("research", {"topic": "tides"}) for _ in range(3)]
    for workflow in workflows:
        assert await create_or_get(db, workflow) == (workflow, True)
    assert await count_workflows(db) == 3


async def test_a_duplicate_id_with_another_key_still_violates_the_primary_key(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build(idempotency_key="k1")
    await create_or_get(db, workflow)
    with pytest.raises(ConstraintViolationError):
        await create_or_get(db, attrs.evolve(workflow, idempotency_key="k2"))


async def test_twenty_concurrent_creates_with_one_key_make_one_row(database_url: str) -> None:
    starts = [
        Workflow.new("research", {"topic": "tides"}, idempotency_key="request-1")
        for _ in range(CONCURRENT)
    ]
    async with Database.from_url(database_url, max_connections=CONCURRENT, timeout_secs=30) as db:
        # Open every connection first, so that the creates reach the database together.
        await asyncio.gather(*(db.ping() for _ in range(CONCURRENT)))
        outcomes = await asyncio.gather(*(create_or_get(db, start) for start in starts))
        rows = await count_workflows(db)

    assert rows == 1
    assert sum(created for _, created in outcomes) == 1
    (winner,) = (stored for stored, created in outcomes if created)
    assert {stored.id for stored, _ in outcomes} == {winner.id}


async def test_a_create_racing_an_uncommitted_one_waits_for_it_and_returns_it(
    database_url: str,
) -> None:
    first = Workflow.new("research", {"topic": "tides"}, idempotency_key="request-1")
    second = Workflow.new("research", {"topic": "tides"}, idempotency_key="request-1")
    async with Database.from_url(database_url, max_connections=2, timeout_secs=30) as db:
        async with db.session() as uow:
            await uow.workflows.create(first)
            racer = asyncio.create_task(create_or_get(db, second))
            await asyncio.sleep(0.2)
            # It cannot finish before the first create commits: the key is taken
            # but not yet visible, so it waits (a row lock on PostgreSQL, the
            # write lock on SQLite).
            assert not racer.done()
        assert await racer == (first, False)
        assert await count_workflows(db) == 1


async def test_a_keyed_workflow_deleted_before_it_is_read_back_raises_a_retryable_conflict(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_or_get(db, Workflow.new("research", {}, idempotency_key="k"))
    # Stands for a concurrent delete committed between the insert and the read.
    monkeypatch.setattr(_workflow_sql, "GET_BY_KEY", _workflow_sql.GET.where(false()))
    with pytest.raises(ConflictError, match="deleted meanwhile") as raced:
        await create_or_get(db, Workflow.new("research", {}, idempotency_key="k"))
    assert raced.value.retryable is True
