"""Damaged rows: every read path names the table, column and row, and never quotes the value.

SQLite keeps whatever a hand-made ``UPDATE`` writes: an id that is not a
UUID, text that is not UTF-8. PostgreSQL's types refuse those, so there the
damage is what its columns do accept and the package's rules do not: a
JSON number beyond 64 bits, a text longer than the package writes. Either
way the read raises :class:`StoredValueError` (a ``SerializationError`` and a
``QueryFailedError``), and the unit of work stays usable.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import attrs
import pytest
from tests.factories import (
    T0,
    leased_workflow,
    persist_artifact,
    persist_step,
    persist_workflow,
    raw_execute,
)
from tests.reliability._support import SQLITE_ONLY, sqlite_path

from ecl_persistence import (
    ArtifactId,
    Database,
    QueryFailedError,
    SerializationError,
    StepExecutionId,
    StoredValueError,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence._messages import first_line
from ecl_persistence.unit_of_work import UnitOfWork

SECRET = "SECRET-api-key-4242"
DEFINITION = "damaged"
# Too long for the package's rules, short enough for any column that holds it on PostgreSQL.
LONG_TEXT = SECRET + "x" * 70_000
HUGE_NUMBER = "99999999999999999999"


@attrs.frozen
class Rows:
    """What the test damaged: one workflow with a step, an artifact and its creation transition."""

    workflow_id: WorkflowId
    step_id: StepExecutionId
    artifact_id: ArtifactId


async def _seed(db: Database, *, leased: bool) -> Rows:
    async with db.session() as uow:
        if leased:
            workflow = await uow.workflows.create(
                leased_workflow("gone", T0, definition_id=DEFINITION)
            )
        else:
            workflow = await persist_workflow(uow, definition_id=DEFINITION)
        step = await persist_step(uow, workflow)
        artifact = await persist_artifact(uow, workflow)
    return Rows(workflow.id, step.id, artifact.id)


def _sqlite_update(db: Database, statement: str, *params: object) -> None:
    # A plain sqlite3 connection: foreign keys are off, nothing checks the values.
    connection = sqlite3.connect(sqlite_path(db.config.url))
    try:
        connection.execute(statement, params)
        connection.commit()
    finally:
        connection.close()


async def _damage(db: Database, table: str, column: str, row_id: uuid.UUID) -> None:
    """Write a value into ``table.column`` of ``row_id`` that no read may return."""
    if db.dialect == "sqlite":
        # Not a UUID in an id column, not JSON in a JSON column.
        _sqlite_update(db, f"UPDATE {table} SET {column} = ? WHERE id = ?", SECRET, row_id.hex)
        return
    document = f'{{"token": "{SECRET}", "n": {HUGE_NUMBER}}}'
    await raw_execute(
        db,
        f"UPDATE {table} SET {column} = CAST(:value AS jsonb) WHERE id = :id",
        value=document,
        id=row_id,
    )


Read = Callable[[UnitOfWork, Rows], Awaitable[object]]


@attrs.frozen
class Case:
    """A read path, the row it meets damaged, and the column damaged on each backend.

    The error names the damaged row by its id, unless that id is what is damaged.
    """

    read: Read
    table: str
    sqlite_column: str
    postgres_column: str
    leased: bool = False

    def column(self, dialect: str) -> str:
        return self.sqlite_column if dialect == "sqlite" else self.postgres_column

    def damaged_row(self, rows: Rows) -> uuid.UUID:
        return {
            "workflows": rows.workflow_id,
            "step_executions": rows.step_id,
            "artifacts": rows.artifact_id,
        }[self.table]


CASES: dict[str, Case] = {
    "workflows.list": Case(lambda uow, rows: uow.workflows.list(), "workflows", "id", "input"),
    "workflows.list_by_definition": Case(
        lambda uow, rows: uow.workflows.list_by_definition(DEFINITION), "workflows", "id", "input"
    ),
    "workflows.list_by_state": Case(
        lambda uow, rows: uow.workflows.list_by_state(WorkflowState.PENDING),
        "workflows",
        "id",
        "output",
    ),
    "workflows.claim": Case(lambda uow, rows: uow.workflows.claim("w"), "workflows", "id", "input"),
    "workflows.list_stale": Case(
        lambda uow, rows: uow.workflows.list_stale(now=T0 + timedelta(hours=1)),
        "workflows",
        "id",
        "metadata",
        leased=True,
    ),
    "workflows.get": Case(
        lambda uow, rows: uow.workflows.get(rows.workflow_id), "workflows", "input", "input"
    ),
    "step_executions.get": Case(
        lambda uow, rows: uow.step_executions.get(rows.step_id),
        "step_executions",
        "workflow_id",
        "input",
    ),
    "step_executions.get_for_workflow": Case(
        lambda uow, rows: uow.step_executions.get_for_workflow(rows.workflow_id),
        "step_executions",
        "id",
        "input",
    ),
    "step_executions.latest_attempts": Case(
        lambda uow, rows: uow.step_executions.latest_attempts(rows.workflow_id),
        "step_executions",
        "id",
        "metadata",
    ),
    "workflows.load": Case(
        lambda uow, rows: uow.workflows.load(rows.workflow_id), "artifacts", "id", "metadata"
    ),
    "artifacts.list_for_workflow": Case(
        lambda uow, rows: uow.artifacts.list_for_workflow(rows.workflow_id),
        "artifacts",
        "id",
        "metadata",
    ),
    "artifacts.get": Case(
        lambda uow, rows: uow.artifacts.get(rows.artifact_id),
        "artifacts",
        "workflow_id",
        "metadata",
    ),
}


def _check(error: StoredValueError, *fragments: str) -> None:
    message = str(error)
    for fragment in fragments:
        assert fragment in message, message
    assert SECRET not in message
    assert HUGE_NUMBER not in message
    assert SECRET not in str(error.__cause__)
    assert isinstance(error, SerializationError)
    assert isinstance(error, QueryFailedError)


@pytest.mark.parametrize("name", list(CASES))
async def test_every_read_of_a_damaged_row_names_table_column_and_row_never_the_value(
    db: Database, name: str
) -> None:
    case = CASES[name]
    rows = await _seed(db, leased=case.leased)
    column = case.column(db.dialect)
    damaged = case.damaged_row(rows)
    await _damage(db, case.table, column, damaged)
    async with db.session() as uow:
        with pytest.raises(StoredValueError) as caught:
            await case.read(uow, rows)
        # The statement ran: the unit of work is still usable.
        assert await uow.workflows.count_by_state() is not None
    row = "a row" if column == "id" else str(damaged)
    _check(caught.value, f"{case.table}.{column} of {row}")


async def test_a_damaged_transition_names_its_table_column_and_row(db: Database) -> None:
    rows = await _seed(db, leased=False)
    # The table is append-only: the damaged row is a second one, inserted by hand.
    damaged_id = uuid.uuid4()
    values = {"wid": rows.workflow_id, "at": T0, "version": 2}
    if db.dialect == "sqlite":
        _sqlite_update(
            db,
            "INSERT INTO workflow_transitions (id, workflow_id, from_state, to_state, at, "
            "version) VALUES (?, ?, 'pending', 'running', '2024-01-01 00:00:00.000000', 2)",
            SECRET,
            rows.workflow_id.hex,
        )
        where: tuple[str, ...] = ("workflow_transitions.id of a row",)
    else:
        await raw_execute(
            db,
            "INSERT INTO workflow_transitions (id, workflow_id, from_state, to_state, at, "
            "reason, version) VALUES (:id, :wid, 'pending', 'running', :at, :reason, :version)",
            id=damaged_id,
            reason=LONG_TEXT,
            **values,
        )
        where = (f"workflow_transitions row {damaged_id}", "reason")
    async with db.session(read_only=True) as uow:
        with pytest.raises(StoredValueError) as caught:
            await uow.workflows.history(rows.workflow_id)
    _check(caught.value, *where)


@SQLITE_ONLY
async def test_text_that_is_not_utf8_is_never_quoted_in_an_error(db: Database) -> None:
    rows = await _seed(db, leased=False)
    damaged = SECRET.encode() + b"\xff-tail"
    _sqlite_update(db, "UPDATE workflows SET error = ? WHERE id = ?", damaged, rows.workflow_id.hex)
    _sqlite_update(
        db, "UPDATE workflows SET error = CAST(error AS TEXT) WHERE id = ?", rows.workflow_id.hex
    )
    reads: tuple[Callable[[UnitOfWork], Awaitable[object]], ...] = (
        lambda uow: uow.workflows.get(rows.workflow_id),
        lambda uow: uow.workflows.list(),
        lambda uow: uow.workflows.list_by_definition(DEFINITION),
        lambda uow: uow.workflows.load(rows.workflow_id),
    )
    for read in reads:
        async with db.session(read_only=True) as uow:
            with pytest.raises(StoredValueError) as caught:
                await read(uow)
        message = str(caught.value)
        assert SECRET not in message
        assert "column error" in message
        assert "not valid UTF-8" in message
        # The printed cause is value-free as well.
        assert SECRET not in str(caught.value.__cause__)


def test_first_line_cuts_the_text_sqlite_quotes_out_of_a_decoding_error() -> None:
    error = sqlite3.OperationalError(
        f"Could not decode to UTF-8 column 'error' with text '{SECRET}\ufffd-tail'"
    )
    line = first_line(error)
    assert SECRET not in line
    assert line.startswith("Could not decode to UTF-8 column 'error' with text")
