"""Realistic data at any revision, written and read back raw, to prove migrations keep it.

No repository of today knows the schema of an older revision, so rows are
written with raw SQL in the columns that revision has (``SCHEMAS``) and read
back the same way, as the driver returns them, so that any change of a value
or of its stored form shows. A new revision adds its entry to ``SCHEMAS``
(and to ``ADDED``, for the columns it adds to existing tables); a test fails
until it does.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import Integer, String, Text, TextClause, Uuid, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ecl_persistence import StepExecutionState, WorkflowState
from ecl_persistence.domain import MISSING, encode_json, new_uuid7
from ecl_persistence.migrations import alembic_config
from ecl_persistence.orm.types import Money, UTCDateTime

Schema = Mapping[str, tuple[str, ...]]
Rows = dict[str, list[dict[str, Any]]]
Dump = dict[str, list[tuple[Any, ...]]]

WORKFLOWS = 300
STEPS_PER_WORKFLOW = 3
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

_WORKFLOWS_0001 = (
    "id", "definition_id", "state", "input", "output", "error", "created_at", "updated_at",
    "completed_at", "metadata", "version",
)  # fmt: skip
_WORKERS_0002 = ("idempotency_key", "lease_owner", "lease_expires_at", "claim_count")
_STEPS = (
    "id", "workflow_id", "step_id", "attempt", "state", "input", "output", "error",
    "started_at", "completed_at", "duration_ms", "tokens_used", "metadata",
)  # fmt: skip
_ARTIFACTS = (
    "id", "workflow_id", "step_id", "name", "content_type", "path", "size_bytes",
    "created_at", "metadata",
)  # fmt: skip
_TRANSITIONS = ("id", "workflow_id", "from_state", "to_state", "at", "actor", "reason", "version")

_QUEUE_0004 = ("run_after", "priority")
_OPERATIONS_0005 = ("cancel_requested_at", "forked_from", "concurrency_key")
_LEDGER_0006 = (
    "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "model", "cost",
)  # fmt: skip

_0001: Schema = {"workflows": _WORKFLOWS_0001, "step_executions": _STEPS, "artifacts": _ARTIFACTS}
_0002: Schema = {**_0001, "workflows": _WORKFLOWS_0001 + _WORKERS_0002}
_0003: Schema = {**_0002, "workflow_transitions": _TRANSITIONS}
_0004: Schema = {**_0003, "workflows": _WORKFLOWS_0001 + _WORKERS_0002 + _QUEUE_0004}
_LIMITS = ("key", "max_running", "updated_at")
SCHEMAS: dict[str, Schema] = {
    "0001": _0001,
    "0002": _0002,
    "0003": _0003,
    "0004": _0004,
    "0005": {
        "workflows": _0004["workflows"] + _OPERATIONS_0005,
        "step_executions": (*_STEPS, "copied_from"),
        "artifacts": _ARTIFACTS,
        "workflow_transitions": _TRANSITIONS,
        "concurrency_limits": _LIMITS,
    },
}
_REFS_0006 = ("input_ref", "output_ref")
SCHEMAS["0006"] = {
    **SCHEMAS["0005"],
    "workflows": SCHEMAS["0005"]["workflows"] + _REFS_0006,
    "step_executions": SCHEMAS["0005"]["step_executions"] + _LEDGER_0006 + _REFS_0006,
}
"""The tables and columns of each revision, parents first (children are inserted after)."""

ADDED: dict[str, object] = {
    "idempotency_key": None,
    "lease_owner": None,
    "lease_expires_at": None,
    "claim_count": 0,
    "run_after": None,
    "priority": 0,
    "cancel_requested_at": None,
    "forked_from": None,
    "concurrency_key": None,
    "copied_from": None,
    **dict.fromkeys(_LEDGER_0006),
    "input_ref": None,
    "output_ref": None,
}
"""The value a column added to an existing table holds in the rows that were already there."""

_JSON = {"input", "output", "metadata"}
_TYPES: dict[str, Any] = {
    "id": Uuid(),
    "workflow_id": Uuid(),
    "created_at": UTCDateTime(),
    "updated_at": UTCDateTime(),
    "completed_at": UTCDateTime(),
    "started_at": UTCDateTime(),
    "lease_expires_at": UTCDateTime(),
    "run_after": UTCDateTime(),
    "cancel_requested_at": UTCDateTime(),
    "forked_from": Uuid(),
    "copied_from": Uuid(),
    "at": UTCDateTime(),
    "attempt": Integer(),
    "version": Integer(),
    "claim_count": Integer(),
    "priority": Integer(),
    "max_running": Integer(),
    "state": String(),
    "error": Text(),
    "cost": Money(),
}


def revisions() -> list[str]:
    """Every revision of the scripts, oldest first."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def earlier_revisions() -> list[str]:
    """Every revision but the head, oldest first: where a live database may still be."""
    return revisions()[:-1]


