"""Connections: trips to SQLite's driver thread, and PostgreSQL connections the server dropped.

The trip counts pin down what the hot paths cost in calls to aiosqlite's
worker thread (see ``ecl_persistence._sqlite_driver``); they count calls, never time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest
from sqlalchemy import text
from tests.conftest import asyncpg_url
from tests.factories import StepExecutionFactory, checked_out, persist_workflow

from ecl_persistence import (
    APPLICATION_NAME,
    ConnectionFailedError,
    Database,
    StepExecutionState,
    TransactionFailedError,
    WorkflowState,
)

# --- SQLite: trips to the driver's thread ---------------------------------------------


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The calls made on aiosqlite's worker thread, by name, from now on."""
    calls: list[str] = []
    original: Any = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", type(fn).__name__))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return calls


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite file whose pool already holds an open connection."""
    database = Database.from_url(f"sqlite:///{tmp_path / 'trips.db'}")
    await database.migrate()
    await database.ping()
    yield database
    await database.dispose()


async def test_a_read_only_unit_reads_in_one_trip_per_statement(
    sqlite_db: Database, trips: list[str]
) -> None:
    async with sqlite_db.session() as uow:
        workflow = await persist_workflow(uow)
    trips.clear()
    async with sqlite_db.session(read_only=True) as uow:
        assert await uow.workflows.get(workflow.id) == workflow
    assert len(trips) == 1, trips
    async with sqlite_db.session(read_only=True) as uow:
        await uow.workflows.get(workflow.id)
        await uow.step_executions.get_for_workflow(workflow.id)
    assert len(trips) == 3, trips


async def test_a_write_unit_takes_one_trip_per_statement_and_one_to_commit(
    sqlite_db: Database, trips: list[str]
) -> None:
    async with sqlite_db.session() as uow:
        workflow = await persist_workflow(uow)
    # BEGIN IMMEDIATE travels with the INSERT; then the audit trail's INSERT; COMMIT.
    assert len(trips) == 3, trips
    trips.clear()
    async with sqlite_db.session() as uow:
        await uow.step_executions.create_many(
            StepExecutionFactory.build_batch(3, workflow_id=workflow.id)
        )
        await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING)
    # create_many; update_state's audit INSERT, then its UPDATE; COMMIT.
    assert len(trips) == 4, trips


async def test_the_driver_cursor_serves_both_sqlalchemy_adapter_protocols(
    sqlite_db: Database,
) -> None:
    """SQLAlchemy 2.0 awaits ``connection.cursor()``; 2.1 enters it with ``async with``."""
    async with sqlite_db.engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        awaited = await driver.cursor()
        await awaited.execute("SELECT 1, 2")
        assert await awaited.fetchall() == [(1, 2)]
        async with driver.cursor() as entered:
            await entered.execute("CREATE TEMP TABLE t (n INTEGER)")
            await entered.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
            assert entered.description is None
            assert await entered.fetchall() == []
            await entered.execute("SELECT n FROM t ORDER BY n")
        assert await entered.fetchall() == [], "leaving the block drops unread rows"


async def test_a_streamed_result_is_fetched_in_the_statement_s_one_trip(
    sqlite_db: Database, trips: list[str]
) -> None:
    """SQLite has no server-side cursor: a stream serves the rows fetched at once."""
    async with sqlite_db.engine.connect() as connection:
        streaming = await connection.execution_options(stream_results=True)
        result = await streaming.stream(
            text(
                "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 5) "
                "SELECT n FROM c"
            )
        )
        partitions = [partition async for partition in result.partitions(2)]
        assert [[n for (n,) in partition] for partition in partitions] == [[1, 2], [3, 4], [5]]
        assert len(trips) == 1, trips


async def test_a_unit_that_runs_no_statement_makes_no_trip(
    sqlite_db: Database, trips: list[str]
) -> None:
    async with sqlite_db.session():
        pass
    async with sqlite_db.session(read_only=True):
        pass
    assert trips == []
    assert checked_out(sqlite_db) == 0


async def test_a_write_unit_still_holds_the_write_lock_from_its_first_statement(
    sqlite_db: Database,
) -> None:
    """The deferred BEGIN IMMEDIATE still locks: a second writer waits, then fails."""
    slow = Database.from_url(str(sqlite_db.config.url), timeout_secs=0.2)
    try:
        async with sqlite_db.session() as holder:
            await persist_workflow(holder)
            with pytest.raises(TransactionFailedError) as caught:
                async with slow.session() as writer:
                    await persist_workflow(writer)
            assert caught.value.retryable
    finally:
        await slow.dispose()


# --- PostgreSQL: connections the server dropped ---------------------------------------


async def _terminate(url: str, pid: int | None = None) -> int:
    """Make the server drop our pooled connections (or one of them); return how many."""
    admin = await asyncpg.connect(asyncpg_url(url), timeout=5)
    try:
        query = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND pid <> pg_backend_pid() "
            "AND datname = current_database()"
        )
        if pid is None:
            count = await admin.fetchval(query, APPLICATION_NAME)
        else:
            count = await admin.fetchval("SELECT count(pg_terminate_backend($1))", pid)
    finally:
        await admin.close()
    # Let the event loop see the closed sockets, as it would between requests.
    await asyncio.sleep(0.05)
    return int(count)


@pytest.mark.postgresql
async def test_units_of_work_carry_on_after_the_server_dropped_pooled_connections(
    postgres_url: str,
) -> None:
    async with Database.from_url(postgres_url, max_connections=2) as db:
        async with db.session() as uow:
            workflow = await persist_workflow(uow)
            step = await uow.step_executions.create(
                StepExecutionFactory.build(workflow_id=workflow.id)
            )
        assert await _terminate(postgres_url) >= 1
        async with db.session(read_only=True) as uow:
            assert await uow.workflows.get(workflow.id) == workflow
        assert await _terminate(postgres_url) >= 1
        async with db.session() as uow:
            done = await uow.step_executions.update_completion(
                step.id, StepExecutionState.SUCCEEDED, output={"ok": True}
            )
        assert done.state is StepExecutionState.SUCCEEDED
        async with db.session(read_only=True) as uow:
            assert await uow.step_executions.get(step.id) == done
        assert checked_out(db) == 0


@pytest.mark.postgresql
async def test_a_connection_lost_mid_transaction_fails_the_unit_without_retrying(
    postgres_url: str,
) -> None:
    async with Database.from_url(postgres_url) as db:
        with pytest.raises(TransactionFailedError, match="rolled back"):
            async with db.session() as uow:
                written = await persist_workflow(uow)
                pid = (await uow.execute(text("SELECT pg_backend_pid()"), action="pid")).scalar()
                await _terminate(postgres_url, pid)
                with pytest.raises(ConnectionFailedError):
                    await uow.workflows.get(written.id)
        async with db.session(read_only=True) as uow:
            assert await uow.workflows.get(written.id) is None
        assert checked_out(db) == 0
