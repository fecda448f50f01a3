"""Through a real PgBouncer in transaction pooling mode: what ``pgbouncer=True`` turns off."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import make_url
from tests.conftest import _truncate, admin_postgres_url, asyncpg_url
from tests.factories import WorkflowFactory, create_workflows, db_counts
from tests.scale._support import SLOW_POLL, claiming

from ecl_persistence import Database, DbError, Worker, WorkflowState

if TYPE_CHECKING:
    from tests.support.pgbouncer import PgBouncer

pytestmark = pytest.mark.postgresql


def through(bouncer: PgBouncer, postgres_url: str, **query: str) -> str:
    """The URL of the session's scratch database through ``bouncer``."""
    return bouncer.url(str(make_url(asyncpg_url(postgres_url)).database), **query)


async def connections_take_turns(db: Database) -> None:
    """Four pooled connections preparing statements, on two server connections in turn."""

    async def read(n: int) -> None:
        async with db.session(read_only=True) as uow:
            for _ in range(5):
                await uow.workflows.count_by_state()
                await uow.workflows.get(WorkflowFactory.build().id)
                await asyncio.sleep(0.002 * n)

    # Every reader runs to its end (its unit of work closed) before a failure is raised.
    outcomes = await asyncio.gather(*(read(n) for n in range(4)), return_exceptions=True)
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        raise failures[0]


async def test_without_the_setting_asyncpg_prepared_statements_collide_behind_pgbouncer(
    postgres_url: str, pgbouncer_factory: Callable[..., PgBouncer]
) -> None:
    """The failure the setting exists for, reproduced: a statement on another server connection."""
    bouncer = pgbouncer_factory(admin_postgres_url(), default_pool_size=2)
    await _truncate(postgres_url)
    async with Database.from_url(through(bouncer, postgres_url)) as db:
        with pytest.raises(DbError):
            for _ in range(3):
                await connections_take_turns(db)


async def test_with_the_setting_units_of_work_share_one_server_connection(
    postgres_url: str, pgbouncer_factory: Callable[..., PgBouncer]
) -> None:
    bouncer = pgbouncer_factory(admin_postgres_url(), default_pool_size=2)
    await _truncate(postgres_url)
    async with Database.from_url(through(bouncer, postgres_url), pgbouncer=True) as db:
        for _ in range(3):
            await connections_take_turns(db)
        await create_workflows(db, *WorkflowFactory.build_batch(3))
        assert (await db_counts(db))[WorkflowState.PENDING] == 3
    pools = [pool for pool in bouncer.show("pools") if pool["database"] != "pgbouncer"]
    assert pools, "the units of work went through PgBouncer"


async def test_the_url_parameter_is_the_same_setting(
    postgres_url: str, pgbouncer_factory: Callable[..., PgBouncer]
) -> None:
    bouncer = pgbouncer_factory(admin_postgres_url(), default_pool_size=2)
    await _truncate(postgres_url)
    async with Database.from_url(through(bouncer, postgres_url, pgbouncer="true")) as db:
        assert db.config.pgbouncer
        for _ in range(3):
            await connections_take_turns(db)


async def test_workers_behind_pgbouncer_listen_on_the_direct_listen_url(
    postgres_url: str, pgbouncer_factory: Callable[..., PgBouncer]
) -> None:
    bouncer = pgbouncer_factory(admin_postgres_url(), default_pool_size=2)
    await _truncate(postgres_url)
    url = through(bouncer, postgres_url)
    direct = asyncpg_url(postgres_url)
    async with Database.from_url(url, pgbouncer=True, listen_url=direct) as db:
        worker = Worker(db, "w1", poll_seconds=SLOW_POLL)
        async with claiming(worker) as claims:
            await claims.until_listening()
            await claims.created_and_claimed_at_once(db)
        assert (await db_counts(db))[WorkflowState.COMPLETED] == 1


async def test_without_a_listen_url_workers_behind_pgbouncer_poll(
    postgres_url: str, pgbouncer_factory: Callable[..., PgBouncer]
) -> None:
    bouncer = pgbouncer_factory(admin_postgres_url(), default_pool_size=2)
    await _truncate(postgres_url)
    async with Database.from_url(through(bouncer, postgres_url), pgbouncer=True) as db:
        worker = Worker(db, "w1", poll_seconds=0.1)
        async with claiming(worker) as claims:
            await create_workflows(db, workflow := WorkflowFactory.build())
            run, _ = await claims.next()
            assert run.workflow.id == workflow.id
            assert not worker.listening