def _json(value: Any) -> str | None:
    return None if value is MISSING else encode_json(value)


def _workflow(n: int) -> dict[str, Any]:
    # Cancelled exists from revision 0005 on: rows of every revision use the others.
    states = [state for state in WorkflowState if state is not WorkflowState.CANCELLED]
    state = states[n % len(states)]
    created = T0 + timedelta(seconds=n, microseconds=n)
    finished = state.is_finished
    leased = state is WorkflowState.RUNNING and n % 3 == 0
    return {
        "id": new_uuid7(),
        "definition_id": f"definition-{n % 7}",
        "state": state.value,
        "input": _json({"topic": f"thème {n}", "depth": n, "ratio": n / 7}),
        "output": _json(None if n % 5 == 0 else {"pages": n} if finished else MISSING),
        "error": "timeout: 30 s" if state is WorkflowState.FAILED else None,
        "created_at": created,
        "updated_at": created + timedelta(minutes=1),
        "completed_at": created + timedelta(minutes=2) if finished else None,
        "metadata": _json({"tenant": "🌊", "big": 2**62}),
        # One per transition below: pending, then running, then finished.
        "version": {"pending": 1, "running": 2}.get(state.value, 3),
        "idempotency_key": f"request-{n}" if n % 2 else None,
        "lease_owner": f"worker-{n % 4}" if leased else None,
        "lease_expires_at": created + timedelta(minutes=5) if leased else None,
        "claim_count": 1 if leased else n % 3,
        # A retry due later, and priorities on both sides of the default.
        "run_after": created + timedelta(hours=1) if state is WorkflowState.PENDING else None,
        "priority": n % 5 - 2,
        "cancel_requested_at": None,
        "forked_from": None,
        "concurrency_key": f"tenant-{n % 3}" if n % 4 == 0 else None,
        # Inline: test_payload_store_migration.py migrates stored payloads.
        "input_ref": None,
        "output_ref": None,
    }


def _steps(workflow: dict[str, Any], n: int) -> list[dict[str, Any]]:
    rows = []
    for attempt in range(1, STEPS_PER_WORKFLOW + 1):
        succeeded = attempt == STEPS_PER_WORKFLOW
        started = workflow["created_at"] + timedelta(seconds=attempt)
        rows.append(
            {
                "id": new_uuid7(),
                "workflow_id": workflow["id"],
                "step_id": "search",
                "attempt": attempt,
                "state": (
                    StepExecutionState.SUCCEEDED if succeeded else StepExecutionState.FAILED
                ).value,
                "input": _json({"q": f"query {n}"}),
                "output": _json({"hits": [n, attempt]} if succeeded else MISSING),
                "error": None if succeeded else f"attempt {attempt} failed",
                "started_at": started,
                "completed_at": started + timedelta(milliseconds=250),
                "duration_ms": 250,
                "tokens_used": 1000 * attempt if n % 3 else None,
                "metadata": _json({}),
                "copied_from": None,
                **_usage(n, attempt),
                "input_ref": None,
                "output_ref": None,
            }
        )
    return rows


def _usage(n: int, attempt: int) -> dict[str, Any]:
    """Usage, model and cost on some attempts (and tiny and huge costs) in the ledger's columns."""
    if n % 3 == 0:
        return dict.fromkeys(_LEDGER_0006)
    cost = (Decimal("0.000001"), Decimal("999999999999.999999"), None, Decimal("1.25"))[n % 4]
    cached = 2**40 if n % 5 == 0 else 0
    return {
        "tokens_used": 1000 * attempt + cached,
        "input_tokens": 600 * attempt,
        "output_tokens": 300 * attempt,
        "cached_tokens": cached,
        "reasoning_tokens": 100 * attempt,
        "model": None if n % 7 == 0 else f"model-{n % 2}",
        "cost": cost,
    }


