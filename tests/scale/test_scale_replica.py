"""A read replica: read-only units read from a real streaming replica, unless ``primary=True``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from tests.factories import (
    StepExecutionFactory,
    WorkflowFactory,
    create_step_executions,
    create_workflows,
    sql,
)
from tests.support.pg_cluster import Cluster

from ecl_persistence import (
    Database,
    StepExecutionState,
    TransactionFailedError,
    Worker,
    WorkflowState,
)
from ecl_persistence.unit_of_work import UnitOfWork

pytestmark = pytest.mark.postgresql
GUARD = 30.0


@pytest.fixture(scope="module")
def primary() -> Iterator[Cluster]:
    """A throwaway primary with a streaming replica (``primary._replicas[0]``), migrated."""
    with Cluster() as cluster:
        url = cluster.create_database("ecl")

        async def migrate() -> None:
            async with Database.from_url(url) as database:
                await database.migrate()

        asyncio.run(migrate())
        cluster.replica()
        yield cluster


@pytest.fixture
async def db(primary: Cluster) -> AsyncIterator[Database]:
    """A database on the primary whose ``replica_url`` is the replica; emptied first."""
    [replica] = primary._replicas
    database = Database.from_url(primary.url("ecl"), replica_url=replica.url("ecl"))
    async with database.session() as uow:
        await uow.execute(text("TRUNCATE workflows CASCADE"), action="empty")
    yield database
    await database.dispose()
    primary.psql("SELECT 1")  # the primary still answers
    replica.psql("SELECT pg_wal_replay_resume()")  # a test that paused it


async def in_recovery(uow: UnitOfWork) -> bool:
    result = await uow.execute(text("SELECT pg_is_in_recovery()"), action="which server")
    return bool(result.scalar_one())


async def test_read_only_units_read_from_the_replica_unless_primary(db: Database) -> None:
    async with db.session(read_only=True) as uow:
        assert await in_recovery(uow), "a read-only unit is served by the replica"
    async with db.session(read_only=True, primary=True) as uow:
        assert not await in_recovery(uow)
    async with db.session() as uow:
        assert not await in_recovery(uow)
    assert db.replica_engine is not None


async def test_a_write_in_a_replica_unit_is_refused(db: Database) -> None:
    with pytest.raises(TransactionFailedError, match="read-only"):
        async with db.session(read_only=True) as uow:
            await uow.workflows.create(WorkflowFactory.build())
    with pytest.raises(TransactionFailedError, match="refuses writes"):
        async with db.session(read_only=True) as uow:
            await uow.execute(sql("DELETE FROM workflows"), action="delete behind the package")
    async with db.session(read_only=True, primary=True) as uow:
        assert sum((await uow.workflows.count_by_state()).values()) == 0


async def test_the_replica_lags_and_primary_true_reads_your_writes(
    db: Database, primary: Cluster
) -> None:
    [replica] = primary._replicas
    replica.psql("SELECT pg_wal_replay_pause()")
    await create_workflows(db, workflow := WorkflowFactory.build())
    async with db.session(read_only=True) as uow:
        assert await uow.workflows.get(workflow.id) is None, "replay is paused: not there yet"
    async with db.session(read_only=True, primary=True) as uow:
        assert await uow.workflows.get(workflow.id) == workflow
    replica.psql("SELECT pg_wal_replay_resume()")
    async with asyncio.timeout(GUARD):
        while True:
            async with db.session(read_only=True) as uow:
                if await uow.workflows.get(workflow.id) == workflow:
                    break
            await asyncio.sleep(0.01)


async def test_a_worker_never_reads_its_workflow_from_the_replica(
    db: Database, primary: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    [replica] = primary._replicas
    units: list[tuple[bool, bool]] = []
    session = db.session

    def recorded(**options: Any) -> UnitOfWork:
        units.append((options.get("read_only", False), options.get("primary", False)))
        return session(**options)

    monkeypatch.setattr(db, "session", recorded)
    replica.psql("SELECT pg_wal_replay_pause()")  # the replica would not know the workflow
    await create_workflows(db, workflow := WorkflowFactory.build())
    failed = StepExecutionFactory.build(
        workflow_id=workflow.id, step_id="search", state=StepExecutionState.FAILED, error="boom"
    )
    await create_step_executions(db, failed)
    units.clear()
    worker = Worker(db, "w1", poll_seconds=0.1)

    async def search(_recording: object) -> str:
        return "found"

    async with asyncio.timeout(GUARD):
        async for run in worker.runs(until_idle=True):
            async with run:
                # A step whose earlier attempt failed: its history is read first.
                assert await run.step("search", {}, search) == "found"
    async with db.session(read_only=True, primary=True) as uow:
        stored = await uow.workflows.get(workflow.id)
        attempts = await uow.step_executions.get_for_step(workflow.id, "search")
    assert stored is not None
    assert stored.state is WorkflowState.COMPLETED
    assert [a.attempt for a in attempts] == [1, 2]
    assert any(read_only for read_only, _ in units), "the step's history was read"
    assert all(primary or not read_only for read_only, primary in units), units
