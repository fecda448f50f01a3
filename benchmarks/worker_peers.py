"""Workload (h)'s other worker processes: the raw driver with ecl's protocol, and procrastinate.

The raw driver's worker claims the way ecl's ``Worker`` does, one workflow at
a time: in one transaction it picks the first claimable workflow of the
queue (``FOR NO KEY UPDATE SKIP LOCKED`` on PostgreSQL; under SQLite's write
lock, ``BEGIN IMMEDIATE``), leases it (``claim_count`` bumped), writes the
audit row and reads the resume point; in a second it completes the workflow,
fenced by the lease, with its audit row. procrastinate's worker runs its
documented ``App.run_worker_async(wait=False)`` over jobs deferred with
``batch_defer_async``; a job is claimed and its end recorded by procrastinate
itself (no audit trail, no fencing: its own guarantees).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite
import asyncpg
from sqlalchemy.engine import make_url

__all__ = ["procrastinate_app", "procrastinate_child", "raw_child", "seed_procrastinate"]

_PICK = (
    "SELECT id, state, lease_owner FROM workflows WHERE state IN ('pending', 'running') "
    "AND (state = 'pending' OR lease_expires_at < {p1}) "
    "AND (run_after IS NULL OR run_after <= {p1}) "
    "ORDER BY priority DESC, created_at, id LIMIT 1{lock}"
)
_TAKE = (
    "UPDATE workflows SET state = 'running', updated_at = {p1}, version = version + 1, "
    "lease_owner = {p2}, lease_expires_at = {p3}, claim_count = claim_count + 1 "
    "WHERE id = {p4} RETURNING version, claim_count"
)
_TRANSITION = (
    "INSERT INTO workflow_transitions (id, workflow_id, from_state, to_state, at, actor, "
    "reason, version) VALUES ({p1}, {p2}, {p3}, {p4}, {p5}, {p6}, NULL, {p7})"
)
_LATEST = (
    "SELECT s.step_id, s.attempt, s.state FROM step_executions s JOIN "
    "(SELECT step_id, max(attempt) AS attempt FROM step_executions WHERE workflow_id = {p1} "
    "GROUP BY step_id) latest ON s.step_id = latest.step_id AND s.attempt = latest.attempt "
    "WHERE s.workflow_id = {p1}"
)
_COMPLETE = (
    "UPDATE workflows SET state = 'completed', updated_at = {p1}, completed_at = {p1}, "
    "version = version + 1, lease_owner = NULL, lease_expires_at = NULL "
    "WHERE id = {p2} AND state = 'running' AND lease_owner = {p3} AND claim_count = {p4} "
    "RETURNING version"
)
_STATEMENTS = {"pick": _PICK, "take": _TAKE, "transition": _TRANSITION}
_STATEMENTS |= {"latest": _LATEST, "complete": _COMPLETE}


def _sql(pg: bool) -> dict[str, str]:
    marks = {f"p{n}": (f"${n}" if pg else f"?{n}") for n in range(1, 8)}
    lock = " FOR NO KEY UPDATE SKIP LOCKED" if pg else ""
    return {key: value.format(lock=lock, **marks) for key, value in _STATEMENTS.items()}


@asynccontextmanager
async def _connection(url: str) -> AsyncIterator[tuple[bool, Any]]:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        plain = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        connection = await asyncpg.connect(plain)
        try:
            yield True, connection
        finally:
            await connection.close()
        return
    assert parsed.database is not None
    async with aiosqlite.connect(parsed.database, isolation_level=None) as connection:
        for pragma in ("foreign_keys=ON", "busy_timeout=60000", "synchronous=NORMAL"):
            await connection.execute(f"PRAGMA {pragma}")
        yield False, connection


async def _work(url: str, name: str, go: Callable[[], Awaitable[None]]) -> int:
    done = 0
    async with _connection(url) as (pg, connection):
        sql = _sql(pg)

        def value(x: Any) -> Any:
            if isinstance(x, uuid.UUID):
                return x if pg else x.hex
            if isinstance(x, datetime) and not pg:
                return x.replace(tzinfo=None).isoformat(" ", "microseconds")
            return x

        async def rows(statement: str, *args: Any) -> list[Any]:
            if pg:
                return list(await connection.fetch(statement, *args))
            async with connection.execute(statement, tuple(value(a) for a in args)) as cursor:
                return list(await cursor.fetchall())

        @asynccontextmanager
        async def transaction() -> AsyncIterator[None]:
            if pg:
                async with connection.transaction():
                    yield
                return
            await connection.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                await connection.execute("ROLLBACK")
                raise
            await connection.execute("COMMIT")

        await go()
        while True:
            now = datetime.now(UTC)
            async with transaction():
                picked = await rows(sql["pick"], value(now))
                if not picked:
                    return done
                id, state, _owner = picked[0]
                ((version, claim),) = await rows(
                    sql["take"], value(now), name, value(now + timedelta(seconds=30)), id
                )
                await rows(sql["transition"], value(uuid.uuid4()), id, state, "running",
                           value(now), name, version)  # fmt: skip
                await rows(sql["latest"], id)
            now = datetime.now(UTC)
            async with transaction():
                completed = await rows(sql["complete"], value(now), id, name, claim)
                if not completed:
                    raise RuntimeError(f"workflow {id}: the lease was lost")
                await rows(sql["transition"], value(uuid.uuid4()), id, "running", "completed",
                           value(now), name, completed[0][0])  # fmt: skip
                done += 1


async def raw_child(url: str, name: str, go: Callable[[], Awaitable[None]]) -> int:
    """One raw worker process: claim and complete until the queue is empty; how many."""
    return await _work(url, name, go)


_ran = [0]
"""Jobs this process ran."""


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def procrastinate_app(url: str) -> Any:
    """A procrastinate App on ``url`` with one task, ``bench_job``, that returns at once."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=_plain(url)))

    @app.task(name="bench_job", queue="bench")
    async def bench_job(n: int) -> None:
        _ran[0] += 1

    return app


async def seed_procrastinate(url: str, count: int, *, schema: bool) -> None:
    """Defer ``count`` jobs (and, first, apply procrastinate's schema when ``schema``)."""
    app = procrastinate_app(url)
    async with app.open_async():
        if schema:
            await app.schema_manager.apply_schema_async()
        connection = await asyncpg.connect(_plain(url))
        try:
            await connection.execute("DELETE FROM procrastinate_jobs")
        finally:
            await connection.close()
        await app.tasks["bench_job"].batch_defer_async(*({"n": n} for n in range(count)))


async def procrastinate_child(url: str, name: str, go: Callable[[], Awaitable[None]]) -> int:
    """One procrastinate worker process: run jobs until caught up; how many it finished."""
    app = procrastinate_app(url)
    async with app.open_async():
        await go()
        await app.run_worker_async(
            queues=["bench"], wait=False, name=name, concurrency=1, install_signal_handlers=False
        )
    return _ran[0]