def _artifact(workflow: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        "id": new_uuid7(),
        "workflow_id": workflow["id"],
        "step_id": "search",
        "name": f"report-{n}.json",
        "content_type": "application/json; charset=utf-8",
        "path": f"artifacts/{workflow['id']}/report-{n}.json",
        "size_bytes": 2**40 + n,
        "created_at": workflow["created_at"] + timedelta(seconds=5),
        "metadata": _json({"sha256": uuid.uuid4().hex}),
    }


def _transitions(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    path = [None, "pending", "running", workflow["state"]][: workflow["version"] + 1]
    return [
        {
            "id": new_uuid7(),
            "workflow_id": workflow["id"],
            "from_state": before,
            "to_state": after,
            "at": workflow["created_at"] + timedelta(seconds=version),
            "actor": f"worker-{version}" if version > 1 else None,
            "reason": workflow["error"] if after == "failed" else None,
            "version": version,
        }
        for version, (before, after) in enumerate(itertools.pairwise(path), start=1)
    ]


def sample_rows() -> Rows:
    """Realistic rows of every shape, in the columns of the newest revision.

    Every workflow state, leases and idempotency keys, JSON ``null`` and SQL
    NULL, unicode, 64-bit numbers, failed attempts, and the transitions
    that lead to each workflow's state.
    """
    rows: Rows = {table: [] for table in SCHEMAS[revisions()[-1]]}
    for n in range(WORKFLOWS):
        workflow = _workflow(n)
        rows["workflows"].append(workflow)
        rows["step_executions"].extend(_steps(workflow, n))
        rows["artifacts"].append(_artifact(workflow, n))
        rows["workflow_transitions"].extend(_transitions(workflow))
    rows["concurrency_limits"] = [
        {"key": f"tenant-{n}", "max_running": n, "updated_at": T0} for n in range(3)
    ]
    return rows


def _insert(table: str, columns: tuple[str, ...], dialect: str) -> TextClause:
    values = [
        f"CAST(:{name} AS jsonb)" if dialect == "postgresql" and name in _JSON else f":{name}"
        for name in columns
    ]
    statement = text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(values)})")
    return statement.bindparams(
        *(bindparam(name, type_=_TYPES[name]) for name in columns if name in _TYPES)
    )


async def insert_rows(engine: AsyncEngine, revision: str, rows: Rows) -> None:
    """Write ``rows`` into the tables and columns that ``revision`` has, in one transaction."""
    async with engine.begin() as connection:
        for table, columns in SCHEMAS[revision].items():
            projected = [{name: row[name] for name in columns} for row in rows[table]]
            await connection.execute(_insert(table, columns, engine.dialect.name), projected)


async def dump(engine: AsyncEngine, schema: Schema) -> Dump:
    """Every row of every table of ``schema``, in its columns, raw as the driver returns it."""
    async with engine.connect() as connection:
        return {
            table: [
                tuple(row)
                for row in await connection.execute(
                    text(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {columns[0]}")
                )
            ]
            for table, columns in schema.items()
        }


async def added_values(engine: AsyncEngine, revision: str, head: str) -> dict[str, set[object]]:
    """The distinct values, in the rows stored at ``revision``, of each column added since."""
    found: dict[str, set[object]] = {}
    async with engine.connect() as connection:
        for table, columns in SCHEMAS[revision].items():
            for column in SCHEMAS[head][table]:
                if column not in columns:
                    result = await connection.execute(
                        text(f"SELECT DISTINCT {column} FROM {table}")
                    )
                    found[column] = {value for (value,) in result}
    return found


async def foreign_key_problems(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """What ``PRAGMA foreign_key_check`` reports on SQLite (nothing on PostgreSQL)."""
    if engine.dialect.name != "sqlite":
        return []
    async with engine.connect() as connection:
        result = await connection.exec_driver_sql("PRAGMA foreign_key_check")
        return [tuple(row) for row in result]
