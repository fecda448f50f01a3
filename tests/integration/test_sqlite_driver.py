"""Streaming results: SQLAlchemy's streaming API over the SQLite driver's buffered cursor.

On SQLite the driver fetches every row of a statement in its one trip (see
``ecl_persistence._sqlite_driver``); ``stream()``, ``yield_per`` and their
partitions are served from those rows. The same tests run on PostgreSQL,
whose driver streams from the server, to pin that both backends answer alike.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from tests.factories import WorkflowFactory, create_workflows
from tests.reliability._support import SQLITE_ONLY

from ecl_persistence import Database, Workflow
from ecl_persistence.orm import WorkflowRecord

ROWS = 7
SEVEN = text(
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 7) SELECT n FROM c"
)


@pytest.fixture
async def workflows(db: Database) -> list[Workflow]:
    """Seven stored workflows, in the order of their ids."""
    built = sorted(WorkflowFactory.build_batch(ROWS), key=lambda workflow: workflow.id)
    await create_workflows(db, *built)
    return built


async def test_stream_yields_every_row_in_order(db: Database, workflows: list[Workflow]) -> None:
    async with db.engine.connect() as connection:
        result = await connection.stream(select(WorkflowRecord.id).order_by(WorkflowRecord.id))
        first = await result.fetchone()
        assert first is not None
        rest = [row.id async for row in result]
    assert [first.id, *rest] == [workflow.id for workflow in workflows]


async def test_stream_scalars_yields_every_value(db: Database, workflows: list[Workflow]) -> None:
    async with db.engine.connect() as connection:
        result = await connection.stream_scalars(
            select(WorkflowRecord.id).order_by(WorkflowRecord.id)
        )
        assert [value async for value in result] == [workflow.id for workflow in workflows]


@pytest.mark.parametrize(("size", "sizes"), [(1, [1] * ROWS), (3, [3, 3, 1]), (10, [ROWS])])
async def test_yield_per_hands_out_partitions_of_its_size(
    db: Database, workflows: list[Workflow], size: int, sizes: list[int]
) -> None:
    async with db.engine.connect() as connection:
        streaming = await connection.execution_options(stream_results=True, yield_per=size)
        result = await streaming.stream(select(WorkflowRecord.id).order_by(WorkflowRecord.id))
        partitions = [[row.id for row in partition] async for partition in result.partitions()]
    assert [len(partition) for partition in partitions] == sizes
    assert [id for partition in partitions for id in partition] == [w.id for w in workflows]


async def test_fetchmany_of_a_streamed_result_returns_the_next_rows(db: Database) -> None:
    async with db.engine.connect() as connection:
        streaming = await connection.execution_options(stream_results=True)
        result = await streaming.stream(SEVEN)
        assert await result.fetchmany(3) == [(1,), (2,), (3,)]
        assert await result.fetchone() == (4,)
        assert await result.fetchmany(5) == [(5,), (6,), (7,)]
        assert await result.fetchmany(5) == []
        assert await result.fetchone() is None


async def test_orm_session_stream_with_yield_per_loads_every_record(
    db: Database, workflows: list[Workflow]
) -> None:
    statement = select(WorkflowRecord).order_by(WorkflowRecord.id).execution_options(yield_per=3)
    async with AsyncSession(db.engine) as session:
        result = await session.stream(statement)
        partitions = [
            [(record.id, record.state, record.input) for record in partition]
            async for partition in result.scalars().partitions()
        ]
    assert [len(partition) for partition in partitions] == [3, 3, 1]
    loaded = [row for partition in partitions for row in partition]
    # The entities hold decoded documents, streamed or not.
    assert loaded == [(w.id, w.state, w.input) for w in workflows]


# --- SQLite: the driver's cursor itself --------------------------------------------------


async def _driver(connection: Any) -> Any:
    raw = await connection.get_raw_connection()
    return raw.driver_connection


@SQLITE_ONLY
async def test_driver_cursor_fetches_one_many_and_the_rest_from_its_buffer(db: Database) -> None:
    async with db.engine.connect() as connection:
        driver = await _driver(connection)
        async with driver.cursor() as cursor:
            await cursor.execute(str(SEVEN))
            assert await cursor.fetchone() == (1,)
            assert await cursor.fetchmany() == [(2,)], "arraysize is 1 by default"
            cursor.arraysize = 2
            assert await cursor.fetchmany() == [(3,), (4,)]
            assert await cursor.fetchmany(size=1) == [(5,)]
            assert await cursor.fetchall() == [(6,), (7,)]
            assert await cursor.fetchone() is None
            assert await cursor.fetchmany(3) == []
            assert await cursor.fetchall() == []
            # A new statement starts from its first row again.
            await cursor.execute(str(SEVEN))
            assert await cursor.fetchmany(6) == [(n,) for n in range(1, 7)]
            assert await cursor.fetchmany(6) == [(7,)]


@SQLITE_ONLY
async def test_driver_cursor_iterates_over_the_rows_not_yet_fetched(db: Database) -> None:
    async with db.engine.connect() as connection:
        driver = await _driver(connection)
        async with driver.cursor() as cursor:
            await cursor.execute(str(SEVEN))
            assert await cursor.fetchmany(2) == [(1,), (2,)]
            assert [row async for row in cursor] == [(n,) for n in range(3, 8)]
            assert [row async for row in cursor] == []
            await cursor.execute("SELECT ?", ("again",))
            assert [row async for row in cursor] == [("again",)]
