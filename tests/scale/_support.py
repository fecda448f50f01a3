"""What the scale-out tests share: a worker claiming in the background, timed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url
from tests.conftest import asyncpg_url
from tests.factories import WorkflowFactory, create_workflows

from ecl_persistence import Database, Worker, WorkflowRun

GUARD = 30.0  # only turns a hang into a failure
SLOW_POLL = 60.0  # a claim much sooner than this came from a notification
PROMPT = 5.0  # what "at once" must beat here: far below SLOW_POLL, far above a loaded machine
LISTENER_NAME = "ecl-persistence listener"


class Claims:
    """The runs a worker hands out in a background task, completed as they come."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.runs: asyncio.Queue[tuple[WorkflowRun, float]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        async for run in self.worker.runs():
            claimed_at = loop.time()
            async with run:
                pass  # a clean block completes the workflow
            await self.runs.put((run, claimed_at))

    async def next(self, seconds: float = GUARD) -> tuple[WorkflowRun, float]:
        """The next run handed out and when it was claimed (the loop's clock)."""
        async with asyncio.timeout(seconds):
            return await self.runs.get()

    async def created_and_claimed_at_once(self, db: Database) -> None:
        """Create a workflow in ``db`` and check this worker claims it within ``PROMPT``."""
        created_at = asyncio.get_running_loop().time()
        await create_workflows(db, workflow := WorkflowFactory.build())
        run, claimed_at = await self.next()
        assert run.workflow.id == workflow.id
        assert claimed_at - created_at < PROMPT

    async def until_listening(self, seconds: float = GUARD) -> None:
        """Wait until the worker's listener has its connection open."""
        async with asyncio.timeout(seconds):
            while not self.worker.listening:  # noqa: ASYNC110 - the listener has no event
                await asyncio.sleep(0.01)


@asynccontextmanager
async def claiming(worker: Worker) -> AsyncIterator[Claims]:
    """Run ``worker`` in a background task inside the block; stop it at the end."""
    claims = Claims(worker)
    claims._task = asyncio.ensure_future(claims._consume())
    try:
        yield claims
    finally:
        await worker.stop(grace_seconds=1)
        async with asyncio.timeout(GUARD):
            await claims._task


async def listener_pids(url: str) -> list[int]:
    """The backends of our workers' listeners on the database of ``url``."""
    connection = await asyncpg.connect(asyncpg_url(url), timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
            LISTENER_NAME,
            make_url(url).database,
        )
    finally:
        await connection.close()
    return [int(row["pid"]) for row in rows]


async def terminate(url: str, pids: list[int]) -> None:
    """``pg_terminate_backend`` each of ``pids`` (backends of the test's scratch database)."""
    connection = await asyncpg.connect(asyncpg_url(url), timeout=10)
    try:
        for pid in pids:
            assert await connection.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await connection.close()
