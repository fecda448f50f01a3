"""Wake-ups: a NOTIFY in the transaction that makes a workflow claimable, a worker that LISTENs."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from tests.conftest import asyncpg_url
from tests.factories import WorkflowFactory, claim_one, create_workflows, statements_run
from tests.scale._support import SLOW_POLL, claiming, listener_pids, terminate

from ecl_persistence import Database, Worker, WorkflowState
from ecl_persistence.domain import utc_now
from ecl_persistence.workers.wakeup import Listener, Wakeup

CHANNEL = "ecl_claimable"


class Notices:
    """A plain asyncpg connection's listener callback, collecting the payloads."""

    def __init__(self) -> None:
        self.payloads: asyncio.Queue[str] = asyncio.Queue()

    def __call__(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.put_nowait(payload)

    async def received(self, seconds: float = 0.3) -> list[str]:
        """The payloads received within ``seconds`` from now (notices arrive at commit)."""
        await asyncio.sleep(seconds)
        return [self.payloads.get_nowait() for _ in range(self.payloads.qsize())]


@pytest.mark.postgresql
async def test_creation_and_release_notify_at_commit_and_a_rollback_does_not(
    postgres_url: str, pg_db: Database
) -> None:
    db = pg_db
    notices = Notices()
    listening = await asyncpg.connect(asyncpg_url(postgres_url), timeout=10)
    await listening.add_listener(CHANNEL, notices)
    try:
        with pytest.raises(RuntimeError):
            async with db.session() as uow:
                await uow.workflows.create(WorkflowFactory.build(definition_id="rolled-back"))
                raise RuntimeError("abandon the unit")
        assert await notices.received() == []

        await create_workflows(db, WorkflowFactory.build(definition_id="research"))
        assert await notices.received() == ["research"]

        running = WorkflowFactory.build(definition_id="busy", state=WorkflowState.RUNNING)
        await create_workflows(db, running)
        assert await notices.received() == [], "a running workflow is not claimable"

        claimed = await claim_one(db, "w1")
        async with db.session() as uow:
            await uow.workflows.release(claimed.id, "w1", run_after=utc_now() + timedelta(hours=1))
        assert await notices.received() == [], "not claimable before its run_after"

        await create_workflows(db, WorkflowFactory.build(definition_id="other"))
        assert await notices.received() == ["other"]
        claimed = await claim_one(db, "w1", definition_ids=["other"])
        async with db.session() as uow:
            await uow.workflows.release(claimed.id, "w1")
        assert await notices.received() == ["other"]

        claimed = await claim_one(db, "w1", definition_ids=["other"])
        async with db.session() as uow:
            await uow.workflows.update_state(claimed.id, WorkflowState.FAILED, "boom")
        assert await notices.received() == []
        async with db.session() as uow:
            await uow.workflows.retry(claimed.id)
        assert await notices.received() == ["other"], "a retried workflow is claimable again"
    finally:
        await listening.close()


async def test_only_postgresql_sends_a_notice(db: Database) -> None:
    with statements_run(db) as seen:
        await create_workflows(db, WorkflowFactory.build())
    notices = [statement for statement in seen if "pg_notify" in statement]
    expected = 1 if db.config.strategy.claimable_notice() is not None else 0
    assert len(notices) == expected
    assert (db.dialect == "postgresql") == (expected == 1)


async def test_sqlite_workers_poll_and_never_listen(sqlite_db: Database) -> None:
    db = sqlite_db
    worker = Worker(db, "w1", poll_seconds=0.05)
    async with claiming(worker) as claims:
        await create_workflows(db, workflow := WorkflowFactory.build())
        run, _ = await claims.next()
        assert run.workflow.id == workflow.id
        assert not worker.listening


@pytest.mark.postgresql
async def test_a_listening_worker_claims_a_new_workflow_at_once(
    postgres_url: str, pg_db: Database
) -> None:
    db = pg_db
    worker = Worker(db, "w1", poll_seconds=SLOW_POLL)
    async with claiming(worker) as claims:
        await claims.until_listening()
        assert len(await listener_pids(postgres_url)) == 1
        await claims.created_and_claimed_at_once(db)
    assert await listener_pids(postgres_url) == [], "the listener's connection is closed"


@pytest.mark.postgresql
async def test_a_killed_listener_connection_is_opened_again(
    postgres_url: str, pg_db: Database
) -> None:
    db = pg_db
    worker = Worker(db, "w1", poll_seconds=SLOW_POLL)
    async with claiming(worker) as claims:
        await claims.until_listening()
        [first] = await listener_pids(postgres_url)
        await terminate(postgres_url, [first])
        async with asyncio.timeout(30):
            while (pids := await listener_pids(postgres_url)) in ([], [first]):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await claims.until_listening()
        assert first not in pids
        await claims.created_and_claimed_at_once(db)


@pytest.mark.postgresql
async def test_a_workflow_created_while_the_listener_was_down_is_claimed_at_reconnect(
    postgres_url: str, pg_db: Database
) -> None:
    db = pg_db
    worker = Worker(db, "w1", poll_seconds=SLOW_POLL)
    async with claiming(worker) as claims:
        await claims.until_listening()
        [first] = await listener_pids(postgres_url)
        await terminate(postgres_url, [first])
        # Created before the listener is back (it waits 0.1 s): no one hears the notice.
        await create_workflows(db, workflow := WorkflowFactory.build())
        run, _ = await claims.next(seconds=SLOW_POLL / 2)
        assert run.workflow.id == workflow.id


async def test_the_listener_wakes_only_for_the_workers_definitions(db: Database) -> None:
    wakeup = Wakeup()
    listener = Listener(db, wakeup, ("research",), "w1")
    listener._on_notice("billing")
    assert not await wakeup.wait(0.01)
    listener._on_notice("research")
    assert await wakeup.wait(0.01)
    everything = Listener(db, wakeup, None, "w2")
    everything._on_notice("billing")
    assert await wakeup.wait(0.01)


@pytest.mark.postgresql
async def test_a_listener_that_cannot_connect_leaves_the_worker_polling(
    pg_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = closed.getsockname()[1]
    url = make_url(pg_db.config.url).set(port=port).render_as_string(hide_password=False)
    try:
        async with Database.from_url(pg_db.config.url, listen_url=url) as db:
            worker = Worker(db, "w1", poll_seconds=0.1)
            async with claiming(worker) as claims:
                await create_workflows(db, workflow := WorkflowFactory.build())
                run, _ = await claims.next()
                assert run.workflow.id == workflow.id
                assert not worker.listening
    finally:
        closed.close()
    warnings = [r.getMessage() for r in caplog.records if "cannot listen" in r.getMessage()]
    assert warnings, "the failed connects are logged"
    assert all("ConnectionFailedError" in message for message in warnings)


@pytest.mark.postgresql
async def test_the_listening_connection_checks_itself_and_reports_its_loss(
    postgres_url: str, pg_db: Database
) -> None:
    heard: list[str] = []
    listening = await pg_db.config.strategy.listen(pg_db.config, heard.append)
    assert listening is not None
    try:
        lost = asyncio.ensure_future(listening.wait_lost(0.05))
        await asyncio.sleep(0.3)  # several SELECT 1 checks answered meanwhile
        assert not lost.done()
        await create_workflows(pg_db, WorkflowFactory.build(definition_id="heard"))
        await terminate(postgres_url, await listener_pids(postgres_url))
        async with asyncio.timeout(10):
            await lost
        assert heard == ["heard"]
    finally:
        await listening.close()
