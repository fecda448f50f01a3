"""Cancelled while committing: the caller can always tell whether its work was stored.

A cancellation (or a timeout) aimed at a unit of work while its commit runs
waits for the commit to finish and then propagates; ``uow.committed`` says
whether the commit completed. The cancellations here are sent by a listener
on the engine's ``commit`` event, the moment the commit begins, or a little
later, while the driver is at work.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from tests.factories import checked_out, get_workflow, persist_workflow
from tests.reliability._support import settle_sessions, sized

from ecl_persistence import Database, Workflow
from ecl_persistence.unit_of_work import UnitOfWork

# Up to this long after the commit began, in seconds: from before the driver
# is reached to after it is done.
MAX_DELAY = 0.002


@contextmanager
def cancelling_commits(db: Database, delays: Iterator[float]) -> Iterator[list[asyncio.Task[Any]]]:
    """Cancel the task in ``targets[-1]`` each time a commit begins, after the next delay."""
    targets: list[asyncio.Task[Any]] = []
    loop = asyncio.get_running_loop()

    def cancel(connection: Any) -> None:
        delay = next(delays)
        target = targets[-1]
        if delay == 0:
            target.cancel()
        else:
            loop.call_later(delay, target.cancel)

    event.listen(db.engine.sync_engine, "commit", cancel)
    try:
        yield targets
    finally:
        event.remove(db.engine.sync_engine, "commit", cancel)


async def _unit(db: Database, units: list[UnitOfWork], workflow: Workflow) -> None:
    async with db.session() as uow:
        units.append(uow)
        await uow.workflows.create(workflow)


async def _cancelled_unit(
    db: Database, units: list[UnitOfWork], workflow: Workflow, *, explicit: bool
) -> None:
    async with db.session() as uow:
        units.append(uow)
        await uow.workflows.create(workflow)
        if explicit:
            await uow.commit()
            await asyncio.sleep(3600)
    # A cancellation that comes too late for the commit lands here.
    await asyncio.sleep(3600)


async def _each_outcome_is_known(db: Database, url: str, runs: int, *, explicit: bool) -> int:
    """Run ``runs`` units whose commits are cancelled; return how many committed anyway."""
    rng = random.Random(runs)
    delays = iter(lambda: rng.choice((0.0, rng.uniform(0, MAX_DELAY))), None)
    committed = 0
    with cancelling_commits(db, delays) as targets:
        for _ in range(runs):
            units: list[UnitOfWork] = []
            workflow = Workflow.new("cancelled-commit", {})

            task = asyncio.create_task(_cancelled_unit(db, units, workflow, explicit=explicit))
            targets.append(task)
            with pytest.raises(asyncio.CancelledError):
                await task
            (uow,) = units
            stored = await get_workflow(db, workflow.id) is not None
            # What the caller can see is what the database holds.
            assert stored == uow.committed
            committed += stored
    assert checked_out(db) == 0
    if db.dialect == "postgresql":
        sessions = await settle_sessions(url, lambda s: all(state == "idle" for _, state in s))
        assert [state for _, state in sessions if state != "idle"] == []
    # The database is usable as ever.
    async with db.session() as uow:
        await persist_workflow(uow)
    return committed


async def test_a_cancellation_during_the_commit_propagates_after_it_and_says_how_it_ended(
    db: Database, database_url: str
) -> None:
    committed = await _each_outcome_is_known(db, database_url, sized(40, 500), explicit=False)
    # Cancelled once the commit began, every commit completes before the
    # cancellation propagates.
    assert committed == sized(40, 500)


async def test_an_explicit_commit_that_is_cancelled_finishes_first_as_well(
    db: Database, database_url: str
) -> None:
    committed = await _each_outcome_is_known(db, database_url, sized(20, 200), explicit=True)
    assert committed == sized(20, 200)


async def test_a_timeout_during_the_commit_is_raised_after_the_commit(db: Database) -> None:
    workflow = Workflow.new("timed-out-commit", {})
    units: list[UnitOfWork] = []
    deadlines: list[asyncio.Timeout] = []
    loop = asyncio.get_running_loop()

    def expire(connection: Any) -> None:
        # The timeout fires at the next turn of the loop, with the commit under way.
        deadlines[-1].reschedule(loop.time())

    event.listen(db.engine.sync_engine, "commit", expire)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(None) as deadline:
                deadlines.append(deadline)
                await _unit(db, units, workflow)
                await asyncio.sleep(3600)
    finally:
        event.remove(db.engine.sync_engine, "commit", expire)
    (uow,) = units
    assert uow.committed
    assert await get_workflow(db, workflow.id) == workflow


async def test_a_unit_that_never_commits_says_so(db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.session() as uow:
            await persist_workflow(uow)
            raise Boom
    assert not uow.committed
    async with db.session() as uow:
        await persist_workflow(uow)
    assert uow.committed
