"""Workload (g) through ecl-persistence's public Worker path, the naive ORM, and DBOS Transact."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from typing_extensions import override

from benchmarks.contenders._orm import open_engine
from benchmarks.contenders.flows import STEPS, FlowContender, FlowTarget, step_output
from ecl_persistence import Database, StepRecording, Worker, Workflow
from ecl_persistence.domain import JsonValue
from ecl_persistence.orm import StepExecutionRecord, WorkflowRecord, WorkflowTransitionRecord

__all__ = ["DbosFlows", "EclCreateThenClaim", "EclFlows", "NaiveFlows", "count_completed"]

_LEASE = timedelta(seconds=30)


async def count_completed(engine: AsyncEngine, definition_id: str) -> int:
    """Completed workflows of ``definition_id`` whose every step succeeded (in ecl's schema)."""
    done = (
        select(func.count())
        .select_from(WorkflowRecord)
        .where(WorkflowRecord.definition_id == definition_id, WorkflowRecord.state == "completed")
    )
    steps = (
        select(func.count())
        .select_from(StepExecutionRecord)
        .join(WorkflowRecord, WorkflowRecord.id == StepExecutionRecord.workflow_id)
        .where(
            WorkflowRecord.definition_id == definition_id, StepExecutionRecord.state == "succeeded"
        )
    )
    async with engine.connect() as connection:
        workflows = (await connection.execute(done)).scalar_one()
        succeeded = (await connection.execute(steps)).scalar_one()
    if succeeded != workflows * STEPS:
        raise AssertionError(f"{definition_id}: {succeeded} steps for {workflows} workflows")
    return int(workflows)


class EclFlows(FlowContender):
    """The public path of ``docs/workers.md``: ``worker.start``, ``run.step``, ``run.complete``."""

    name = "ecl-persistence"
    definition_id = "flow-ecl"

    def __init__(self) -> None:
        self._db: Database | None = None
        self._worker: Worker | None = None

    @override
    async def open(self, target: FlowTarget) -> None:
        # Writers wait for SQLite's lock up to 30 s, as the other contenders' do.
        self._db = Database.from_url(
            target.url, max_connections=target.pool_size, timeout_secs=30.0
        )
        self._worker = Worker(self._db, "bench-ecl", concurrency=64)

    @override
    async def close(self) -> None:
        assert self._db is not None
        await self._db.dispose()

    @override
    async def run_flow(self, n: int) -> None:
        worker = self._worker
        assert worker is not None
        run = await worker.start(Workflow.new(self.definition_id, {"n": n}))
        async with run:
            for k in range(STEPS):

                async def step(recording: StepRecording, k: int = k) -> JsonValue:
                    return await step_output(n, k)

                await run.step(f"step-{k}", {"n": n, "k": k}, step)
            await run.complete({"n": n, "steps": STEPS})

    @override
    async def completed(self) -> int:
        assert self._db is not None
        return await count_completed(self._db.engine, self.definition_id)


class EclCreateThenClaim(EclFlows):
    """The same, with the workflow created in a unit of its own and then ``worker.claim``-ed.

    The path before ``Worker.start``: one transaction more (and the claim
    reads the resume point), to show what starting in one transaction buys.
    """

    name = "ecl, create then claim"
    definition_id = "flow-ecl-claim"

    @override
    async def run_flow(self, n: int) -> None:
        db, worker = self._db, self._worker
        assert db is not None
        assert worker is not None
        async with db.session() as uow:
            workflow = await uow.workflows.create(Workflow.new(self.definition_id, {"n": n}))
        run = await worker.claim(workflow.id)
        async with run:
            for k in range(STEPS):

                async def step(recording: StepRecording, k: int = k) -> JsonValue:
                    return await step_output(n, k)

                await run.step(f"step-{k}", {"n": n, "k": k}, step)
            await run.complete({"n": n, "steps": STEPS})


class NaiveFlows(FlowContender):
    """The same protocol written the tutorial way: a session per transaction, ORM entities.

    Fencing as such code does it: load the workflow ``FOR UPDATE`` (a no-op on
    SQLite, whose writers hold the database lock) and compare its lease before
    each write.
    """

    name = "naive ORM repository"
    definition_id = "flow-naive"

    def __init__(self) -> None:
        self._engine: AsyncEngine | None = None
        self._factory: async_sessionmaker[AsyncSession] | None = None

    @override
    async def open(self, target: FlowTarget) -> None:
        self._engine, self._factory = open_engine(target.url)

    @override
    async def close(self) -> None:
        assert self._engine is not None
        await self._engine.dispose()

    async def _leased(self, session: AsyncSession, id: uuid.UUID, claim: int) -> WorkflowRecord:
        record = await session.get(WorkflowRecord, id, with_for_update=True)
        if record is None or record.lease_owner != "bench-naive" or record.claim_count != claim:
            raise LookupError(f"workflow {id}: lease lost")
        return record

    @override
    async def run_flow(self, n: int) -> None:
        factory = self._factory
        assert factory is not None
        id, now = uuid.uuid4(), datetime.now(UTC)
        async with factory() as session:
            session.add(
                WorkflowRecord(
                    id=id, definition_id=self.definition_id, state="pending", input={"n": n},
                    created_at=now, updated_at=now, metadata_={}, version=1, claim_count=0,
                    priority=0,
                )
            )  # fmt: skip
            await session.flush()
            session.add(_transition(id, None, "pending", now, None, 1))
            await session.commit()
        async with factory() as session:
            now = datetime.now(UTC)
            record = await session.get(WorkflowRecord, id, with_for_update=True)
            if record is None or record.state != "pending":
                raise LookupError(f"workflow {id} is not claimable")
            record.state, record.updated_at, record.lease_owner = "running", now, "bench-naive"
            record.lease_expires_at, record.version = now + _LEASE, record.version + 1
            record.claim_count += 1
            claim = record.claim_count
            session.add(_transition(id, "pending", "running", now, "bench-naive", record.version))
            history = select(StepExecutionRecord).where(StepExecutionRecord.workflow_id == id)
            done = {r.step_id for r in await session.scalars(history) if r.state == "succeeded"}
            await session.commit()
        for k in range(STEPS):
            if f"step-{k}" in done:
                continue
            step_id, begun = uuid.uuid4(), time.monotonic()
            async with factory() as session:
                await self._leased(session, id, claim)
                session.add(
                    StepExecutionRecord(
                        id=step_id, workflow_id=id, step_id=f"step-{k}", attempt=1,
                        state="running", input={"n": n, "k": k}, started_at=datetime.now(UTC),
                        metadata_={},
                    )
                )  # fmt: skip
                await session.commit()
            output = await step_output(n, k)
            async with factory() as session:
                await self._leased(session, id, claim)
                step = await session.get(StepExecutionRecord, step_id)
                assert step is not None
                step.state, step.output, step.completed_at = "succeeded", output, datetime.now(UTC)
                step.duration_ms = max(0, round((time.monotonic() - begun) * 1000))
                await session.commit()
        async with factory() as session:
            record = await self._leased(session, id, claim)
            now = datetime.now(UTC)
            record.state, record.output, record.updated_at = "completed", {"n": n, "steps": 3}, now
            record.completed_at, record.version = now, record.version + 1
            record.lease_owner = record.lease_expires_at = None
            session.add(_transition(id, "running", "completed", now, "bench-naive", record.version))
            await session.commit()

    @override
    async def completed(self) -> int:
        assert self._engine is not None
        return await count_completed(self._engine, self.definition_id)


def _transition(
    id: uuid.UUID, before: str | None, after: str, at: datetime, actor: str | None, version: int
) -> WorkflowTransitionRecord:
    return WorkflowTransitionRecord(
        id=uuid.uuid4(), workflow_id=id, from_state=before, to_state=after, at=at, actor=actor,
        version=version,
    )  # fmt: skip


_dbos_flow: Any = None


def _register() -> Any:
    """DBOS's documented decorators: one workflow of three steps (registered once per process)."""
    global _dbos_flow
    if _dbos_flow is not None:
        return _dbos_flow
    from dbos import DBOS

    @DBOS.step()
    async def dbos_step(n: int, k: int) -> JsonValue:
        return await step_output(n, k)

    @DBOS.workflow()
    async def dbos_flow(n: int) -> JsonValue:
        for k in range(STEPS):
            await dbos_step(n, k)
        return {"n": n, "steps": STEPS}

    _dbos_flow = dbos_flow
    return dbos_flow


class DbosFlows(FlowContender):
    """DBOS Transact: ``@DBOS.workflow`` of three ``@DBOS.step``, its own system database."""

    name = "DBOS Transact"

    def __init__(self) -> None:
        self._flow: Any = None
        self._runs = 0

    @override
    async def open(self, target: FlowTarget) -> None:
        from dbos import DBOS

        self._flow = _register()
        DBOS(
            config={
                "name": "ecl-bench",
                "system_database_url": target.peer_url,
                "sys_db_pool_size": target.pool_size,
            }
        )
        DBOS.launch()

    @override
    async def close(self) -> None:
        from dbos import DBOS

        DBOS.destroy(destroy_registry=False)

    @override
    async def run_flow(self, n: int) -> None:
        result = await self._flow(n)
        if result != {"n": n, "steps": STEPS}:
            raise AssertionError(f"DBOS returned {result!r}")
        self._runs += 1

    @override
    async def completed(self) -> int:
        from dbos import DBOS

        succeeded = await DBOS.list_workflows_async(status="SUCCESS", load_input=False)
        return len(succeeded)
