"""WorkflowRepository against a real database: every test runs on SQLite and on PostgreSQL.

Corrupt rows: a state outside the enum cannot be written on PostgreSQL without
dropping its CHECK constraint, and the PostgreSQL scratch database is shared by
the whole session (truncated, not re-created, between tests), so DDL there
would leak into other tests. The unknown-state and malformed-JSON cases are
therefore tested on a private in-memory SQLite database (``memory_db``), and
both backends are tested with corrupt data that their schema does accept but
the domain refuses (a non-object ``metadata``, an integer beyond 64 bits, an
empty ``definition_id``).
"""

from __future__ import annotations

import base64
import string
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
from sqlalchemy import text
from tests.factories import (
    CURSOR_RESPELLINGS,
    WorkflowFactory,
    at,
    create_workflows,
    cursor_bytes,
    get_workflow,
    persist_artifact,
    persist_step,
    persist_workflow,
    raw_scalar,
    sql,
    statements_run,
    stored_workflow,
)

from ecl_persistence import (
    MISSING,
    ConstraintViolationError,
    Database,
    InvalidStateTransitionError,
    NotFoundError,
    QueryFailedError,
    TransactionFailedError,
    ValidationError,
    Workflow,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.domain import WORKFLOW_TRANSITIONS, new_uuid7
from ecl_persistence.repositories.workflows import MAX_PAGE_SIZE
from ecl_persistence.unit_of_work import UnitOfWork

LEGAL = [(source, target) for source in WorkflowState for target in WORKFLOW_TRANSITIONS[source]]
ILLEGAL = [
    (source, target)
    for source in WorkflowState
    for target in WorkflowState
    if target not in WORKFLOW_TRANSITIONS[source]
]


def missing_id() -> WorkflowId:
    return WorkflowId(new_uuid7())


def as_column(db: Database, column: str) -> str:
    """The ``:value`` parameter, cast to jsonb where PostgreSQL needs it for a JSON column."""
    if db.dialect == "postgresql" and column in {"input", "output", "metadata"}:
        return "CAST(:value AS jsonb)"
    return ":value"


async def raw_execute(db: Database, statement: str, **params: object) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(sql(statement, **params))


def workflow_in(state: WorkflowState, **fields: Any) -> Workflow:
    """A workflow as it would be stored in ``state``, created at ``T0`` unless told otherwise."""
    created = fields.pop("created_at", at(minutes=0))
    return WorkflowFactory.build(
        state=state,
        created_at=created,
        completed_at=created if state.is_finished else None,
        error="boom" if state is WorkflowState.FAILED else None,
        **fields,
    )


def encode(payload: str) -> str:
    return "c1." + base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


@pytest.fixture
async def memory_db() -> AsyncIterator[Database]:
    """A private, migrated in-memory SQLite database (for writes only SQLite lets through)."""
    database = await Database.in_memory()
    yield database
    await database.dispose()


# --- The stage plan's own tests -------------------------------------------------------


async def test_create_then_get_returns_an_equal_workflow(db: Database) -> None:
    workflow = Workflow.new("research", {"topic": "tides", "depth": [1, 2.5, None, True]})
    async with db.session() as uow:
        assert await uow.workflows.create(workflow) is workflow
    got = await stored_workflow(db, workflow.id)
    assert got == workflow
    assert got is not workflow
    assert got.output is MISSING
    assert got.created_at.tzinfo is UTC


async def test_update_state_is_persisted(db: Database) -> None:
    workflow = workflow_in(WorkflowState.PENDING)
    await create_workflows(db, workflow)
    async with db.session() as uow:
        updated = await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING)
    assert updated.state is WorkflowState.RUNNING
    assert await stored_workflow(db, workflow.id) == updated


async def test_list_by_state_returns_only_that_state_oldest_first(db: Database) -> None:
    running = [workflow_in(WorkflowState.RUNNING, created_at=at(minutes=m)) for m in (5, 1, 3)]
    others = [
        workflow_in(WorkflowState.PENDING, created_at=at(minutes=2)),
        workflow_in(WorkflowState.FAILED),
    ]
    await create_workflows(db, *running, *others)
    async with db.session(read_only=True) as uow:
        listed = await uow.workflows.list_by_state(WorkflowState.RUNNING)
        limited = await uow.workflows.list_by_state(WorkflowState.RUNNING, limit=2)
        none_completed = await uow.workflows.list_by_state(WorkflowState.COMPLETED)
    assert listed == sorted(running, key=lambda w: w.created_at)
    assert limited == listed[:2]
    assert none_completed == []


