"""Workload (g) on the raw drivers: ecl's worker protocol, hand-written, the practical limit.

Per workflow, exactly what ecl-persistence guarantees through
``Worker.claim`` and ``WorkflowRun``, in the fewest transactions that keep
it (see ``docs/workers.md``):

1. create and claim, in one transaction (``Worker.start``): the workflow
   row (pending) and its audit row, then lock the row if claimable, lease
   it (``claim_count`` bumped) and an audit row for the move (a new
   workflow has no resume point to read);
3. per step, start: the running attempt row, numbered from the resume point,
   inserted only while the lease is current (``INSERT ... SELECT ... FROM
   workflows WHERE lease``);
4. per step, end: the attempt succeeded with its output, fenced the same way;
5. complete: output and state in one fenced UPDATE, with its audit row.

A fenced write that finds no row raises, as ``LeaseLostError`` would. aiosqlite
gets a pool of connections (``BEGIN IMMEDIATE`` writers, ``busy_timeout``),
asyncpg a pool; statements are prepared once by each driver.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite
import asyncpg
from sqlalchemy.engine import make_url

from benchmarks.contenders.flows import FlowContender, FlowTarget, step_output
from ecl_persistence.domain import JsonValue

__all__ = ["RawFlows"]

_LEASE = timedelta(seconds=30)
_WORKER = "bench-raw"

_INSERT_WORKFLOW = (
    "INSERT INTO workflows (id, definition_id, state, input, output, error, created_at, "
    "updated_at, completed_at, metadata, version, idempotency_key, lease_owner, "
    "lease_expires_at, claim_count, run_after, priority) "
    "VALUES (?, ?, 'pending', ?, NULL, NULL, ?, ?, NULL, '{}', 1, NULL, NULL, NULL, 0, NULL, 0)"
)
_INSERT_TRANSITION = (
    "INSERT INTO workflow_transitions (id, workflow_id, from_state, to_state, at, actor, "
    "reason, version) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)"
)
_PICK = (
    "SELECT state, lease_owner FROM workflows WHERE id = ? AND state IN ('pending', 'running') "
    "AND (state = 'pending' OR lease_expires_at < ?) AND (run_after IS NULL OR run_after <= ?)"
    "{lock}"
)
_TAKE = (
    "UPDATE workflows SET state = 'running', updated_at = ?, version = version + 1, "
    "lease_owner = ?, lease_expires_at = ?, claim_count = claim_count + 1 WHERE id = ? "
    "RETURNING version, claim_count"
)
_LATEST = (
    "SELECT s.step_id, s.attempt, s.state, s.output FROM step_executions s JOIN "
    "(SELECT step_id, max(attempt) AS attempt FROM step_executions WHERE workflow_id = ? "
    "GROUP BY step_id) latest ON s.step_id = latest.step_id AND s.attempt = latest.attempt "
    "WHERE s.workflow_id = ?"
)
_START_STEP = (
    "INSERT INTO step_executions (id, workflow_id, step_id, attempt, state, input, output, "
    "error, started_at, completed_at, duration_ms, tokens_used, metadata) "
    "SELECT ?, id, ?, ?, 'running', ?, NULL, NULL, ?, NULL, NULL, NULL, '{{}}' FROM workflows "
    "WHERE id = ? AND lease_owner = ? AND claim_count = ?{lock} RETURNING id"
)
_END_STEP = (
    "UPDATE step_executions SET state = 'succeeded', output = ?, completed_at = ?, "
    "duration_ms = ? WHERE id = ? AND state IN ('pending', 'running') AND workflow_id IN "
    "(SELECT id FROM workflows WHERE id = ? AND lease_owner = ? AND claim_count = ?{lock}) "
    "RETURNING id"
)
_COMPLETE = (
    "UPDATE workflows SET state = 'completed', output = ?, updated_at = ?, completed_at = ?, "
    "version = version + 1, lease_owner = NULL, lease_expires_at = NULL "
    "WHERE id = ? AND state = 'running' AND lease_owner = ? AND claim_count = ? "
    "RETURNING version"
)


class LeaseLost(Exception):
    """A fenced write of the raw protocol found no row: the lease is not current."""


def _dumps(value: JsonValue) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _numbered(statement: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...``."""
    count = iter(range(1, 1000))
    return re.sub(r"\?", lambda _match: f"${next(count)}", statement)


class _Transaction:
    """One transaction of either driver: ``one`` (a row or None) and ``run``."""

    def __init__(self, sqlite: aiosqlite.Connection | None, pg: Any) -> None:
        self._sqlite = sqlite
        self._pg = pg

    async def one(self, statement: str, *args: Any) -> Any:
        if self._pg is not None:
            return await self._pg.fetchrow(statement, *args)
        assert self._sqlite is not None
        async with self._sqlite.execute(statement, args) as cursor:
            rows = list(await cursor.fetchall())
        return rows[0] if rows else None

    async def all(self, statement: str, *args: Any) -> list[Any]:
        if self._pg is not None:
            return list(await self._pg.fetch(statement, *args))
        assert self._sqlite is not None
        async with self._sqlite.execute(statement, args) as cursor:
            return list(await cursor.fetchall())

    async def run(self, statement: str, *args: Any) -> None:
        if self._pg is not None:
            await self._pg.execute(statement, *args)
            return
        assert self._sqlite is not None
        await self._sqlite.execute(statement, args)


