"""Filters, ids and cursors crafted as SQL: refused, or stored and matched as plain data.

No method takes a column name or a sort order from the caller, so no value
can ever become SQL text: every value is a bound parameter or is refused.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import inspect
from tests.factories import persist_step, persist_workflow
from tests.reliability._support import TABLES, row_counts

from ecl_persistence import Database, StepExecution, ValidationError, Workflow, WorkflowState
from ecl_persistence.domain import new_uuid7
from ecl_persistence.repositories._cursor import _PREFIX, _digest, encode_cursor

INJECTIONS = [
    "created_at; DROP TABLE workflows",
    "x'; DROP TABLE workflows; --",
    "' OR '1'='1",
    '" OR ""="',
    "1); DELETE FROM step_executions; --",
    "\\'; DROP TABLE artifacts; --",
    "research' UNION SELECT * FROM workflows --",
    "%",
    "_",
    "research%",
    "\uff07; DROP TABLE workflows; --",  # fullwidth apostrophe
    "\u02bc OR 1=1 --",  # modifier letter apostrophe
    "\u202e; DROP TABLE workflows",  # right-to-left override
    "😀'; SELECT pg_sleep(10); --",
    "Robert'); DROP TABLE workflows;--",
]


def _forged_cursor(created_at: str, id_hex: str) -> str:
    """A cursor with a valid checksum around chosen fields: the checksum is no secret."""
    body = json.dumps([created_at, id_hex], separators=(",", ":")).encode()
    return _PREFIX + base64.urlsafe_b64encode(_digest(body) + body).decode().rstrip("=")


async def _tables_intact(db: Database, expected_workflows: int) -> None:
    async with db.engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert set(TABLES) <= names
    assert (await row_counts(db))["workflows"] == expected_workflows


@pytest.mark.parametrize("value", INJECTIONS)
async def test_text_values_crafted_as_sql_are_stored_and_matched_as_data(
    db: Database, value: str
) -> None:
    async with db.session() as uow:
        plain = await persist_workflow(uow)  # definition "research"
        crafted = await uow.workflows.create(Workflow.new(value, {"q": value}))
        step = await uow.step_executions.create(StepExecution.start(crafted.id, value, value))
    async with db.session(read_only=True) as uow:
        assert await uow.workflows.list_by_definition(value) == [crafted]
        assert (await uow.workflows.list(definition_id=value)).items == (crafted,)
        assert await uow.step_executions.get_for_step(crafted.id, value) == [step]
        assert await uow.artifacts.list_for_step(crafted.id, value) == []
        # A LIKE wildcard or a quote matches nothing but itself.
        assert await uow.workflows.list_by_definition("research") == [plain]
        got = await uow.workflows.get(crafted.id)
    assert got is not None
    assert (got.definition_id, got.input) == (value, {"q": value})
    await _tables_intact(db, expected_workflows=2)


@pytest.mark.parametrize("value", INJECTIONS)
async def test_state_filters_crafted_as_sql_are_refused(db: Database, value: str) -> None:
    async with db.session() as uow:
        workflow = await persist_workflow(uow)
        with pytest.raises(ValidationError):
            await uow.workflows.list(state=value)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await uow.workflows.list_by_state(value)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await uow.workflows.update_state(workflow.id, value)  # type: ignore[arg-type]
    await _tables_intact(db, expected_workflows=1)


CRAFTED_CURSORS = [
    *INJECTIONS,
    _PREFIX + "' OR 1=1 --",
    _PREFIX + base64.urlsafe_b64encode(b"created_at; DROP TABLE workflows").decode(),
    _forged_cursor("2024-01-01T00:00:00+00:00'; DROP TABLE workflows; --", new_uuid7().hex),
    _forged_cursor("2024-01-01T00:00:00+00:00", "'; DROP TABLE workflows; --"),
    _forged_cursor("2024-01-01T00:00:00", new_uuid7().hex),  # naive
    encode_cursor(datetime(2024, 1, 1, tzinfo=UTC), new_uuid7())[:-2] + "AA",  # damaged
]


@pytest.mark.parametrize("cursor", CRAFTED_CURSORS)
async def test_crafted_cursors_are_refused(db: Database, cursor: str) -> None:
    async with db.session() as uow:
        await persist_workflow(uow)
        with pytest.raises(ValidationError, match="cursor"):
            await uow.workflows.list(cursor=cursor)
    await _tables_intact(db, expected_workflows=1)


@pytest.mark.parametrize(
    "arguments",
    [
        {"limit": "10; DROP TABLE workflows"},
        {"limit": -1},
        {"limit": 0},
        {"limit": 10**9},
        {"limit": 2.5},
        {"limit": True},
        {"created_after": "2024-01-01'; DROP TABLE workflows; --"},
        {"created_before": datetime(2024, 1, 1)},  # naive
        {"definition_id": "x\x00'; DROP TABLE workflows"},
        {"definition_id": 42},
    ],
    ids=repr,
)
async def test_other_listing_arguments_of_the_wrong_kind_are_refused(
    db: Database, arguments: dict[str, Any]
) -> None:
    async with db.session() as uow:
        await persist_workflow(uow)
        with pytest.raises(ValidationError):
            await uow.workflows.list(**arguments)
    await _tables_intact(db, expected_workflows=1)


async def test_listing_still_pages_correctly_after_hostile_values(db: Database) -> None:
    async with db.session() as uow:
        workflows = [await persist_workflow(uow, definition_id=value) for value in INJECTIONS]
        await persist_step(uow, workflows[0])
    seen: list[Workflow] = []
    cursor = None
    async with db.session(read_only=True) as uow:
        while True:
            page = await uow.workflows.list(limit=4, cursor=cursor, state=WorkflowState.PENDING)
            seen.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert sorted(w.id for w in seen) == sorted(w.id for w in workflows)
    await _tables_intact(db, expected_workflows=len(INJECTIONS))