@pytest.mark.parametrize("state", list(WorkflowState), ids=str)
async def test_every_workflow_state_round_trips(db: Database, state: WorkflowState) -> None:
    workflow = workflow_in(state)
    await create_workflows(db, workflow)
    got = await stored_workflow(db, workflow.id)
    assert got == workflow
    assert got.state is state
    assert await raw_scalar(db, "SELECT state FROM workflows WHERE id = :id", id=workflow.id) == (
        state.value
    )


async def test_delete_workflow_cascades_to_steps_and_artifacts(db: Database) -> None:
    async with db.session() as uow:
        doomed = await persist_workflow(uow)
        kept = await persist_workflow(uow)
        for workflow in (doomed, kept):
            await persist_step(uow, workflow, step_id="search")
            await persist_step(uow, workflow, step_id="search", attempt=2)
            await persist_artifact(uow, workflow)
    async with db.session() as uow:
        await uow.workflows.delete(doomed.id)

    count = "SELECT count(*) FROM {} WHERE workflow_id = :id"
    assert await raw_scalar(db, count.format("step_executions"), id=doomed.id) == 0
    assert await raw_scalar(db, count.format("artifacts"), id=doomed.id) == 0
    assert await raw_scalar(db, count.format("step_executions"), id=kept.id) == 2
    assert await raw_scalar(db, count.format("artifacts"), id=kept.id) == 1
    assert await raw_scalar(db, "SELECT count(*) FROM workflows") == 1
    assert await get_workflow(db, doomed.id) is None
    assert await stored_workflow(db, kept.id) == kept


# --- get, create, delete --------------------------------------------------------------


async def test_get_returns_none_for_an_unknown_id(db: Database) -> None:
    await create_workflows(db, WorkflowFactory.build())
    assert await get_workflow(db, missing_id()) is None


async def test_get_rejects_an_id_that_is_not_a_uuid(db: Database) -> None:
    async with db.session(read_only=True) as uow:
        with pytest.raises(ValidationError, match="not a UUID"):
            await uow.workflows.get(str(new_uuid7())[1:])
        with pytest.raises(ValidationError, match="must be a UUID or its text, not int"):
            await uow.workflows.get(cast(Any, new_uuid7().int))


async def test_create_with_a_duplicate_id_raises_constraint_violation_on_the_primary_key(
    db: Database,
) -> None:
    original = WorkflowFactory.build()
    await create_workflows(db, original)
    clash = WorkflowFactory.build(id=original.id, definition_id="other")
    with pytest.raises(TransactionFailedError):
        async with db.session() as uow:
            with pytest.raises(ConstraintViolationError) as info:
                await uow.workflows.create(clash)
    assert info.value.constraint == "pk_workflows"
    assert await stored_workflow(db, original.id) == original


async def test_create_rejects_something_that_is_not_a_workflow(db: Database) -> None:
    async with db.session() as uow:
        with pytest.raises(ValidationError):
            await uow.workflows.create(cast(Any, {"id": 1}))


async def test_delete_removes_only_that_workflow(db: Database) -> None:
    first, second = WorkflowFactory.build(), WorkflowFactory.build()
    await create_workflows(db, first, second)
    async with db.session() as uow:
        await uow.workflows.delete(first.id)
    assert await get_workflow(db, first.id) is None
    assert await stored_workflow(db, second.id) == second


# --- update_state ---------------------------------------------------------------------


