"""Database: connection set-up per dialect, in-memory databases, reachability."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.factories import WorkflowFactory, checked_out, persist_workflow

from ecl_persistence import (
    APPLICATION_NAME,
    ConnectionFailedError,
    Database,
    TransactionFailedError,
    ValidationError,
)

SECRET = "n0t-the-Real-pw"


async def _pragmas(db: Database) -> dict[str, object]:
    async with db.engine.connect() as connection:
        values = {}
        for name in ("foreign_keys", "busy_timeout", "journal_mode", "synchronous"):
            values[name] = (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
        return values


async def test_sqlite_pragmas_are_set_on_every_pooled_connection(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'p.db'}", timeout_secs=2.5, max_connections=3)
    try:
        # Three at once forces three distinct connections out of the pool.
        results = await asyncio.gather(*(_pragmas(db) for _ in range(3)))
        await db.engine.dispose()  # recycled: the next connections are new ones
        results.append(await _pragmas(db))
    finally:
        await db.dispose()
    for pragmas in results:
        assert pragmas == {
            "foreign_keys": 1,
            "busy_timeout": 2500,
            "journal_mode": "wal",
            "synchronous": 1,
        }


async def test_in_memory_database_has_foreign_keys_on_after_migrating() -> None:
    db = await Database.in_memory()
    try:
        pragmas = await _pragmas(db)
    finally:
        await db.dispose()
    assert pragmas["foreign_keys"] == 1
    assert pragmas["journal_mode"] == "memory"


async def test_in_memory_databases_are_private_and_live_until_dispose() -> None:
    first, second = await Database.in_memory(), await Database.in_memory()
    try:
        async with first.session() as uow:
            workflow = await persist_workflow(uow)
        async with first.session() as uow:
            assert await uow.workflows.get(workflow.id) == workflow
        async with second.session() as uow:
            assert await uow.workflows.get(workflow.id) is None
    finally:
        await first.dispose()
        await second.dispose()


async def test_in_memory_units_of_work_take_turns() -> None:
    db = await Database.in_memory()

    async def create() -> None:
        async with db.session() as uow:
            await persist_workflow(uow)
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(create() for _ in range(5)))
        async with db.session(read_only=True) as uow:
            page = await uow.workflows.list(limit=10)
        assert len(page.items) == 5
    finally:
        await db.dispose()


async def test_concurrent_read_then_write_units_wait_instead_of_failing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    db = Database.from_url(url, max_connections=4)
    await db.migrate()

    async def read_then_write(n: int) -> None:
        async with db.session() as uow:
            await uow.workflows.list_by_definition("research")
            await asyncio.sleep(0.02)
            await uow.workflows.create(WorkflowFactory.build(input={"n": n}))

    try:
        await asyncio.gather(*(read_then_write(n) for n in range(8)))
        async with db.session(read_only=True) as uow:
            assert len(await uow.workflows.list_by_definition("research")) == 8
    finally:
        await db.dispose()


async def test_sqlite_writer_held_past_timeout_gives_retryable_error_and_reader_is_not_blocked(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    db = Database.from_url(url, timeout_secs=0.2)
    await db.migrate()
    try:
        async with db.session() as holder:
            kept = await persist_workflow(holder)  # takes and holds the write lock
            async with db.session(read_only=True) as reader:
                assert await reader.workflows.get(kept.id) is None  # not committed yet
            with pytest.raises(TransactionFailedError) as caught:
                async with db.session() as writer:
                    await persist_workflow(writer)
            assert caught.value.retryable
        async with db.session(read_only=True) as uow:
            assert [w.id for w in await uow.workflows.list_by_definition("research")] == [kept.id]
    finally:
        await db.dispose()


async def test_ping_answers_on_a_live_database(db: Database) -> None:
    await db.ping()


async def test_async_with_disposes_the_engine(database_url: str) -> None:
    async with Database.from_url(database_url) as db:
        await db.ping()
        assert checked_out(db) == 0
    assert "Database(" in repr(db)


async def test_sqlite_file_in_a_missing_directory_fails_to_connect(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    with pytest.raises(ConnectionFailedError) as caught:
        await db.ping()
    assert not caught.value.retryable
    await db.dispose()


@pytest.mark.postgresql
async def test_unreachable_postgres_raises_connection_failed_without_the_password() -> None:
    db = Database.from_url(f"postgresql://ecl:{SECRET}@127.0.0.1:1/nowhere", timeout_secs=1)
    with pytest.raises(ConnectionFailedError) as caught:
        await db.ping()
    await db.dispose()
    assert caught.value.retryable
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


@pytest.mark.postgresql
async def test_missing_postgres_database_is_not_retryable(postgres_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url).set(database="ecl_no_such_database", password=SECRET)
    db = Database.from_url(url.render_as_string(hide_password=False))
    with pytest.raises(ConnectionFailedError) as caught:
        await db.ping()
    await db.dispose()
    assert not caught.value.retryable
    assert "does not exist" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.postgresql
async def test_postgres_pool_and_application_name_follow_the_config(postgres_url: str) -> None:
    async with Database.from_url(postgres_url, max_connections=3) as db:
        assert db.engine.pool.size() == 3  # type: ignore[attr-defined]
        async with db.session(read_only=True) as uow:
            result = await uow.execute(
                text("SELECT current_setting('application_name')"), action="read"
            )
            assert result.scalar() == APPLICATION_NAME


@pytest.mark.postgresql
async def test_postgres_read_only_unit_leaves_no_transaction_open(postgres_url: str) -> None:
    async with Database.from_url(postgres_url) as db, db.session(read_only=True) as uow:
        pid = (await uow.execute(text("SELECT pg_backend_pid()"), action="pid")).scalar()
        async with db.session() as other:
            state = await other.execute(
                text("SELECT state FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": pid},
                action="activity",
            )
            assert state.scalar() == "idle"


def test_database_refuses_a_bad_url() -> None:
    with pytest.raises(ValidationError):
        Database.from_url("mongodb://localhost/x")
