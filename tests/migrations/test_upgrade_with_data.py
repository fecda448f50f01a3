"""Upgrading a database that holds data: every row survives, unchanged, on both backends.

The data is written at revision 0001 with raw SQL (no repository of today
knows that schema), then the database is upgraded to head and read back both
raw, column by column, and through the repositories.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, Text, TextClause, Uuid, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ecl_persistence import Database, StepExecutionState, WorkflowState
from ecl_persistence.domain import MISSING, decode_json, encode_json, new_uuid7
from ecl_persistence.migrations import current_revision, downgrade, head_revision, upgrade
from ecl_persistence.orm.types import UTCDateTime

WORKFLOWS = 300
STEPS_PER_WORKFLOW = 3
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

# The columns as revision 0001 created them.
COLUMNS = {
    "workflows": (
        "id, definition_id, state, input, output, error, created_at, updated_at, "
        "completed_at, metadata, version"
    ),
    "step_executions": (
        "id, workflow_id, step_id, attempt, state, input, output, error, started_at, "
        "completed_at, duration_ms, tokens_used, metadata"
    ),
    "artifacts": (
        "id, workflow_id, step_id, name, content_type, path, size_bytes, created_at, metadata"
    ),
}
JSON_COLUMNS = {"input", "output", "metadata"}
TYPES: dict[str, Any] = {
    "id": Uuid(),
    "workflow_id": Uuid(),
    "created_at": UTCDateTime(),
    "updated_at": UTCDateTime(),
    "completed_at": UTCDateTime(),
    "started_at": UTCDateTime(),
    "attempt": Integer(),
    "version": Integer(),
    "state": String(),
    "error": Text(),
}


def insert_statement(table: str, dialect: str) -> TextClause:
    names = [name.strip() for name in COLUMNS[table].split(",")]
    values = [
        f"CAST(:{name} AS jsonb)"
        if dialect == "postgresql" and name in JSON_COLUMNS
        else f":{name}"
        for name in names
    ]
    statement = text(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(values)})")
    return statement.bindparams(
        *(bindparam(name, type_=TYPES[name]) for name in names if name in TYPES)
    )


def json_text(value: Any) -> str | None:
    return None if value is MISSING else encode_json(value)


def sample_rows() -> dict[str, list[dict[str, Any]]]:
    """Realistic rows of every shape: all states, JSON null and SQL NULL, unicode, big numbers."""
    states = list(WorkflowState)
    rows: dict[str, list[dict[str, Any]]] = {
        "workflows": [],
        "step_executions": [],
        "artifacts": [],
    }
    for n in range(WORKFLOWS):
        workflow_id = new_uuid7()
        state = states[n % len(states)]
        created = T0 + timedelta(seconds=n, microseconds=n)
        finished = state.is_finished
        rows["workflows"].append(
            {
                "id": workflow_id,
                "definition_id": f"definition-{n % 7}",
                "state": state.value,
                "input": json_text({"topic": f"thème {n}", "depth": n, "ratio": n / 7}),
                "output": json_text(None if n % 5 == 0 else {"pages": n} if finished else MISSING),
                "error": "timeout: 30 s" if state is WorkflowState.FAILED else None,
                "created_at": created,
                "updated_at": created + timedelta(minutes=1),
                "completed_at": created + timedelta(minutes=2) if finished else None,
                "metadata": json_text({"tenant": "🌊", "big": 2**62}),
                "version": 1 + n % 4,
            }
        )
        for attempt in range(1, STEPS_PER_WORKFLOW + 1):
            succeeded = attempt == STEPS_PER_WORKFLOW
            rows["step_executions"].append(
                {
                    "id": new_uuid7(),
                    "workflow_id": workflow_id,
                    "step_id": "search",
                    "attempt": attempt,
                    "state": (
                        StepExecutionState.SUCCEEDED if succeeded else StepExecutionState.FAILED
                    ).value,
                    "input": json_text({"q": f"query {n}"}),
                    "output": json_text({"hits": [n, attempt]} if succeeded else MISSING),
                    "error": None if succeeded else f"attempt {attempt} failed",
                    "started_at": created + timedelta(seconds=attempt),
                    "completed_at": created + timedelta(seconds=attempt, milliseconds=250),
                    "duration_ms": 250,
                    "tokens_used": 1000 * attempt if n % 3 else None,
                    "metadata": json_text({}),
                }
            )
        rows["artifacts"].append(
            {
                "id": new_uuid7(),
                "workflow_id": workflow_id,
                "step_id": "search",
                "name": f"report-{n}.json",
                "content_type": "application/json; charset=utf-8",
                "path": f"artifacts/{workflow_id}/report-{n}.json",
                "size_bytes": 2**40 + n,
                "created_at": created + timedelta(seconds=5),
                "metadata": json_text({"sha256": uuid.uuid4().hex}),
            }
        )
    return rows


async def insert_rows(engine: AsyncEngine, rows: dict[str, list[dict[str, Any]]]) -> None:
    async with engine.begin() as connection:
        for table, table_rows in rows.items():
            await connection.execute(insert_statement(table, engine.dialect.name), table_rows)


async def snapshot(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, raw as the driver returns it, in the columns of 0001."""
    async with engine.connect() as connection:
        return {
            table: [
                tuple(row)
                for row in await connection.execute(
                    text(f"SELECT {columns} FROM {table} ORDER BY id")
                )
            ]
            for table, columns in COLUMNS.items()
        }


async def test_upgrade_keeps_every_row_and_downgrade_too(empty_database_url: str) -> None:
    rows = sample_rows()
    async with Database.from_url(empty_database_url) as db:
        await upgrade(db.engine, "0001")
        await insert_rows(db.engine, rows)
        before = await snapshot(db.engine)
        assert [len(before[table]) for table in COLUMNS] == [
            WORKFLOWS,
            WORKFLOWS * STEPS_PER_WORKFLOW,
            WORKFLOWS,
        ]

        await db.migrate()
        assert await current_revision(db.engine) == head_revision()
        assert await snapshot(db.engine) == before
        async with db.engine.connect() as connection:
            added = await connection.execute(
                text(
                    "SELECT count(*) FROM workflows WHERE idempotency_key IS NULL "
                    "AND lease_owner IS NULL AND lease_expires_at IS NULL AND claim_count = 0"
                )
            )
            assert added.scalar_one() == WORKFLOWS

        # The repositories read every upgraded row back as the value written.
        async with db.session(read_only=True) as uow:
            stored = {w.id: w for w in await uow.workflows.list_by_definition("definition-3")}
            steps = await uow.step_executions.get_for_workflow(rows["workflows"][3]["id"])
        expected = [row for row in rows["workflows"] if row["definition_id"] == "definition-3"]
        assert len(stored) == len(expected)
        for row in expected:
            workflow = stored[row["id"]]
            assert (workflow.state.value, workflow.version, workflow.created_at) == (
                row["state"],
                row["version"],
                row["created_at"],
            )
            assert workflow.input == decode_json(row["input"])
            assert workflow.claim_count == 0
        assert [step.attempt for step in steps] == [1, 2, 3]

        await downgrade(db.engine, "0001")
        assert await snapshot(db.engine) == before