async def test_update_state_walks_the_lifecycle_with_timestamps_error_and_version(
    db: Database,
) -> None:
    workflow = workflow_in(WorkflowState.PENDING)
    await create_workflows(db, workflow)
    async with db.session() as uow:
        running = await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING)
    assert (running.state, running.version, running.completed_at, running.error) == (
        WorkflowState.RUNNING,
        2,
        None,
        None,
    )
    assert running.updated_at > workflow.updated_at
    assert running.created_at == workflow.created_at

    async with db.session() as uow:
        failed = await uow.workflows.update_state(
            workflow.id, WorkflowState.FAILED, error="timeout"
        )
    assert (failed.state, failed.version, failed.error) == (WorkflowState.FAILED, 3, "timeout")
    assert failed.completed_at is not None
    assert failed.completed_at == failed.updated_at
    assert failed.updated_at >= running.updated_at
    assert await stored_workflow(db, workflow.id) == failed

    async with db.session() as uow:
        resumed = await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING)
    assert (resumed.state, resumed.version) == (WorkflowState.RUNNING, 4)
    assert resumed.completed_at is None, "resuming a failed workflow clears completed_at"
    assert resumed.error is None, "error=None clears the stored error"
    assert await stored_workflow(db, workflow.id) == resumed

    async with db.session() as uow:
        completed = await uow.workflows.update_state(workflow.id, WorkflowState.COMPLETED)
    assert (completed.state, completed.version) == (WorkflowState.COMPLETED, 5)
    assert completed.completed_at == completed.updated_at
    assert completed.updated_at >= resumed.updated_at
    assert await stored_workflow(db, workflow.id) == completed
    assert completed.input == workflow.input
    assert completed.definition_id == workflow.definition_id


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=lambda s: str(s))
async def test_every_legal_transition_updates_the_row(
    db: Database, source: WorkflowState, target: WorkflowState
) -> None:
    workflow = workflow_in(source)
    await create_workflows(db, workflow)
    async with db.session() as uow:
        moved = await uow.workflows.update_state(workflow.id, target, error="why")
    assert moved.state is target
    assert moved.version == workflow.version + 1
    assert moved.error == "why"
    assert moved.updated_at > workflow.updated_at
    if target.is_finished:
        assert moved.completed_at == moved.updated_at
    else:
        assert moved.completed_at is None
    assert await stored_workflow(db, workflow.id) == moved


@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=lambda s: str(s))
async def test_every_illegal_transition_raises_and_changes_nothing(
    db: Database, source: WorkflowState, target: WorkflowState
) -> None:
    workflow = workflow_in(source)
    await create_workflows(db, workflow)
    async with db.session() as uow:
        with pytest.raises(InvalidStateTransitionError) as info:
            await uow.workflows.update_state(workflow.id, target, error="nope")
        # Refused in Python, not by a failed statement: the unit stays usable.
        assert await uow.workflows.get(workflow.id) == workflow
    error = info.value
    assert (error.entity_type, error.id, error.from_state, error.to_state) == (
        "workflow",
        workflow.id,
        source.value,
        target.value,
    )
    assert str(workflow.id) in str(error)
    assert await stored_workflow(db, workflow.id) == workflow