class RawFlows(FlowContender):
    """ecl's workflow protocol on aiosqlite / asyncpg, hand-written."""

    name = "raw driver"
    definition_id = "flow-raw"

    def __init__(self) -> None:
        self._pool: Any = None
        self._connections: asyncio.Queue[aiosqlite.Connection] | None = None
        self._all: list[aiosqlite.Connection] = []
        self._pg = False
        self._sql: dict[str, str] = {}

    async def open(self, target: FlowTarget) -> None:
        """A pool of connections of the driver of ``target``, statements for its dialect."""
        self._pg = target.dialect == "postgresql"
        lock = " FOR NO KEY UPDATE" if self._pg else ""
        statements = {
            "insert_workflow": _INSERT_WORKFLOW,
            "transition": _INSERT_TRANSITION,
            "pick": _PICK.format(lock=lock),
            "take": _TAKE,
            "latest": _LATEST,
            "start": _START_STEP.format(lock=lock),
            "end": _END_STEP.format(lock=lock),
            "complete": _COMPLETE,
        }
        if self._pg:
            self._sql = {key: _numbered(value) for key, value in statements.items()}
            url = make_url(target.url).set(drivername="postgresql")
            self._pool = await asyncpg.create_pool(
                url.render_as_string(hide_password=False), min_size=1, max_size=target.pool_size
            )
            return
        self._sql = statements
        path = make_url(target.url).database
        assert path is not None
        self._connections = asyncio.Queue()
        for _ in range(target.pool_size):
            connection = await aiosqlite.connect(path, isolation_level=None)
            await connection.execute("PRAGMA foreign_keys=ON")
            await connection.execute("PRAGMA busy_timeout=30000")
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA synchronous=NORMAL")
            self._all.append(connection)
            self._connections.put_nowait(connection)

    async def close(self) -> None:
        """Close every connection."""
        if self._pool is not None:
            await self._pool.close()
        for connection in self._all:
            await connection.close()
        self._all.clear()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Transaction]:
        if self._pg:
            async with self._pool.acquire() as connection, connection.transaction():
                yield _Transaction(None, connection)
            return
        assert self._connections is not None
        connection = await self._connections.get()
        try:
            await connection.execute("BEGIN IMMEDIATE")
            try:
                yield _Transaction(connection, None)
            except BaseException:
                await connection.execute("ROLLBACK")
                raise
            await connection.execute("COMMIT")
        finally:
            self._connections.put_nowait(connection)

    def _id(self, value: uuid.UUID) -> Any:
        return value if self._pg else value.hex

    def _time(self, value: datetime) -> Any:
        # SQLAlchemy's format for SQLite: naive UTC, always with microseconds.
        return value if self._pg else value.replace(tzinfo=None).isoformat(" ", "microseconds")

    async def run_flow(self, n: int) -> None:
        """The protocol of the module's docstring, for workflow ``n``."""
        sql = self._sql
        wid = uuid.uuid4()
        id, now = self._id(wid), self._time(datetime.now(UTC))
        started = datetime.now(UTC)
        now, expires = self._time(started), self._time(started + _LEASE)
        async with self._transaction() as tx:
            await tx.run(sql["insert_workflow"], id, self.definition_id, _dumps({"n": n}), now, now)
            await tx.run(
                sql["transition"], self._id(uuid.uuid4()), id, None, "pending", now, _WORKER, 1
            )
            picked = await tx.one(sql["pick"], id, now, now)
            if picked is None:
                raise LeaseLost(f"workflow {wid} is not claimable")
            version, claim = await tx.one(sql["take"], now, _WORKER, expires, id)
            await tx.run(
                sql["transition"], self._id(uuid.uuid4()), id, picked[0], "running", now, _WORKER,
                version,
            )  # fmt: skip
        latest: dict[str, Any] = {}  # a new workflow: no step ran yet
        for k in range(3):
            step = f"step-{k}"
            known = latest.get(step)
            if known is not None and known[2] == "succeeded":
                continue
            attempt = 1 if known is None else known[1] + 1
            sid = self._id(uuid.uuid4())
            begun = time.monotonic()
            async with self._transaction() as tx:
                inserted = await tx.one(
                    sql["start"], sid, step, attempt, _dumps({"n": n, "k": k}),
                    self._time(datetime.now(UTC)), id, _WORKER, claim,
                )  # fmt: skip
                if inserted is None:
                    raise LeaseLost(f"workflow {wid}: lease lost")
            output = await step_output(n, k)
            duration = max(0, round((time.monotonic() - begun) * 1000))
            async with self._transaction() as tx:
                ended = await tx.one(
                    sql["end"], _dumps(output), self._time(datetime.now(UTC)), duration, sid, id,
                    _WORKER, claim,
                )  # fmt: skip
                if ended is None:
                    raise LeaseLost(f"workflow {wid}: lease lost")
        now = self._time(datetime.now(UTC))
        async with self._transaction() as tx:
            done = await tx.one(
                sql["complete"], _dumps({"n": n, "steps": 3}), now, now, id, _WORKER, claim
            )
            if done is None:
                raise LeaseLost(f"workflow {wid}: lease lost")
            await tx.run(
                sql["transition"], self._id(uuid.uuid4()), id, "running", "completed", now,
                _WORKER, done[0],
            )  # fmt: skip

    async def completed(self) -> int:
        """Completed workflows of the contender, each with its three steps succeeded."""
        sql = (
            "SELECT count(*) FROM workflows WHERE definition_id = ? AND state = 'completed'",
            "SELECT count(*) FROM step_executions s JOIN workflows w ON w.id = s.workflow_id "
            "WHERE w.definition_id = ? AND s.state = 'succeeded'",
        )
        async with self._transaction() as tx:
            (workflows,), (steps,) = [
                await tx.one(_numbered(q) if self._pg else q, self.definition_id) for q in sql
            ]
        if steps != workflows * 3:
            raise AssertionError(f"raw driver: {steps} steps for {workflows} workflows")
        return int(workflows)
