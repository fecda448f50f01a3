"""The raw drivers: aiosqlite and asyncpg with hand-written SQL, the practical limit.

Each does the least the unit-of-work guarantee needs: ``BEGIN`` ... ``COMMIT``
around every write (``BEGIN IMMEDIATE`` on SQLite, as ecl-persistence does),
the bare statement for a single-statement read, and statements prepared once
(asyncpg's statement cache, sqlite3's). Rows become the same domain objects
every contender returns (see :mod:`benchmarks.build`), and listing pages carry
the same opaque cursors.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import asyncpg
from sqlalchemy.engine import make_url
from typing_extensions import override

from benchmarks import build
from benchmarks.contenders.base import Contender, Target
from benchmarks.contenders.ecl import PAGE_SIZE
from benchmarks.data import Completion
from ecl_persistence import (
    ExecutionStats,
    StepExecution,
    StepExecutionState,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import MISSING, JsonValue, Missing, Page, WorkflowId
from ecl_persistence.repositories._cursor import decode_cursor, encode_cursor

__all__ = ["RawPostgres", "RawSqlite", "raw_driver"]

_WORKFLOW_COLUMNS = (
    "id, definition_id, state, input, output, error, created_at, updated_at, "
    "completed_at, metadata, version, idempotency_key, lease_owner, lease_expires_at, "
    "claim_count, run_after, priority"
)
_STEP_COLUMNS = (
    "id, workflow_id, step_id, attempt, state, input, output, error, started_at, "
    "completed_at, duration_ms, tokens_used, metadata"
)
_STATS_COLUMNS = (
    "count(*), "
    "coalesce(sum(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END), 0), "
    "coalesce(sum(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0), "
    "coalesce(sum(duration_ms), 0), coalesce(sum(tokens_used), 0)"
)
_WORKFLOW_STATES = WorkflowState._value2member_map_
_STEP_STATES = StepExecutionState._value2member_map_
_SUCCEEDED = StepExecutionState.SUCCEEDED.value


def raw_driver(dialect: str) -> Contender:
    """The raw contender of ``dialect``."""
    return RawPostgres() if dialect == "postgresql" else RawSqlite()


def _dumps(value: JsonValue) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _dumps_or_null(value: JsonValue | Missing) -> str | None:
    return None if value is MISSING else _dumps(value)


def _loads_or_missing(text: str | None) -> JsonValue | Missing:
    return MISSING if text is None else json.loads(text)


def _page(items: list[Workflow]) -> Page[Workflow]:
    if len(items) > PAGE_SIZE:
        del items[PAGE_SIZE:]
        return build.page(items, encode_cursor(items[-1].created_at, items[-1].id))
    return build.page(items, None)


# --- SQLite ----------------------------------------------------------------------------

_SQ_INSERT_STEP = (
    f"INSERT INTO step_executions ({_STEP_COLUMNS}) "  # noqa: S608 - constants only
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQ_COMPLETE = (
    "UPDATE step_executions SET state = ?, output = ?, error = NULL, completed_at = ?, "  # noqa: S608
    "duration_ms = ?, tokens_used = coalesce(?, tokens_used) "
    f"WHERE id = ? AND state IN ('pending', 'running') RETURNING {_STEP_COLUMNS}"
)
_SQ_GET = f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE id = ?"  # noqa: S608
_SQ_HISTORY = (
    f"SELECT {_STEP_COLUMNS} FROM step_executions WHERE workflow_id = ? "  # noqa: S608
    "ORDER BY started_at, attempt, id"
)
_SQ_STATS = f"SELECT {_STATS_COLUMNS} FROM step_executions WHERE workflow_id = ?"  # noqa: S608
_SQ_LIST = (
    f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE state = ? "  # noqa: S608
    "ORDER BY created_at DESC, id DESC LIMIT ?"
)
_SQ_LIST_AFTER = (
    f"SELECT {_WORKFLOW_COLUMNS} FROM workflows "  # noqa: S608
    "WHERE state = ? AND (created_at, id) < (?, ?) ORDER BY created_at DESC, id DESC LIMIT ?"
)


def _sq_time(value: datetime) -> str:
    # SQLAlchemy's format for SQLite: naive UTC, always with microseconds.
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _sq_time_or_null(value: datetime | None) -> str | None:
    return None if value is None else _sq_time(value)


def _sq_read_time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _sq_read_time_or_none(text: str | None) -> datetime | None:
    return None if text is None else _sq_read_time(text)


def _sq_step_row(execution: StepExecution) -> tuple[Any, ...]:
    return (
        execution.id.hex,
        execution.workflow_id.hex,
        execution.step_id,
        execution.attempt,
        execution.state.value,
        _dumps(execution.input),
        _dumps_or_null(execution.output),
        execution.error,
        _sq_time(execution.started_at),
        _sq_time_or_null(execution.completed_at),
        execution.duration_ms,
        execution.tokens_used,
        _dumps(execution.metadata),
    )


def _sq_workflow(row: Sequence[Any]) -> Workflow:
    return build.workflow(
        uuid.UUID(row[0]),
        row[1],
        _WORKFLOW_STATES[row[2]],
        json.loads(row[3]),
        _loads_or_missing(row[4]),
        row[5],
        _sq_read_time(row[6]),
        _sq_read_time(row[7]),
        _sq_read_time_or_none(row[8]),
        json.loads(row[9]),
        row[10],
        row[11],
        row[12],
        _sq_read_time_or_none(row[13]),
        row[14],
        _sq_read_time_or_none(row[15]),
        row[16],
    )


def _sq_step(row: Sequence[Any]) -> StepExecution:
    return build.step_execution(
        uuid.UUID(row[0]),
        uuid.UUID(row[1]),
        row[2],
        row[3],
        _STEP_STATES[row[4]],
        json.loads(row[5]),
        _loads_or_missing(row[6]),
        row[7],
        _sq_read_time(row[8]),
        _sq_read_time_or_none(row[9]),
        row[10],
        row[11],
        json.loads(row[12]),
    )


class RawSqlite(Contender):
    """aiosqlite on one connection, set up as ecl-persistence sets up its own."""

    name = "raw driver"

    def __init__(self) -> None:
        self._connection: aiosqlite.Connection | None = None

    @property
    def _db(self) -> aiosqlite.Connection:
        assert self._connection is not None, "open() first"
        return self._connection

    @override
    async def open(self, target: Target) -> None:
        path = make_url(target.url).database
        assert path, "the benchmark needs a SQLite file"
        # isolation_level=None: transactions begin where this code says so.
        self._connection = await aiosqlite.connect(path, isolation_level=None, timeout=30)
        for pragma in ("foreign_keys=ON", "busy_timeout=30000", "synchronous=NORMAL"):
            await self._db.execute(f"PRAGMA {pragma}")

    @override
    async def close(self) -> None:
        await self._db.close()

    async def _write(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            rows = list(await self._db.execute_fetchall(sql, parameters))
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        await self._db.execute("COMMIT")
        return rows

    @override
    async def create_step(self, execution: StepExecution) -> None:
        await self._write(_SQ_INSERT_STEP, _sq_step_row(execution))

    @override
    async def complete_step(self, completion: Completion) -> StepExecution:
        now = _sq_time(datetime.now(UTC))
        parameters = (
            _SUCCEEDED,
            _dumps(completion.output),
            now,
            completion.duration_ms,
            completion.tokens_used,
            completion.id.hex,
        )
        rows = await self._write(_SQ_COMPLETE, parameters)
        if not rows:
            raise LookupError(f"no running step execution {completion.id}")
        return _sq_step(rows[0])

    @override
    async def create_many(self, executions: Sequence[StepExecution]) -> None:
        rows = [_sq_step_row(execution) for execution in executions]
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            await self._db.executemany(_SQ_INSERT_STEP, rows)
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        await self._db.execute("COMMIT")

    @override
    async def get_workflow(self, id: WorkflowId) -> Workflow | None:
        rows = list(await self._db.execute_fetchall(_SQ_GET, (id.hex,)))
        return _sq_workflow(rows[0]) if rows else None

    @override
    async def get_history(self, workflow_id: WorkflowId) -> list[StepExecution]:
        rows = await self._db.execute_fetchall(_SQ_HISTORY, (workflow_id.hex,))
        return [_sq_step(row) for row in rows]

    @override
    async def get_stats(self, workflow_id: WorkflowId) -> ExecutionStats:
        rows = list(await self._db.execute_fetchall(_SQ_STATS, (workflow_id.hex,)))
        return build.execution_stats(*rows[0])

    @override
    async def list_page(self, state: WorkflowState, cursor: str | None) -> Page[Workflow]:
        if cursor is None:
            rows = await self._db.execute_fetchall(_SQ_LIST, (state.value, PAGE_SIZE + 1))
        else:
            at, last_id = decode_cursor(cursor)
            parameters = (state.value, _sq_time(at.astimezone(UTC)), last_id.hex, PAGE_SIZE + 1)
            rows = await self._db.execute_fetchall(_SQ_LIST_AFTER, parameters)
        return _page([_sq_workflow(row) for row in rows])


# --- PostgreSQL ------------------------------------------------------------------------

_PG_INSERT_STEP = (
    f"INSERT INTO step_executions ({_STEP_COLUMNS}) "  # noqa: S608 - constants only
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
)
_PG_COMPLETE = (
    "UPDATE step_executions SET state = $1, output = $2, error = NULL, completed_at = $3, "  # noqa: S608
    "duration_ms = $4, tokens_used = coalesce($5, tokens_used) "
    f"WHERE id = $6 AND state IN ('pending', 'running') RETURNING {_STEP_COLUMNS}"
)
_PG_GET = f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE id = $1"  # noqa: S608
_PG_HISTORY = (
    f"SELECT {_STEP_COLUMNS} FROM step_executions WHERE workflow_id = $1 "  # noqa: S608
    "ORDER BY started_at, attempt, id"
)
_PG_STATS = f"SELECT {_STATS_COLUMNS} FROM step_executions WHERE workflow_id = $1"  # noqa: S608
_PG_LIST = (
    f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE state = $1 "  # noqa: S608
    "ORDER BY created_at DESC, id DESC LIMIT $2"
)
_PG_LIST_AFTER = (
    f"SELECT {_WORKFLOW_COLUMNS} FROM workflows "  # noqa: S608
    "WHERE state = $1 AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT $4"
)


def _pg_step_row(execution: StepExecution) -> tuple[Any, ...]:
    return (
        execution.id,
        execution.workflow_id,
        execution.step_id,
        execution.attempt,
        execution.state.value,
        _dumps(execution.input),
        _dumps_or_null(execution.output),
        execution.error,
        execution.started_at,
        execution.completed_at,
        execution.duration_ms,
        execution.tokens_used,
        _dumps(execution.metadata),
    )


def _pg_workflow(row: Sequence[Any]) -> Workflow:
    return build.workflow(
        row[0],
        row[1],
        _WORKFLOW_STATES[row[2]],
        json.loads(row[3]),
        _loads_or_missing(row[4]),
        row[5],
        row[6],
        row[7],
        row[8],
        json.loads(row[9]),
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
        row[15],
        row[16],
    )


def _pg_step(row: Sequence[Any]) -> StepExecution:
    return build.step_execution(
        row[0],
        row[1],
        row[2],
        row[3],
        _STEP_STATES[row[4]],
        json.loads(row[5]),
        _loads_or_missing(row[6]),
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        json.loads(row[12]),
    )


async def _reset(connection: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query: nothing here sets session state.

    asyncpg's default sends ``RESET ALL`` and more on every release, a round
    trip that SQLAlchemy's pool does not make either; an open transaction is
    still rolled back.
    """
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class RawPostgres(Contender):
    """asyncpg with a pool of as many connections as ecl-persistence's default."""

    name = "raw driver"

    def __init__(self) -> None:
        self._pool: asyncpg.Pool | None = None

    @property
    def _db(self) -> asyncpg.Pool:
        assert self._pool is not None, "open() first"
        return self._pool

    @override
    async def open(self, target: Target) -> None:
        dsn = make_url(target.url).set(drivername="postgresql")
        self._pool = await asyncpg.create_pool(
            dsn.render_as_string(hide_password=False), min_size=5, max_size=5, reset=_reset
        )

    @override
    async def close(self) -> None:
        await self._db.close()

    @override
    async def create_step(self, execution: StepExecution) -> None:
        async with self._db.acquire() as connection, connection.transaction():
            await connection.execute(_PG_INSERT_STEP, *_pg_step_row(execution))

    @override
    async def complete_step(self, completion: Completion) -> StepExecution:
        async with self._db.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                _PG_COMPLETE,
                _SUCCEEDED,
                _dumps(completion.output),
                datetime.now(UTC),
                completion.duration_ms,
                completion.tokens_used,
                completion.id,
            )
        if row is None:
            raise LookupError(f"no running step execution {completion.id}")
        return _pg_step(row)

    @override
    async def create_many(self, executions: Sequence[StepExecution]) -> None:
        rows = [_pg_step_row(execution) for execution in executions]
        async with self._db.acquire() as connection, connection.transaction():
            await connection.executemany(_PG_INSERT_STEP, rows)

    @override
    async def get_workflow(self, id: WorkflowId) -> Workflow | None:
        row = await self._db.fetchrow(_PG_GET, id)
        return None if row is None else _pg_workflow(row)

    @override
    async def get_history(self, workflow_id: WorkflowId) -> list[StepExecution]:
        rows = await self._db.fetch(_PG_HISTORY, workflow_id)
        return [_pg_step(row) for row in rows]

    @override
    async def get_stats(self, workflow_id: WorkflowId) -> ExecutionStats:
        row = await self._db.fetchrow(_PG_STATS, workflow_id)
        return build.execution_stats(*row)

    @override
    async def list_page(self, state: WorkflowState, cursor: str | None) -> Page[Workflow]:
        if cursor is None:
            rows = await self._db.fetch(_PG_LIST, state.value, PAGE_SIZE + 1)
        else:
            at, last_id = decode_cursor(cursor)
            rows = await self._db.fetch(_PG_LIST_AFTER, state.value, at, last_id, PAGE_SIZE + 1)
        return _page([_pg_workflow(row) for row in rows])
