"""``Database.from_engine``: the package on an engine the application created and owns."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.factories import StepExecutionFactory, WorkflowFactory, statements_run

from ecl_persistence import (
    MISSING,
    ConstraintViolationError,
    Database,
    ValidationError,
    WorkflowState,
)
from ecl_persistence.config import normalize_url


def _application_engine_url(database_url: str) -> str:
    """The URL an application would give ``create_async_engine``: with the async driver."""
    return normalize_url(database_url).render_as_string(hide_password=False)


async def test_the_repositories_work_on_the_application_engine(database_url: str) -> None:
    engine = create_async_engine(_application_engine_url(database_url))
    try:
        db = Database.from_engine(engine)
        async with db.session() as uow:
            workflow = await uow.workflows.create(WorkflowFactory.build(input={"q": [1, 2]}))
            finished = WorkflowFactory.build(output=None)
            await uow.workflows.create(finished)
            await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING)
        async with db.session(read_only=True) as uow:
            stored = await uow.workflows.get(workflow.id)
            with_null = await uow.workflows.get(finished.id)
        assert stored is not None
        assert with_null is not None
        assert stored.input == {"q": [1, 2]}
        assert stored.state is WorkflowState.RUNNING
        # The engine's own JSON codec (SQLAlchemy's default) does not blur
        # SQL NULL and JSON null: the columns are read as text.
        assert stored.output is MISSING
        assert with_null.output is None
        await db.dispose()
        # The engine is the application's: still open, still usable.
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_sqlite_foreign_keys_and_immediate_writes_are_set_up_on_the_application_engine(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    try:
        # A connection the pool holds from before: set up at its next checkout.
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        db = Database.from_engine(engine)
        await db.migrate()
        async with engine.connect() as connection:
            pragma = await connection.exec_driver_sql("PRAGMA foreign_keys")
            assert pragma.scalar_one() == 1
            journal = await connection.exec_driver_sql("PRAGMA journal_mode")
            assert journal.scalar_one() == "wal"
        orphan = StepExecutionFactory.build(workflow_id=WorkflowFactory.build().id)
        with pytest.raises(ConstraintViolationError, match="foreign key"):
            async with db.session() as uow:
                await uow.step_executions.create(orphan)
        with statements_run(db) as statements:
            async with db.session() as uow:
                await uow.workflows.create(WorkflowFactory.build())
        assert statements[0] == "BEGIN IMMEDIATE"
    finally:
        await engine.dispose()


async def test_sqlite_writers_on_the_application_engine_queue_instead_of_failing(
    tmp_path: Path,
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}", pool_size=4)
    try:
        db = Database.from_engine(engine, timeout_secs=10.0)
        await db.migrate()

        async def read_then_write() -> None:
            async with db.session() as uow:
                await uow.workflows.count_by_state()
                await asyncio.sleep(0.01)
                await uow.workflows.create(WorkflowFactory.build())

        await asyncio.gather(*(read_then_write() for _ in range(8)))
        async with db.session(read_only=True) as uow:
            assert (await uow.workflows.count_by_state())[WorkflowState.PENDING] == 8
    finally:
        await engine.dispose()


async def test_an_in_memory_application_engine_takes_units_of_work_in_turn() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        db = Database.from_engine(engine)
        await db.migrate()

        async def create() -> None:
            async with db.session() as uow:
                await uow.workflows.create(WorkflowFactory.build())
                await asyncio.sleep(0)

        await asyncio.gather(*(create() for _ in range(5)))
        async with db.session(read_only=True) as uow:
            assert (await uow.workflows.count_by_state())[WorkflowState.PENDING] == 5
    finally:
        await engine.dispose()


def test_a_synchronous_engine_is_refused_clearly() -> None:
    engine = create_engine("sqlite://")
    with pytest.raises(ValidationError, match="needs an AsyncEngine"):
        Database.from_engine(engine)  # type: ignore[arg-type]
    engine.dispose()