async def test_update_state_rejects_a_value_that_is_not_a_state(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    async with db.session() as uow:
        with pytest.raises(ValidationError):
            await uow.workflows.update_state(workflow.id, cast(Any, "bogus"))
    assert await stored_workflow(db, workflow.id) == workflow


# --- missing ids ----------------------------------------------------------------------

MissingIdCall = Callable[[UnitOfWork, WorkflowId], Awaitable[object]]
MISSING_ID_CALLS: dict[str, MissingIdCall] = {
    "update_state": lambda uow, id: uow.workflows.update_state(id, WorkflowState.RUNNING),
    "update_output": lambda uow, id: uow.workflows.update_output(id, {"done": True}),
    "delete": lambda uow, id: uow.workflows.delete(id),
}


@pytest.mark.parametrize("operation", list(MISSING_ID_CALLS))
async def test_writing_a_missing_workflow_raises_not_found_with_type_and_id(
    db: Database, operation: str
) -> None:
    existing = WorkflowFactory.build()
    await create_workflows(db, existing)
    absent = missing_id()
    async with db.session() as uow:
        with pytest.raises(NotFoundError) as info:
            await MISSING_ID_CALLS[operation](uow, absent)
    assert (info.value.entity_type, info.value.id) == ("workflow", absent)
    assert str(absent) in str(info.value)
    assert await stored_workflow(db, existing.id) == existing


# --- update_output --------------------------------------------------------------------


async def test_update_output_stores_json_null_distinct_from_missing(db: Database) -> None:
    workflow = Workflow.new("research", {"topic": "tides"}, now=at(minutes=0))
    await create_workflows(db, workflow)
    output_is_sql_null = (
        "SELECT CASE WHEN output IS NULL THEN 1 ELSE 0 END FROM workflows WHERE id = :id"
    )
    fresh = await stored_workflow(db, workflow.id)
    assert fresh.output is MISSING
    assert await raw_scalar(db, output_is_sql_null, id=workflow.id) == 1

    async with db.session() as uow:
        updated = await uow.workflows.update_output(workflow.id, None)
    assert updated.output is None
    assert updated.version == 2
    assert updated.updated_at > workflow.updated_at
    assert updated.state is WorkflowState.PENDING
    got = await stored_workflow(db, workflow.id)
    assert got == updated
    assert got.output is None
    assert await raw_scalar(db, output_is_sql_null, id=workflow.id) == 0


async def test_update_output_replaces_the_output_and_bumps_the_version(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    async with db.session() as uow:
        await uow.workflows.update_output(workflow.id, {"draft": 1})
        second = await uow.workflows.update_output(workflow.id, ["final", {"score": 0.5}])
    assert second.output == ["final", {"score": 0.5}]
    assert second.version == 3
    assert await stored_workflow(db, workflow.id) == second


async def test_update_output_rejects_a_non_json_payload_and_writes_nothing(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    async with db.session() as uow:
        with pytest.raises(ValueError, match="output"):
            await uow.workflows.update_output(workflow.id, cast(Any, {"x": float("nan")}))
    assert await stored_workflow(db, workflow.id) == workflow


# --- list_by_definition ---------------------------------------------------------------


async def test_list_by_definition_returns_only_that_definition_newest_first(db: Database) -> None:
    research = [WorkflowFactory.build(created_at=at(minutes=m)) for m in (2, 9, 4)]
    other = WorkflowFactory.build(definition_id="summarise", created_at=at(minutes=5))
    await create_workflows(db, *research, other)
    async with db.session(read_only=True) as uow:
        listed = await uow.workflows.list_by_definition("research")
        limited = await uow.workflows.list_by_definition("research", limit=1)
        unknown = await uow.workflows.list_by_definition("nothing")
    assert listed == sorted(research, key=lambda w: w.created_at, reverse=True)
    assert limited == listed[:1]
    assert unknown == []


# --- list_by_state and list_by_definition: limits -------------------------------------

# The bound of the two unpaged listings: a hundred of the largest pages.
MAX_LISTED = MAX_PAGE_SIZE * 100

Listing = Callable[[UnitOfWork, Any], Awaitable[list[Workflow]]]
LISTINGS: dict[str, Listing] = {
    "list_by_state": lambda uow, limit: uow.workflows.list_by_state(
        WorkflowState.PENDING, limit=limit
    ),
    "list_by_definition": lambda uow, limit: uow.workflows.list_by_definition(
        "research", limit=limit
    ),
}


async def three_pending_research_workflows(db: Database) -> None:
    await create_workflows(db, *(WorkflowFactory.build(created_at=at(s)) for s in range(3)))


@pytest.mark.parametrize("listing", LISTINGS.values(), ids=list(LISTINGS.keys()))
async def test_list_by_state_and_list_by_definition_return_at_most_limit_workflows(
    db: Database, listing: Listing
) -> None:
    await three_pending_research_workflows(db)
    async with db.session(read_only=True) as uow:
        everything = await listing(uow, None)
        assert len(everything) == 3
        for limit in (1, 2, 3, 4, MAX_LISTED):
            assert await listing(uow, limit) == everything[:limit]


@pytest.mark.parametrize("limit", [0, -1, True, "5", 2.0, MAX_LISTED + 1], ids=repr)
@pytest.mark.parametrize("listing", LISTINGS.values(), ids=list(LISTINGS.keys()))
async def test_list_by_state_and_list_by_definition_refuse_a_limit_that_is_not_a_positive_integer(
    db: Database, listing: Listing, limit: object
) -> None:
    # Rows to return, so that a limit let through would show as a result.
    await three_pending_research_workflows(db)
    async with db.session(read_only=True) as uow:
        with statements_run(db) as statements, pytest.raises(ValidationError, match="limit"):
            await listing(uow, limit)
    assert statements == []


# --- list(): filters ------------------------------------------------------------------


async def seven_workflows(db: Database) -> list[Workflow]:
    """Seven workflows one minute apart, mixed states and definitions; newest first."""
    states = [WorkflowState.PENDING, WorkflowState.RUNNING, WorkflowState.COMPLETED]
    workflows = [
        workflow_in(states[i % 3], created_at=at(minutes=i), definition_id="a" if i % 2 else "b")
        for i in range(7)
    ]
    await create_workflows(db, *workflows)
    return sorted(workflows, key=lambda w: w.created_at, reverse=True)


async def test_list_without_filters_returns_everything_newest_first(db: Database) -> None:
    expected = await seven_workflows(db)
    async with db.session(read_only=True) as uow:
        page = await uow.workflows.list()
    assert page.items == tuple(expected)
    assert page.next_cursor is None


async def test_list_filters_by_state(db: Database) -> None:
    everything = await seven_workflows(db)
    async with db.session(read_only=True) as uow:
        page = await uow.workflows.list(state=WorkflowState.RUNNING)
        by_text = await uow.workflows.list(state=cast(Any, "running"))
    expected = tuple(w for w in everything if w.state is WorkflowState.RUNNING)
    assert len(expected) == 2
    assert page.items == expected
    assert by_text.items == expected


async def test_list_filters_by_definition(db: Database) -> None:
    everything = await seven_workflows(db)
    async with db.session(read_only=True) as uow:
        page = await uow.workflows.list(definition_id="a")
    assert page.items == tuple(w for w in everything if w.definition_id == "a")
    assert len(page.items) == 3


async def test_list_created_after_and_created_before_are_exclusive(db: Database) -> None:
    everything = await seven_workflows(db)
    async with db.session(read_only=True) as uow:
        after = await uow.workflows.list(created_after=at(minutes=2))
        before = await uow.workflows.list(created_before=at(minutes=5))
        between = await uow.workflows.list(
            created_after=at(minutes=2), created_before=at(minutes=5)
        )
        # Any timezone: the same instants, written in UTC+05:30.
        offset = timezone(timedelta(hours=5, minutes=30))
        shifted = await uow.workflows.list(
            created_after=at(minutes=2).astimezone(offset),
            created_before=at(minutes=5).astimezone(offset),
        )
    assert after.items == tuple(w for w in everything if w.created_at > at(minutes=2))
    assert before.items == tuple(w for w in everything if w.created_at < at(minutes=5))
    assert [w.created_at for w in between.items] == [at(minutes=4), at(minutes=3)]
    assert shifted.items == between.items


async def test_list_combines_every_filter(db: Database) -> None:
    everything = await seven_workflows(db)
    async with db.session(read_only=True) as uow:
        page = await uow.workflows.list(
            state=WorkflowState.PENDING,
            definition_id="b",
            created_after=at(minutes=-1),
            created_before=at(minutes=6),
        )
    expected = tuple(
        w
        for w in everything
        if w.state is WorkflowState.PENDING
        and w.definition_id == "b"
        and w.created_at < at(minutes=6)
    )
    assert [w.created_at for w in expected] == [at(minutes=0)]
    assert page.items == expected


# --- list(): pagination ---------------------------------------------------------------


async def all_pages(uow: UnitOfWork, **filters: Any) -> list[tuple[Workflow, ...]]:
    pages = []
    cursor = None
    while True:
        page = await uow.workflows.list(cursor=cursor, **filters)
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def test_pagination_returns_every_workflow_exactly_once_newest_first(db: Database) -> None:
    expected = await seven_workflows(db)
    async with db.session(read_only=True) as uow:
        pages = await all_pages(uow, limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [w for page in pages for w in page] == expected


async def test_pagination_ends_without_an_empty_page_when_rows_fill_the_last_page(
    db: Database,
) -> None:
    workflows = [WorkflowFactory.build(created_at=at(minutes=i)) for i in range(6)]
    await create_workflows(db, *workflows)
    async with db.session(read_only=True) as uow:
        pages = await all_pages(uow, limit=3)
    assert [len(page) for page in pages] == [3, 3]


async def test_pagination_breaks_created_at_ties_by_id(db: Database) -> None:
    same_instant = [WorkflowFactory.build(created_at=at(minutes=1)) for _ in range(5)]
    older = WorkflowFactory.build(created_at=at(minutes=0))
    await create_workflows(db, *same_instant, older)
    async with db.session(read_only=True) as uow:
        pages = await all_pages(uow, limit=2)
    expected = [*sorted(same_instant, key=lambda w: w.id, reverse=True), older]
    assert [w.id for page in pages for w in page] == [w.id for w in expected]


async def test_pagination_applies_filters_on_every_page(db: Database) -> None:
    everything = await seven_workflows(db)
    async with db.session(read_only=True) as uow:
        pages = await all_pages(uow, limit=1, definition_id="b")
    assert [w for page in pages for w in page] == [w for w in everything if w.definition_id == "b"]
    assert len(pages) == 4


async def test_pagination_is_stable_when_workflows_are_created_between_pages(
    db: Database,
) -> None:
    expected = await seven_workflows(db)
    async with db.session(read_only=True) as uow:
        first = await uow.workflows.list(limit=3)
    assert first.items == tuple(expected[:3])
    # Newer than every row, and between two rows the first page already returned.
    await create_workflows(
        db,
        WorkflowFactory.build(),
        WorkflowFactory.build(created_at=at(minutes=5.5)),
        WorkflowFactory.build(created_at=at(minutes=6)),
    )
    seen = list(first.items)
    cursor = first.next_cursor
    async with db.session(read_only=True) as uow:
        while cursor is not None:
            page = await uow.workflows.list(limit=3, cursor=cursor)
            seen.extend(page.items)
            cursor = page.next_cursor
    assert seen == expected


async def test_limit_bounds_are_accepted(db: Database) -> None:
    expected = await seven_workflows(db)
    async with db.session(read_only=True) as uow:
        one = await uow.workflows.list(limit=1)
        most = await uow.workflows.list(limit=1000)
    assert one.items == (expected[0],)
    assert one.next_cursor is not None
    assert most.items == tuple(expected)


@pytest.mark.parametrize("limit", [0, -1, 1001, "5", True, 2.0], ids=repr)
async def test_list_rejects_a_bad_limit(db: Database, limit: object) -> None:
    async with db.session(read_only=True) as uow:
        with pytest.raises(ValidationError, match="limit"):
            await uow.workflows.list(limit=cast(Any, limit))


GARBAGE_CURSORS = {
    "not-ours": "x",
    "empty": "",
    "prefix-only": "c1.",
    "not-base64": "c1.!!!",
    "base64-of-non-json": encode("not json at all"),
    "json-object": encode('{"a": 1}'),
    "one-element": encode('["2024-01-01T00:00:00+00:00"]'),
    "naive-timestamp": encode(f'["2024-01-01T00:00:00", "{uuid.UUID(int=1).hex}"]'),
    "bad-uuid": encode('["2024-01-01T00:00:00+00:00", "zz"]'),
    "numbers": encode("[1, 2]"),
    "too-long": "c1." + "A" * 400,
}


@pytest.mark.parametrize("cursor", list(GARBAGE_CURSORS.values()), ids=list(GARBAGE_CURSORS))
async def test_list_rejects_a_garbage_cursor(db: Database, cursor: str) -> None:
    await seven_workflows(db)
    async with db.session(read_only=True) as uow:
        with pytest.raises(ValidationError, match="cursor"):
            await uow.workflows.list(cursor=cursor)


async def test_list_rejects_a_cursor_that_is_not_a_string(db: Database) -> None:
    async with db.session(read_only=True) as uow:
        with pytest.raises(ValidationError, match="cursor"):
            await uow.workflows.list(cursor=cast(Any, 12345))


async def test_list_rejects_a_valid_cursor_with_its_structure_tampered(db: Database) -> None:
    await seven_workflows(db)
    async with db.session(read_only=True) as uow:
        cursor = (await uow.workflows.list(limit=2)).next_cursor
        assert cursor is not None
        assert (await uow.workflows.list(limit=2, cursor=cursor)).items
        flipped = "B" if cursor[3] == "A" else "A"
        with pytest.raises(ValidationError, match="cursor"):
            await uow.workflows.list(limit=2, cursor=cursor[:3] + flipped + cursor[4:])
        with pytest.raises(ValidationError, match="cursor"):
            await uow.workflows.list(limit=2, cursor="c2" + cursor[2:])
        with pytest.raises(ValidationError, match="cursor"):
            await uow.workflows.list(limit=2, cursor=cursor[:-6])


async def test_every_single_character_change_of_a_cursor_is_rejected(db: Database) -> None:
    await create_workflows(
        db,
        *(
            WorkflowFactory.build(id=uuid.UUID(int=i << 64 | i), created_at=at(minutes=i))
            for i in (1, 2)
        ),
    )
    alphabet = string.ascii_letters + string.digits + "-_"
    async with db.session(read_only=True) as uow:
        cursor = (await uow.workflows.list(limit=1)).next_cursor
    assert cursor is not None
    accepted = []
    for position in range(3, len(cursor)):
        replacement = alphabet[(alphabet.index(cursor[position]) + 1) % len(alphabet)]
        tampered = cursor[:position] + replacement + cursor[position + 1 :]
        async with db.session(read_only=True) as uow:
            try:
                await uow.workflows.list(limit=1, cursor=tampered)
            except ValidationError:
                continue
        accepted.append(tampered)
    assert accepted == []


@pytest.mark.parametrize(
    "respell", CURSOR_RESPELLINGS.values(), ids=list(CURSOR_RESPELLINGS.keys())
)
async def test_list_refuses_another_base64_spelling_of_a_cursor_it_issued(
    db: Database, respell: Callable[[str], str]
) -> None:
    # Microseconds leave the cursor a partial last base64 group, whose last
    # character has unused bits and which could carry padding.
    workflows = [WorkflowFactory.build(created_at=at(seconds=s + 0.5)) for s in range(3)]
    await create_workflows(db, *workflows)
    async with db.session(read_only=True) as uow:
        cursor = (await uow.workflows.list(limit=1)).next_cursor
        assert cursor is not None
        respelled = respell(cursor)
        assert respelled != cursor
        assert cursor_bytes(respelled) == cursor_bytes(cursor)
        assert (await uow.workflows.list(limit=1, cursor=cursor)).items == (workflows[1],)
        with pytest.raises(ValidationError, match="cursor"):
            await uow.workflows.list(limit=1, cursor=respelled)


async def test_list_rejects_a_naive_created_after_or_before(db: Database) -> None:
    naive = datetime(2024, 1, 1)  # deliberately without a timezone
    async with db.session(read_only=True) as uow:
        with pytest.raises(ValidationError, match="created_after"):
            await uow.workflows.list(created_after=naive)
        with pytest.raises(ValidationError, match="created_before"):
            await uow.workflows.list(created_before=naive)


async def test_list_rejects_an_unknown_state(db: Database) -> None:
    async with db.session(read_only=True) as uow:
        with pytest.raises(ValidationError, match="state"):
            await uow.workflows.list(state=cast(Any, "bogus"))
        with pytest.raises(ValidationError, match="state"):
            await uow.workflows.list_by_state(cast(Any, "bogus"))


# --- read-only and finished units of work ---------------------------------------------

ReadOnlyWrite = Callable[[UnitOfWork, Workflow], Awaitable[object]]
READ_ONLY_WRITES: dict[str, ReadOnlyWrite] = {
    "create": lambda uow, wf: uow.workflows.create(WorkflowFactory.build()),
    "update_state": lambda uow, wf: uow.workflows.update_state(wf.id, WorkflowState.RUNNING),
    "update_output": lambda uow, wf: uow.workflows.update_output(wf.id, {"x": 1}),
    "delete": lambda uow, wf: uow.workflows.delete(wf.id),
}


@pytest.mark.parametrize("operation", list(READ_ONLY_WRITES))
async def test_read_only_unit_refuses_every_workflow_write(db: Database, operation: str) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    async with db.session(read_only=True) as uow:
        assert await uow.workflows.get(workflow.id) == workflow
        with pytest.raises(TransactionFailedError, match="read-only"):
            await READ_ONLY_WRITES[operation](uow, workflow)
        # The refusal happens before SQL: reads still work in the same unit.
        assert (await uow.workflows.list()).items == (workflow,)
    assert await raw_scalar(db, "SELECT count(*) FROM workflows") == 1
    assert await stored_workflow(db, workflow.id) == workflow


async def test_read_only_unit_reads_everything(db: Database) -> None:
    expected = await seven_workflows(db)
    async with db.session(read_only=True) as uow:
        assert await uow.workflows.get(expected[0].id) == expected[0]
        assert (await uow.workflows.list(limit=3)).items == tuple(expected[:3])
        assert await uow.workflows.list_by_definition("a") == [
            w for w in expected if w.definition_id == "a"
        ]
        assert len(await uow.workflows.list_by_state(WorkflowState.COMPLETED)) == 2


async def test_workflow_repository_used_after_its_unit_ended_raises(db: Database) -> None:
    workflow = WorkflowFactory.build()
    async with db.session() as uow:
        await uow.workflows.create(workflow)
    repository = uow.workflows
    with pytest.raises(TransactionFailedError):
        await repository.get(workflow.id)
    with pytest.raises(TransactionFailedError):
        await repository.list()
    with pytest.raises(TransactionFailedError):
        await repository.update_state(workflow.id, WorkflowState.RUNNING)
    with pytest.raises(TransactionFailedError):
        await repository.create(WorkflowFactory.build())
    assert await stored_workflow(db, workflow.id) == workflow


# --- corrupt rows ---------------------------------------------------------------------

# Values each schema accepts but the domain refuses, with the column the message must name.
SCHEMA_VALID_CORRUPTION = {
    "metadata-not-an-object": ("metadata", "[1, 2]"),
    "integer-beyond-64-bits": ("input", '{"n": 123456789012345678901234567890}'),
    "empty-definition-id": ("definition_id", ""),
}


@pytest.mark.parametrize(
    ("column", "value"), list(SCHEMA_VALID_CORRUPTION.values()), ids=list(SCHEMA_VALID_CORRUPTION)
)
async def test_reading_a_row_the_domain_refuses_raises_query_failed_naming_it(
    db: Database, column: str, value: str
) -> None:
    corrupt, healthy = WorkflowFactory.build(), WorkflowFactory.build()
    await create_workflows(db, corrupt, healthy)
    await raw_execute(
        db,
        f"UPDATE workflows SET {column} = {as_column(db, column)} WHERE id = :id",
        value=value,
        id=corrupt.id,
    )
    async with db.session(read_only=True) as uow:
        with pytest.raises(QueryFailedError) as by_get:
            await uow.workflows.get(corrupt.id)
        with pytest.raises(QueryFailedError) as by_list:
            await uow.workflows.list()
        with pytest.raises(QueryFailedError):
            await uow.workflows.list_by_state(corrupt.state)
    for message in (str(by_get.value), str(by_list.value)):
        assert "workflows" in message
        assert column in message
        assert str(corrupt.id) in message
        assert "123456789012345678901234567890" not in message, "messages never hold payloads"
    assert await stored_workflow(db, healthy.id) == healthy


@pytest.mark.parametrize("table", ["workflows", "step_executions"])
async def test_unknown_state_read_back_raises_query_failed_naming_table_column_and_id(
    memory_db: Database, table: str
) -> None:
    """SQLite only: its CHECK constraint is switched off for this one write."""
    async with memory_db.session() as uow:
        workflow = await persist_workflow(uow)
        step = await persist_step(uow, workflow)
    row_id = workflow.id if table == "workflows" else step.id
    async with memory_db.engine.begin() as connection:
        await connection.execute(text("PRAGMA ignore_check_constraints=ON"))
        await connection.execute(
            sql(f"UPDATE {table} SET state = 'paused' WHERE id = :id", id=row_id)
        )
        await connection.execute(text("PRAGMA ignore_check_constraints=OFF"))
    async with memory_db.session(read_only=True) as uow:
        with pytest.raises(QueryFailedError) as info:
            if table == "workflows":
                await uow.workflows.get(workflow.id)
            else:
                await uow.step_executions.get(step.id)
    assert f"{table}.state" in str(info.value)
    assert str(row_id) in str(info.value)


MALFORMED_JSON = {
    "truncated": "{bad",
    "nan-literal": '{"x": NaN}',
    "nul-character": '{"x": "a\\u0000b"}',
}


@pytest.mark.parametrize("value", list(MALFORMED_JSON.values()), ids=list(MALFORMED_JSON))
async def test_malformed_json_read_back_raises_query_failed_naming_table_column_and_id(
    memory_db: Database, value: str
) -> None:
    """SQLite only: jsonb on PostgreSQL refuses to store any of these."""
    async with memory_db.session() as uow:
        workflow = await persist_workflow(uow)
    async with memory_db.engine.begin() as connection:
        await connection.execute(
            sql("UPDATE workflows SET input = :value WHERE id = :id", value=value, id=workflow.id)
        )
    async with memory_db.session(read_only=True) as uow:
        with pytest.raises(QueryFailedError) as info:
            await uow.workflows.get(workflow.id)
    assert "workflows" in str(info.value)
    assert "input" in str(info.value)
    assert str(workflow.id) in str(info.value)


async def test_corrupt_timestamp_read_back_raises_query_failed_naming_table_column_and_id(
    memory_db: Database,
) -> None:
    async with memory_db.session() as uow:
        workflow = await persist_workflow(uow)
    async with memory_db.engine.begin() as connection:
        await connection.execute(
            sql("UPDATE workflows SET created_at = 'yesterday' WHERE id = :id", id=workflow.id)
        )
    async with memory_db.session(read_only=True) as uow:
        with pytest.raises(QueryFailedError) as info:
            await uow.workflows.get(workflow.id)
    assert "workflows" in str(info.value)
    assert "created_at" in str(info.value)
    assert str(workflow.id) in str(info.value)
